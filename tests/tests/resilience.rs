//! Leases survive what they must and no longer: a killed data plane's slots come back
//! within the grace period; a data plane that re-attaches with live streams keeps them
//! counted once; a draining data plane finishes its streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::cluster::IsolatedDataPlane;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};
use tollgate_tests::sse::parse_sse;

fn body(stream: bool) -> Value {
    json!({"model": "gpt-5.1", "input": "hi", "stream": stream})
}

#[tokio::test]
async fn killed_data_plane_frees_its_slots_within_the_grace() {
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;

    let doomed = IsolatedDataPlane::start(&gw.cp.url());
    eventually(
        "isolated data plane ready",
        Duration::from_secs(10),
        || async { doomed.admin_status("/readyz").await == 200 },
    )
    .await;
    let gate = Gate::new();
    gw.up.push(
        Script::success()
            .pause_after(2, Duration::from_secs(60))
            .hold(&gate),
    );
    gate.open();
    let mut stream = gw
        .http
        .post(format!("{}/v1/responses", doomed.proxy_url()))
        .bearer_auth(&key)
        .json(&body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let _ = stream.chunk().await.unwrap();

    // The user's only slot is held by the doomed data plane's live stream.
    let killed_at = Instant::now();
    doomed.kill();
    // Through the surviving data plane the next request waits for the slot, which comes
    // back once the session has been gone for the grace period (2 s in tests).
    let r = gw.post(0, &key, body(false)).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let waited = killed_at.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "slot freed within the grace (+ heartbeat detection), took {waited:?}"
    );
}

#[tokio::test]
async fn reattached_data_plane_keeps_live_leases_counted_once() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| c.user_wait_timeout_ms = 1_000),
        ..Default::default()
    })
    .await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;

    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    let http = gw.http.clone();
    let (url, k) = (gw.responses_url(0), key.clone());
    #[allow(clippy::disallowed_methods)]
    let live = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(k)
            .json(&body(true))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    gw.up.wait_for_in_flight(1).await;

    // The control plane restarts: its in-memory slots are gone; the data plane
    // re-attaches and declares the lease of its live stream.
    let Gateway {
        up,
        cp,
        dps,
        admin,
        http,
    } = gw;
    let cp = cp.restart().await;
    let gw = Gateway {
        up,
        cp,
        dps,
        admin,
        http,
    };
    eventually("re-attached", Duration::from_secs(10), || async {
        gw.dp(0).admin_status("/readyz").await == 200
    })
    .await;

    // The slot is still taken (counted once, not zero times).
    let r = gw.post(0, &key, body(false)).await;
    assert_eq!(r.status(), 429, "re-adopted lease still counts");

    gate.open();
    let text = live.await.unwrap();
    assert_eq!(
        parse_sse(&text).last().unwrap().name(),
        "response.completed"
    );
    // Released once: the slot is free again (not double-counted, or this would 429).
    eventually(
        "slot free after the stream",
        Duration::from_secs(5),
        || async { gw.post(0, &key, body(false)).await.status() == 200 },
    )
    .await;
}

#[tokio::test]
async fn draining_data_plane_finishes_open_streams() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.up.push(
        Script::success()
            .text(["a", "b", "c", "d"])
            .event_delay(Duration::from_millis(200)),
    );
    let mut r = gw.post(0, &b.key, body(true)).await;
    let first = r.chunk().await.unwrap().unwrap();
    let Gateway { dps, .. } = gw;
    let mut dps = dps;
    let dp = dps.remove(0);
    #[allow(clippy::disallowed_methods)]
    let stopping = tokio::spawn(dp.stop());
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(c) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert_eq!(
        parse_sse(&text).last().unwrap().name(),
        "response.completed",
        "not truncated by the drain"
    );
    stopping.await.unwrap();
}
