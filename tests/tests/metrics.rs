//! Metrics on both planes: after a few requests the data plane's `/metrics` (admin port)
//! and the control plane's (`TOLLGATE_METRICS_LISTEN`) show the series an operator
//! watches, and they move: the added-latency histogram, the slot gauges while a request
//! is held at the upstream, Admit decisions, charged records. Both texts pass
//! `promtool check metrics` (required in CI; skipped locally when promtool is missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};

fn body(stream: bool) -> Value {
    json!({"model": "gpt-5.1", "input": "hi", "stream": stream})
}

/// A loopback port free a moment ago (the control plane binds its metrics port itself).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = tollgate_tests::http_client().get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (r.text().await.unwrap(), ct)
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn value_or_zero(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or(0.0)
}

/// `promtool check metrics` on `text` (its lint included); CI installs promtool.
fn promtool_check(what: &str, text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (Debian package `prometheus`)"
        );
        eprintln!("promtool not installed: {what} not checked");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what}:\n{}{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_planes_export_metrics_that_move_with_requests() {
    let cp_metrics_addr = free_port();
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(move |c| c.metrics_listen = Some(cp_metrics_addr)),
        ..Default::default()
    })
    .await;
    let b = gw.basic().await;
    let cp_url = format!("http://{cp_metrics_addr}/metrics");
    let dp_url = format!("{}/metrics", gw.dp(0).admin_url());
    let account_in_use = format!(
        "tollgate_cp_account_slots_in_use{{account_id=\"{}\"}}",
        b.account
    );

    // A single control plane is the leader (of term 1) from the start.
    let (cp, _) = scrape(&cp_url, None).await;
    assert_eq!(value(&cp, "tollgate_cp_leader"), Some(1.0), "{cp}");
    assert_eq!(value(&cp, "tollgate_cp_leader_term"), Some(1.0), "{cp}");
    assert_eq!(
        value(&cp, "tollgate_cp_sessions_attached"),
        Some(1.0),
        "{cp}"
    );

    // A request held at the upstream holds a user slot, an account slot and a lease; a
    // second request of that user (limit 1) waits in the user's queue meanwhile.
    let single = gw.user(1, 10).await;
    let (_, single_key) = gw.key(single, Some(b.group)).await;
    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    let held = gw.spawn_post(0, &single_key, body(false));
    gw.up.wait_for_in_flight(1).await;
    let queued = gw.spawn_post(0, &single_key, body(false));
    eventually(
        "the second request waits for the user's slot",
        Duration::from_secs(5),
        || async {
            value(
                &scrape(&cp_url, None).await.0,
                "tollgate_cp_user_slot_waiters",
            ) == Some(1.0)
        },
    )
    .await;
    let (cp, _) = scrape(&cp_url, None).await;
    assert_eq!(value(&cp, &account_in_use), Some(1.0), "{cp}");
    assert_eq!(
        value(&cp, "tollgate_cp_user_slots_in_use"),
        Some(1.0),
        "{cp}"
    );
    assert_eq!(value(&cp, "tollgate_cp_leases_held"), Some(1.0), "{cp}");
    // Both bodies are held until an upstream answers them (a failover would resend).
    let (dp, _) = scrape(&dp_url, None).await;
    assert!(
        value_or_zero(&dp, "tollgate_dp_request_body_bytes_held") > 0.0,
        "{dp}"
    );
    gate.open();
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    eventually(
        "the account's slot is free again",
        Duration::from_secs(5),
        || async {
            let (cp, _) = scrape(&cp_url, None).await;
            value(&cp, &account_in_use) == Some(0.0)
                && value(&cp, "tollgate_cp_user_slot_waiters") == Some(0.0)
        },
    )
    .await;
    // The wait was measured as queueing, not as Admit work.
    let (cp, _) = scrape(&cp_url, None).await;
    assert!(
        value_or_zero(&cp, "tollgate_cp_admit_queued_seconds_sum") > 0.0,
        "{cp}"
    );

    // A few more: JSON and streamed answers, and one bad key.
    // A stream being relayed counts as open, until it ends.
    gw.up
        .push(Script::success().pause_after(1, Duration::from_secs(2)));
    let mut streaming = gw.post(0, &b.key, body(true)).await;
    assert_eq!(streaming.status(), 200);
    assert!(streaming.chunk().await.unwrap().is_some());
    let (dp, _) = scrape(&dp_url, None).await;
    assert_eq!(value(&dp, "tollgate_dp_streams_open"), Some(1.0), "{dp}");
    // Once the upstream has answered, an open stream holds no request body.
    assert_eq!(
        value(&dp, "tollgate_dp_request_body_bytes_held"),
        Some(0.0),
        "{dp}"
    );
    while streaming.chunk().await.unwrap().is_some() {}
    for stream in [false, false, true] {
        let r = gw.post(0, &b.key, body(stream)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = gw.post(0, "sk-not-a-key", body(false)).await;
    assert_eq!(r.status(), 401);

    let (dp, content_type) = scrape(&dp_url, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let answered =
        "tollgate_dp_http_requests_total{route=\"responses\",status=\"200\",code=\"none\"}";
    assert_eq!(value(&dp, answered), Some(6.0), "{dp}");
    assert_eq!(
        value(
            &dp,
            "tollgate_dp_http_requests_total{route=\"responses\",status=\"401\",code=\"invalid_api_key\"}"
        ),
        Some(1.0),
        "{dp}"
    );
    // Every answered request observed its added latency, its upstream latency and its
    // first byte; the added latency is below the request's whole time.
    for h in [
        "tollgate_dp_added_latency_seconds_count",
        "tollgate_dp_upstream_response_seconds_count",
        "tollgate_dp_upstream_first_byte_seconds_count",
    ] {
        assert_eq!(value(&dp, h), Some(6.0), "{h}\n{dp}");
    }
    let added = value(&dp, "tollgate_dp_added_latency_seconds_sum").unwrap();
    assert!(added > 0.0, "{dp}");
    eprintln!(
        "mean added latency {:.3} ms, mean upstream response {:.3} ms (debug build)",
        added / 6.0 * 1e3,
        value_or_zero(&dp, "tollgate_dp_upstream_response_seconds_sum") / 6.0 * 1e3
    );
    assert!(
        value_or_zero(&dp, "tollgate_dp_added_latency_seconds_bucket{le=\"+Inf\"}") == 6.0,
        "{dp}"
    );
    assert!(
        value_or_zero(&dp, "tollgate_dp_tokens_total{kind=\"input\"}") > 0.0,
        "{dp}"
    );
    assert!(
        value_or_zero(&dp, "tollgate_dp_tokens_total{kind=\"output\"}") > 0.0,
        "{dp}"
    );
    assert!(
        value_or_zero(&dp, "tollgate_dp_auth_cache_lookups_total{result=\"miss\"}") >= 1.0,
        "{dp}"
    );
    assert!(
        value_or_zero(&dp, "tollgate_dp_auth_cache_lookups_total{result=\"hit\"}") >= 4.0,
        "{dp}"
    );
    assert_eq!(value(&dp, "tollgate_dp_streams_open"), Some(0.0), "{dp}");

    // The control plane: six Admits granted, six records charged (at a cost).
    eventually("six records charged", Duration::from_secs(10), || async {
        let (cp, _) = scrape(&cp_url, None).await;
        value(&cp, "tollgate_cp_usage_records_total{outcome=\"charged\"}") == Some(6.0)
    })
    .await;
    let (cp, _) = scrape(&cp_url, None).await;
    assert_eq!(
        value(
            &cp,
            "tollgate_cp_admit_decisions_total{outcome=\"granted\"}"
        ),
        Some(6.0),
        "{cp}"
    );
    assert_eq!(
        value(&cp, "tollgate_cp_admit_latency_seconds_count"),
        Some(6.0),
        "{cp}"
    );
    assert_eq!(
        value(&cp, "tollgate_cp_charge_latency_seconds_count"),
        Some(6.0),
        "{cp}"
    );
    assert!(
        value_or_zero(&cp, "tollgate_cp_charged_cost_nano_usd_total") > 0.0,
        "{cp}"
    );
    assert_eq!(value(&cp, "tollgate_cp_leases_held"), Some(0.0), "{cp}");

    // OpenMetrics when asked for, as Prometheus does.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    for url in [&cp_url, &dp_url] {
        let (text, ct) = scrape(url, Some(accept)).await;
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    promtool_check("data plane's metrics", &dp);
    promtool_check("control plane's metrics", &cp);
}
