//! How the data plane reads request bodies: compressed bodies (gzip, deflate, zstd) are
//! decoded with the limit on the decoded size, unknown encodings get 415, a declared
//! length over the limit is refused before the body is sent, and the request-body budget
//! makes a key's excess wait and then refuses it (429 / 503 with Retry-After) while other
//! keys are served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_compression::tokio::bufread::{GzipEncoder, ZlibEncoder, ZstdEncoder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};
use tollgate_tests::stage::{KEY, Stage};

async fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn zlib(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZlibEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn zstd(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZstdEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn post_encoded(s: &Stage, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/v1/responses", s.dp.proxy_url()))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn compressed_bodies_are_decoded() {
    let s = Stage::start().await;
    let request = json!({"model": "gpt-5.1", "input": "a compressed hello"}).to_string();
    let cases = [
        ("gzip", gzip(request.as_bytes()).await),
        ("zstd", zstd(request.as_bytes()).await),
        ("deflate", zlib(request.as_bytes()).await),
    ];
    for (i, (encoding, body)) in cases.into_iter().enumerate() {
        let (status, v) = post_encoded(&s, encoding, body).await;
        assert_eq!(status, 200, "{encoding}: {v}");
        assert_eq!(v["status"], "completed");
        // The upstream gets the decoded JSON, not the client's encoding.
        let got = s.up.received();
        assert_eq!(got.len(), i + 1);
        assert_eq!(
            got[i].body_json["input"], "a compressed hello",
            "{encoding}"
        );
        assert!(got[i].header("content-encoding").is_none());
    }
}

#[tokio::test]
async fn a_compressed_body_past_the_limit_is_refused_when_decoded_to_the_limit() {
    let s = Stage::start_with(|c| c.flow.body_limit_bytes = 1 << 20).await;
    // 16 MiB of JSON that compresses to a few KiB: a small zip bomb.
    let bomb = format!(
        r#"{{"model":"gpt-5.1","input":"{}"}}"#,
        "a".repeat(16 << 20)
    );
    for (encoding, body) in [
        ("gzip", gzip(bomb.as_bytes()).await),
        ("zstd", zstd(bomb.as_bytes()).await),
    ] {
        assert!(body.len() < 1 << 20, "the wire bytes are under the limit");
        let (status, v) = post_encoded(&s, encoding, body).await;
        assert_eq!(status, 413, "{encoding}: {v}");
        assert_eq!(
            v["error"]["message"],
            "Request body too large, limit is 1MB (decoded)"
        );
    }
    assert_eq!(s.up.count(), 0);
    // Just under the limit once decoded is fine.
    let fits = format!(
        r#"{{"model":"gpt-5.1","input":"{}"}}"#,
        "a".repeat((1 << 20) - 100)
    );
    let (status, v) = post_encoded(&s, "gzip", gzip(fits.as_bytes()).await).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn unsupported_or_broken_encodings_are_refused_clearly() {
    let s = Stage::start().await;
    let request = json!({"model": "gpt-5.1", "input": "hi"}).to_string();
    let (status, v) = post_encoded(&s, "br", request.clone().into_bytes()).await;
    assert_eq!(status, 415, "{v}");
    assert_eq!(v["error"]["code"], "unsupported_content_encoding");
    assert_eq!(
        v["error"]["message"],
        "Unsupported Content-Encoding \"br\": send the body uncompressed or with one of gzip, deflate, zstd"
    );
    // Labelled gzip, but not gzip.
    let (status, v) = post_encoded(&s, "gzip", request.into_bytes()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "Failed to decode the gzip request body (Content-Encoding: gzip)"
    );
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let s = Stage::start_with(|c| c.flow.body_limit_bytes = 1 << 20).await;
    let mut conn = tokio::net::TcpStream::connect(s.dp.proxy_addr)
        .await
        .unwrap();
    // The head only: the body never comes.
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        200 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("Request body too large, limit is 1MB"),
        "{answer}"
    );
}

/// Body limit 1 MiB, each key's share 1 MiB, 2 MiB in all, half a second's wait.
fn small_budget(c: &mut tollgate_data_plane::Config) {
    c.flow.body_limit_bytes = 1 << 20;
    c.flow.body_budget_per_key_bytes = 1 << 20;
    c.flow.body_budget_bytes = 2 << 20;
    c.flow.body_budget_wait_ms = 500;
}

fn big_body() -> Value {
    json!({"model": "gpt-5.1", "input": "b".repeat(900 << 10)})
}

#[tokio::test]
async fn the_body_budget_refuses_a_keys_excess_and_serves_other_keys() {
    let gw = Gateway::start_with(Options {
        data_plane: small_budget,
        ..Options::default()
    })
    .await;
    let group = gw.group("1").await;
    gw.api_key_account("sk-up", group, 1, 20).await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let user = gw.user(5, 10).await;
        keys.push(gw.key(user, Some(group)).await.1);
    }
    // Two large bodies held at the upstream (no head yet): their charges stay.
    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    gw.up.push(Script::success().hold(&gate));
    let first = gw.spawn_post(0, &keys[0], big_body());
    gate.wait_for_waiting(1).await;
    let second = gw.spawn_post(0, &keys[1], big_body());
    gate.wait_for_waiting(2).await;

    // The first key's share is taken: its next large body waits, then gets 429.
    let r = gw.post(0, &keys[0], big_body()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "Too many large request bodies in flight for this API key, please retry later"
    );
    // Another user's ordinary request is served meanwhile.
    let r = gw
        .post(0, &keys[2], json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 200);
    // The whole budget is nearly taken: that user's large body gets 503.
    let r = gw.post(0, &keys[2], big_body()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "The gateway is receiving too many large request bodies, please retry later"
    );
    gate.open();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    // Once the upstream has answered, the bodies' charges are given back.
    let r = gw.post(0, &keys[0], big_body()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        gw.up.count(),
        4,
        "the refused bodies never reached the upstream"
    );
}
