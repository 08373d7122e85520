//! The fake upstream looks right on the wire: what a gateway talking to it would see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_tests::fake_upstream::{
    FakeUpstream, Gate, OAuthScript, Script, SseEvent, Usage, decode_jwt_payload, parse_sse,
    refused_url,
};

const FULL_SEQUENCE: [&str; 12] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(url: &str, bearer: &str, body: Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn kinds(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.clone().unwrap()).collect()
}

/// Reads a streaming body to its end; `Err` carries what arrived before a transport error.
async fn read_stream(resp: reqwest::Response) -> Result<String, String> {
    let mut s = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(b) => buf.extend_from_slice(&b),
            Err(_) => return Err(String::from_utf8(buf).unwrap()),
        }
    }
    Ok(String::from_utf8(buf).unwrap())
}

#[tokio::test]
async fn non_streaming_success_is_a_full_response_object() {
    let up = FakeUpstream::start().await;
    let r = client()
        .post(up.responses_url())
        .bearer_auth("sk-test-a")
        .header("X-Custom-Thing", "v1")
        .query(&[("q", "1")])
        .json(&json!({"model": "gpt-4.1", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(request_id.starts_with("req_"));
    let body: Value = r.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-4.1");
    assert!(body["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(body["output"][0]["role"], "assistant");
    assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello, world!");
    assert_eq!(
        body["usage"],
        json!({
            "input_tokens": 100, "input_tokens_details": {"cached_tokens": 20},
            "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 10},
            "total_tokens": 150,
        })
    );

    assert_eq!(up.count(), 1);
    let rec = up.last().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/responses");
    assert_eq!(rec.query.as_deref(), Some("q=1"));
    assert_eq!(rec.bearer.as_deref(), Some("sk-test-a"));
    assert_eq!(rec.header("x-custom-thing"), Some("v1"));
    assert!(rec.header_names().contains(&"authorization".to_string()));
    assert_eq!(rec.body_json["model"], "gpt-4.1");
    assert_eq!(rec.model(), Some("gpt-4.1"));
    assert!(!rec.is_codex());
    assert_eq!(rec.request_id, request_id);
    assert_eq!(up.in_flight(), 0);
    assert_eq!(up.max_in_flight(), 1);
}

#[tokio::test]
async fn streaming_success_is_the_real_event_sequence() {
    let up = FakeUpstream::start().await;
    up.push(
        Script::success()
            .text(["Hel", "lo", " the", "re"])
            .usage(Usage::new(7, 1, 3, 2))
            .model("gpt-4.1-2025-04-14"),
    );
    let r = post(
        &up.responses_url(),
        "sk-x",
        json!({"model": "gpt-4.1", "stream": true, "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert!(r.headers().contains_key("x-request-id"));
    let text = read_stream(r).await.unwrap();
    // Every block is `event: <type>\ndata: <json>\n\n`.
    for block in text.split_terminator("\n\n") {
        let mut lines = block.lines();
        let ev = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], ev);
        assert!(lines.next().is_none());
    }
    let events = parse_sse(&text);
    assert_eq!(kinds(&events), FULL_SEQUENCE);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.json()["sequence_number"], i);
        assert_eq!(e.kind().unwrap(), e.json()["type"].as_str().unwrap());
    }
    let deltas: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, "Hello there");
    assert_eq!(events[8].json()["text"], "Hello there");
    let created = events[0].json();
    assert_eq!(created["response"]["status"], "in_progress");
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["model"], "gpt-4.1-2025-04-14");
    assert_eq!(done["response"]["id"], created["response"]["id"]);
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "Hello there"
    );
    let usage = &done["response"]["usage"];
    assert_eq!(usage["input_tokens"], 7);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 1);
    assert_eq!(usage["output_tokens"], 3);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 2);
    assert_eq!(usage["total_tokens"], 10);
}

#[tokio::test]
async fn codex_path_always_streams_and_can_end_with_response_done() {
    let up = FakeUpstream::start().await;
    up.push(Script::success().final_event_done());
    let r = client()
        .post(up.codex_url())
        .bearer_auth("oauth-at-1")
        .header("chatgpt-account-id", "acct-1")
        .json(&json!({"model": "gpt-5.1-codex", "input": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&read_stream(r).await.unwrap());
    assert_eq!(events.last().unwrap().kind().unwrap(), "response.done");
    assert_eq!(
        events.last().unwrap().json()["response"]["usage"]["total_tokens"],
        150
    );
    let rec = up.last().unwrap();
    assert!(rec.is_codex() && rec.answered_as_stream() && !rec.stream_requested());
    assert_eq!(rec.header("chatgpt-account-id"), Some("acct-1"));
}

#[tokio::test]
async fn events_are_flushed_one_by_one_with_the_event_delay() {
    let up = FakeUpstream::start().await;
    up.push(Script::success().event_delay(Duration::from_millis(80)));
    let start = Instant::now();
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    let mut s = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut buf = String::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.unwrap();
        arrivals.push((start.elapsed(), String::from_utf8(chunk.to_vec()).unwrap()));
        buf.push_str(&arrivals.last().unwrap().1);
    }
    // 12 events, 11 gaps of 80 ms: the first event arrives long before the last.
    assert_eq!(parse_sse(&buf).len(), 12);
    assert!(arrivals.len() >= 10, "events were not flushed separately");
    let first = arrivals.first().unwrap();
    assert!(first.1.starts_with("event: response.created\n"));
    let spread = arrivals.last().unwrap().0 - first.0;
    assert!(spread >= Duration::from_millis(700), "{spread:?}");
}

#[tokio::test]
async fn error_statuses_have_openai_bodies() {
    let up = FakeUpstream::start().await;
    let statuses = [400, 401, 402, 403, 404, 422, 429, 500, 502, 503, 504, 529];
    for s in statuses {
        up.push(Script::error(s));
    }
    for s in statuses {
        let r = post(
            &up.responses_url(),
            "k",
            json!({"model": "gpt-x", "stream": true}),
        )
        .await;
        assert_eq!(r.status().as_u16(), s);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(r.headers().contains_key("x-request-id"));
        assert!(!r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        let err = &body["error"];
        assert!(!err["message"].as_str().unwrap().is_empty(), "{s}: {body}");
        assert!(!err["type"].as_str().unwrap().is_empty(), "{s}: {body}");
        assert!(err.get("code").is_some(), "{s}: {body}");
        if s == 404 {
            assert!(err["message"].as_str().unwrap().contains("`gpt-x`"));
        }
    }
    // A configurable validation message, and the disabled-organization 400.
    up.push(Script::bad_request("Invalid value for 'input': bad.").code("invalid_value"));
    up.push(Script::organization_disabled());
    let r = post(&up.responses_url(), "k", json!({"model": "m"})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid value for 'input': bad.");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_value");
    let r = post(&up.responses_url(), "k", json!({"model": "m"})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("organization has been disabled")
    );
}

#[tokio::test]
async fn rate_limits_carry_retry_after_codex_headers_and_reset_fields() {
    let up = FakeUpstream::start().await;
    up.push(
        Script::rate_limited()
            .retry_after(42)
            .codex_primary(100.0, 1200, 300)
            .codex_secondary(37.5, 86_400, 10_080)
            .header("X-Extra", "yes"),
    );
    up.push(Script::usage_limit_reached(3600));
    let r = post(&up.codex_url(), "at", json!({"model": "m"})).await;
    assert_eq!(r.status(), 429);
    let h = r.headers();
    assert_eq!(h["retry-after"], "42");
    assert_eq!(h["x-codex-primary-used-percent"], "100");
    assert_eq!(h["x-codex-primary-reset-after-seconds"], "1200");
    assert_eq!(h["x-codex-primary-window-minutes"], "300");
    assert_eq!(h["x-codex-secondary-used-percent"], "37.5");
    assert_eq!(h["x-codex-secondary-reset-after-seconds"], "86400");
    assert_eq!(h["x-codex-secondary-window-minutes"], "10080");
    assert_eq!(h["x-extra"], "yes");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let r = post(&up.codex_url(), "at", json!({"model": "m"})).await;
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    assert_eq!(body["error"]["resets_in_seconds"], 3600);
    let resets_at = body["error"]["resets_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(resets_at >= now + 3590 && resets_at <= now + 3610);
}

#[tokio::test]
async fn success_can_carry_codex_usage_snapshot_headers() {
    let up = FakeUpstream::start().await;
    up.push(
        Script::success()
            .codex_primary(12.0, 3000, 300)
            .codex_secondary(3.0, 500_000, 10_080),
    );
    let r = post(&up.codex_url(), "at", json!({"model": "m"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-codex-primary-used-percent"], "12");
    assert_eq!(r.headers()["x-codex-secondary-window-minutes"], "10080");
    assert_eq!(parse_sse(&read_stream(r).await.unwrap()).len(), 12);
}

#[tokio::test]
async fn scripts_are_selected_per_credential() {
    let up = FakeUpstream::start().await;
    up.push_for("sk-a", Script::error(500));
    up.set_default_for("sk-c", Script::error(401));
    up.push(Script::error(503));
    assert_eq!(up.scripts_left(), 2);
    let url = up.responses_url();
    let m = json!({"model": "m"});
    // A's own queue, then B takes the shared queue, then everything falls to success.
    assert_eq!(post(&url, "sk-a", m.clone()).await.status(), 500);
    assert_eq!(post(&url, "sk-b", m.clone()).await.status(), 503);
    assert_eq!(post(&url, "sk-a", m.clone()).await.status(), 200);
    assert_eq!(post(&url, "sk-b", m.clone()).await.status(), 200);
    assert_eq!(post(&url, "sk-c", m.clone()).await.status(), 401);
    assert_eq!(post(&url, "sk-c", m.clone()).await.status(), 401);
    assert_eq!(up.scripts_left(), 0);
    assert_eq!(up.count(), 6);
    assert_eq!(up.count_for("sk-a"), 2);
    assert_eq!(up.received_for("sk-c").len(), 2);
    up.set_default(Script::error(502));
    assert_eq!(post(&url, "sk-z", m.clone()).await.status(), 502);
    up.clear_scripts();
    assert_eq!(post(&url, "sk-c", m).await.status(), 200);
}

#[tokio::test]
async fn refused_url_gives_a_connect_error() {
    let url = refused_url().await;
    let err = client()
        .post(format!("{url}/v1/responses"))
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn close_before_response_sends_no_byte() {
    let up = FakeUpstream::start().await;
    up.push(Script::close_before_response());
    let err = client()
        .post(up.responses_url())
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_connect() && err.status().is_none(), "{err:?}");
    assert_eq!(up.count(), 1);
    // The next request is served normally on a new connection.
    assert_eq!(
        post(&up.responses_url(), "k", json!({"model": "m"}))
            .await
            .status(),
        200
    );
    up.wait_for_in_flight(0).await;
}

#[tokio::test]
async fn cut_stream_drops_the_connection_without_completed() {
    let up = FakeUpstream::start().await;
    up.push(Script::cut_stream(5));
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let partial = read_stream(r).await.unwrap_err();
    let events = parse_sse(&partial);
    assert_eq!(kinds(&events), FULL_SEQUENCE[..5]);
    assert!(!partial.contains("response.completed"));

    // Non-streaming: half the JSON body, then the drop.
    up.push(Script::cut_stream(0));
    let r = post(&up.responses_url(), "k", json!({"model": "m"})).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());
    up.wait_for_in_flight(0).await;
}

#[tokio::test]
async fn silent_stream_pauses_then_carries_on() {
    let up = FakeUpstream::start().await;
    up.push(Script::silent_stream(1, Duration::from_millis(700)));
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    let mut s = r.bytes_stream();
    let first = String::from_utf8(s.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert_eq!(kinds(&parse_sse(&first)), ["response.created"]);
    // Nothing for a while: an idle timer would fire here.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), s.next())
            .await
            .is_err()
    );
    let mut rest = String::new();
    while let Some(c) = s.next().await {
        rest.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert_eq!(parse_sse(&rest).len(), 11);
    assert_eq!(up.in_flight(), 0);

    // Dropping the client during the silence ends the request upstream too.
    up.push(Script::silent_stream(1, Duration::from_secs(3600)));
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    assert_eq!(up.in_flight(), 1);
    drop(s);
    up.wait_for_in_flight(0).await;
}

#[tokio::test]
async fn long_line_is_exactly_the_configured_size() {
    let up = FakeUpstream::start().await;
    let size = 2 * 1024 * 1024;
    up.push(Script::long_line(size));
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    let text = read_stream(r).await.unwrap();
    let lens: Vec<usize> = text.lines().map(str::len).filter(|l| *l > 10_000).collect();
    assert_eq!(lens, [size]);
    let events = parse_sse(&text);
    assert_eq!(events.len(), 13);
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("response.completed")
    );

    up.push(Script::long_line(100_000));
    let r = post(&up.responses_url(), "k", json!({"model": "m"})).await;
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
}

#[tokio::test]
async fn streams_without_usage() {
    let up = FakeUpstream::start().await;
    up.push(Script::no_usage());
    up.push(Script::stop_after_deltas());
    up.push(Script::no_usage());
    let url = up.responses_url();
    let stream = json!({"model": "m", "stream": true});

    let events = parse_sse(
        &read_stream(post(&url, "k", stream.clone()).await)
            .await
            .unwrap(),
    );
    assert_eq!(kinds(&events), FULL_SEQUENCE);
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["status"], "completed");
    assert!(done["response"].get("usage").is_none());

    // Ends cleanly (no transport error) right after the deltas.
    let events = parse_sse(&read_stream(post(&url, "k", stream).await).await.unwrap());
    assert_eq!(kinds(&events), FULL_SEQUENCE[..8]);

    let body: Value = post(&url, "k", json!({"model": "m"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "completed");
    assert!(body.get("usage").is_none());
}

#[tokio::test]
async fn failures_mid_stream() {
    let up = FakeUpstream::start().await;
    up.push(Script::response_failed().message("model crashed"));
    up.push(Script::error_event().code("server_error").message("boom"));
    let url = up.responses_url();
    let stream = json!({"model": "m", "stream": true});

    let events = parse_sse(
        &read_stream(post(&url, "k", stream.clone()).await)
            .await
            .unwrap(),
    );
    let mut expected = FULL_SEQUENCE[..8].to_vec();
    expected.push("response.failed");
    assert_eq!(kinds(&events), expected);
    let failed = events.last().unwrap().json();
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["message"], "model crashed");

    let events = parse_sse(&read_stream(post(&url, "k", stream).await).await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let data = last.json();
    assert_eq!(data["type"], "error");
    assert_eq!(data["code"], "server_error");
    assert_eq!(data["message"], "boom");
    assert_eq!(data["sequence_number"], 8);
}

#[tokio::test]
async fn hold_gate_keeps_requests_in_flight() {
    let up = FakeUpstream::start().await;
    let gate = Gate::new();
    up.push_n(Script::success().hold(&gate), 5);
    let url = up.responses_url();
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let url = url.clone();
            async move {
                post(
                    &url,
                    &format!("k{i}"),
                    json!({"model": "m", "stream": i % 2 == 0}),
                )
                .await
                .text()
                .await
                .unwrap()
            }
        })
        .collect();
    let all = futures::future::join_all(requests);
    let check = async {
        gate.wait_for_waiting(5).await;
        assert_eq!(up.count(), 5, "held requests are already recorded");
        assert_eq!(up.in_flight(), 5);
        assert_eq!(up.max_in_flight(), 5);
        gate.release(2);
        up.wait_for_in_flight(3).await;
        assert_eq!(gate.waiting(), 3);
        gate.open();
    };
    let (bodies, ()) = tokio::join!(all, check);
    assert_eq!(bodies.len(), 5);
    assert!(bodies.iter().all(|b| b.contains("Hello")));
    assert_eq!(up.in_flight(), 0);
    assert_eq!(up.max_in_flight(), 5);
    up.reset_max_in_flight();
    assert_eq!(up.max_in_flight(), 0);
}

#[tokio::test]
async fn oauth_endpoint_issues_tokens_and_counts_calls() {
    let up = FakeUpstream::start().await;
    // Codex CLI refreshes with a JSON body; the authorization-code exchange is a form.
    let r = client()
        .post(up.oauth_token_url())
        .json(&json!({
            "client_id": "app_x", "grant_type": "refresh_token",
            "refresh_token": "rt-old", "scope": "openid profile email",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tok: Value = r.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    assert!(
        tok["access_token"]
            .as_str()
            .unwrap()
            .starts_with("fake-at-")
    );
    assert!(
        tok["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("fake-rt-")
    );
    let claims = decode_jwt_payload(tok["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["email"], "user@example.com");
    let auth = &claims["https://api.openai.com/auth"];
    assert_eq!(auth["chatgpt_account_id"], "acct-fake-0001");
    assert_eq!(auth["chatgpt_plan_type"], "plus");

    up.push_oauth(
        OAuthScript::grant()
            .email("a@b.c")
            .account_id("acct-9")
            .plan_type("pro")
            .access_token("at-9")
            .expires_in(60),
    );
    up.push_oauth(OAuthScript::invalid_grant());
    up.push_oauth(OAuthScript::server_error());
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "c-1"),
        ("code_verifier", "v"),
        ("redirect_uri", "http://localhost:1455/auth/callback"),
    ];
    let r = client()
        .post(up.oauth_token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let tok: Value = r.json().await.unwrap();
    assert_eq!(tok["access_token"], "at-9");
    assert_eq!(tok["expires_in"], 60);
    let claims = decode_jwt_payload(tok["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["email"], "a@b.c");
    assert_eq!(
        claims["https://api.openai.com/auth"]["chatgpt_account_id"],
        "acct-9"
    );
    assert_eq!(
        claims["https://api.openai.com/auth"]["chatgpt_plan_type"],
        "pro"
    );
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", "rt")];
    let r = client()
        .post(up.oauth_token_url())
        .form(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = client()
        .post(up.oauth_token_url())
        .form(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);

    assert_eq!(up.oauth_count(), 4);
    let calls = up.oauth_calls();
    assert_eq!(calls[0].grant_type(), Some("refresh_token"));
    assert_eq!(calls[0].param("refresh_token"), Some("rt-old"));
    assert_eq!(calls[1].grant_type(), Some("authorization_code"));
    assert_eq!(calls[1].param("code"), Some("c-1"));
    assert_eq!(calls[1].issued_access_token(), Some("at-9"));
    assert_eq!(calls[2].status, 400);
    assert_eq!(calls[3].status, 500);
    // Token calls are not Responses requests.
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn oauth_delay_lets_concurrent_calls_overlap() {
    let up = FakeUpstream::start().await;
    up.set_oauth_default(OAuthScript::grant().delay(Duration::from_millis(300)));
    let url = up.oauth_token_url();
    let call = || async {
        client()
            .post(&url)
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt")])
            .send()
            .await
            .unwrap()
            .status()
    };
    let watch = async {
        tollgate_tests::eventually("3 calls arrived", Duration::from_secs(5), || async {
            up.oauth_count() == 3
        })
        .await;
        // Arrived but not yet answered.
        assert!(up.oauth_calls().is_empty());
    };
    let (a, b, c, ()) = tokio::join!(call(), call(), call(), watch);
    assert!(a == 200 && b == 200 && c == 200);
    assert_eq!(up.oauth_calls().len(), 3);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let up = FakeUpstream::start().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(up.responses_url())
        .json(&json!({"model": "m", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(parse_sse(&read_stream(r).await.unwrap()).len(), 12);
    assert_eq!(up.last().unwrap().version, http::Version::HTTP_2);
}

#[tokio::test]
async fn raw_script_unknown_paths_and_shutdown() {
    let up = FakeUpstream::start().await;
    up.push(Script::raw(
        200,
        "text/event-stream",
        [": ping\n\n", "data: not json\n\n"],
    ));
    let r = post(
        &up.responses_url(),
        "k",
        json!({"model": "m", "stream": true}),
    )
    .await;
    assert_eq!(r.text().await.unwrap(), ": ping\n\ndata: not json\n\n");

    let r = client()
        .get(format!("{}/v1/models", up.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid URL (GET /v1/models)");
    assert_eq!(up.other_received().len(), 1);
    assert_eq!(up.count(), 1);

    // Held requests do not keep shutdown waiting; afterwards the port refuses.
    let gate = Gate::new();
    up.push(Script::success().hold(&gate));
    let url = up.responses_url();
    let pending = async {
        client()
            .post(&url)
            .json(&json!({"model": "m"}))
            .send()
            .await
    };
    let stop = async {
        gate.wait_for_waiting(1).await;
        up.shutdown().await;
    };
    let (res, ()) = tokio::join!(pending, stop);
    assert!(res.is_err());
    let err = client().post(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

/// As OpenAI: a response id belongs to the credential that created it; another
/// credential continuing or retrieving it gets 404, the owner does not.
#[tokio::test]
async fn response_ids_belong_to_the_credential_that_created_them() {
    let up = FakeUpstream::start().await;
    let r = post(
        &up.responses_url(),
        "sk-a",
        json!({"model": "m", "input": "hi"}),
    )
    .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chained = json!({"model": "m", "input": "more", "previous_response_id": id});
    let r = post(&up.responses_url(), "sk-b", chained.clone()).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "previous_response_not_found");
    assert_eq!(
        post(&up.responses_url(), "sk-a", chained).await.status(),
        200
    );

    let url = format!("{}/v1/responses/{id}", up.base_url());
    let get = |bearer: &'static str| client().get(&url).bearer_auth(bearer).send();
    assert_eq!(get("sk-b").await.unwrap().status(), 404);
    let r = get("sk-a").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], json!(id));
    assert_eq!(up.operations().len(), 2);
}

#[tokio::test]
async fn tool_calls_come_as_function_call_items_and_events() {
    let up = FakeUpstream::start().await;
    let script = Script::success()
        .text([] as [&str; 0])
        .tool_call("weather", r#"{"city":"Paris"}"#)
        .tool_call("time", "{}");
    up.push(script.clone());
    up.push(script);
    let body = json!({"model": "gpt-5.1", "input": "hi"});
    let json_answer: Value = post(&up.responses_url(), "sk-x", body.clone())
        .await
        .json()
        .await
        .unwrap();
    let output = json_answer["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "only the calls: {json_answer}");
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "weather");
    assert_eq!(output[0]["arguments"], r#"{"city":"Paris"}"#);
    assert!(output[0]["call_id"].as_str().unwrap().starts_with("call_"));
    assert_ne!(output[0]["call_id"], output[1]["call_id"]);

    let mut streaming = body;
    streaming["stream"] = true.into();
    let text = read_stream(post(&up.responses_url(), "sk-x", streaming).await)
        .await
        .unwrap();
    let events = parse_sse(&text);
    let call = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ];
    let mut expected = vec!["response.created", "response.in_progress"];
    expected.extend(call);
    expected.extend(call);
    expected.push("response.completed");
    assert_eq!(kinds(&events), expected);
    assert_eq!(events[3].json()["output_index"], 0);
    assert_eq!(events[3].json()["delta"], r#"{"city":"Paris"}"#);
    assert_eq!(events[6].json()["output_index"], 1);
    assert_eq!(events[6].json()["item"]["name"], "time");
    let done = events.last().unwrap().json();
    assert_eq!(done["response"]["output"][1]["type"], "function_call");
}
