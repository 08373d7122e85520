//! The request id in the logs: the data plane runs in this process at `info`, every log
//! line is captured, and the lines a request writes — the upstream's final 4xx passed
//! through, a 429 that ran out of accounts — carry the gateway's request id and the
//! client's own id. The upstream's id is logged with them.
//!
//! One test per binary: the capturing subscriber is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Mutex;

use serde_json::json;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::Gateway;

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lines_with(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&LOG.lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_log_lines_carry_its_ids_and_final_upstream_4xx_are_logged() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(|| Capture)
        .init();
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;

    let send = |client_id: &'static str| {
        gw.http
            .post(gw.responses_url(0))
            .bearer_auth(&b.key)
            .header("x-request-id", client_id)
            .json(&json!({"model": "gpt-5.1", "input": "hi"}))
            .send()
    };

    gw.up
        .push(Script::error(400).header("x-request-id", "req_up_400"));
    let r = send("client-log-400").await.unwrap();
    assert_eq!(r.status(), 400);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();

    // The only account answers 429: no account left, the client gets the 429.
    gw.up
        .push(Script::error(429).header("x-request-id", "req_up_429"));
    let r = send("client-log-429").await.unwrap();
    assert_eq!(r.status(), 429);
    let id_429 = r.headers()["x-request-id"].to_str().unwrap().to_owned();

    for (upstream_id, gateway_id, client_id, message) in [
        (
            "req_up_400",
            &id,
            "client-log-400",
            "upstream refused the request",
        ),
        (
            "req_up_429",
            &id_429,
            "client-log-429",
            "no account left to fail over to",
        ),
    ] {
        let lines = lines_with(upstream_id);
        assert!(
            lines.iter().any(|l| l.contains(message)),
            "no {message:?} line for {upstream_id}: {lines:#?}"
        );
        for l in &lines {
            assert!(l.contains(gateway_id.as_str()), "{l}");
            assert!(l.contains(client_id), "{l}");
        }
    }
    // Every line naming the request id belongs to that request only.
    assert!(
        lines_with(&id)
            .iter()
            .all(|l| !l.contains("client-log-429"))
    );
}
