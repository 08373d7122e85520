//! A flood of large request bodies from one key cannot take a data plane past its memory
//! ceiling (issue 10, item 4): the data plane runs as its own process, its peak resident
//! memory (`VmHWM`) is read from `/proc`, and another user is served while the flood lasts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tollgate_tests::dp_process::DataPlaneProcess;
use tollgate_tests::fixture::{Gateway, Options};

const MIB: u64 = 1 << 20;
/// The whole body budget of the data plane under test.
const BUDGET: u64 = 64 * MIB;
/// Each byte of budget costs about three bytes of memory at peak (the received bytes,
/// the parsed JSON, the copy sent upstream; data-plane/README.md).
const CEILING_ABOVE_BASELINE: u64 = 3 * BUDGET;

// Several threads: the control plane, the fake upstream (which parses every body it
// gets) and the clients all live in this process and must not wait on one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_large_bodies_stays_under_the_memory_ceiling_and_others_are_served() {
    // Heartbeats at 1 s (the tests' usual 200 ms) on purpose: on a busy machine, this
    // test's gigabytes of loopback traffic must not look like a lost session.
    let gw = Gateway::start_with(Options {
        data_planes: 0,
        control_plane: Box::new(|c| {
            c.heartbeat_interval_ms = 1_000;
            c.lease_grace_ms = 10_000;
        }),
        ..Options::default()
    })
    .await;
    let dp = DataPlaneProcess::start(
        env!("CARGO_BIN_EXE_tollgate-data-plane-under-test"),
        &gw.cp.url(),
        &[
            ("TOLLGATE_BODY_LIMIT_BYTES", (16 * MIB).to_string()),
            ("TOLLGATE_BODY_BUDGET_PER_KEY_BYTES", (16 * MIB).to_string()),
            ("TOLLGATE_BODY_BUDGET_BYTES", BUDGET.to_string()),
            ("TOLLGATE_BODY_BUDGET_WAIT_MS", "3000".into()),
        ],
    )
    .await;
    let group = gw.group("1").await;
    gw.api_key_account("sk-up", group, 1, 100).await;
    let flooder = gw.user(50, 1_000).await;
    let (_, flood_key) = gw.key(flooder, Some(group)).await;
    let other = gw.user(5, 10).await;
    let (_, other_key) = gw.key(other, Some(group)).await;
    let url = format!("{}/v1/responses", dp.proxy_url());
    let http = tollgate_tests::http_client();
    let small = |key: &str| {
        http.post(&url)
            .bearer_auth(key)
            .json(&json!({"model": "gpt-5.1", "input": "hi"}))
            .send()
    };
    // Warm: the baseline includes a served request's allocations.
    assert_eq!(small(&other_key).await.unwrap().status(), 200);
    let baseline = dp.peak_rss();

    // 24 bodies of 15 MiB at once from one key (without the budget: ~1.3 GB held).
    let big = Bytes::from(
        json!({"model": "gpt-5.1", "input": "x".repeat(15 << 20)})
            .to_string()
            .into_bytes(),
    );
    let flood = futures::future::join_all((0..24).map(|_| {
        http.post(&url)
            .bearer_auth(&flood_key)
            .header("content-type", "application/json")
            .body(big.clone())
            .timeout(Duration::from_secs(120))
            .send()
    }));
    let others = async {
        // The other user, one request after another while the flood lasts.
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let r = small(&other_key).await.unwrap();
            let status = r.status().as_u16();
            if status != 200 {
                eprintln!("other user: {status} {:?}", r.text().await);
            }
            statuses.push(status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        statuses
    };
    let (flood, others) = tokio::join!(flood, others);

    let mut served = 0;
    let mut refused = 0;
    for r in flood {
        match r {
            Ok(r) if r.status() == 200 => served += 1,
            Ok(r) => {
                assert_eq!(r.status(), 429, "a flood request: {:?}", r.text().await);
                refused += 1;
            }
            // Refused before its body was read: the client may see the connection close
            // while it is still sending.
            Err(_) => refused += 1,
        }
    }
    assert!(
        served >= 1,
        "the flooder's own bodies are served one at a time"
    );
    assert_eq!(served + refused, 24);
    assert_eq!(others, vec![200; 10], "the other user is served meanwhile");

    let peak = dp.peak_rss();
    eprintln!(
        "body flood: baseline {} MiB, peak {} MiB, ceiling {} MiB; {served} served, {refused} refused",
        baseline / MIB,
        peak / MIB,
        (baseline + CEILING_ABOVE_BASELINE) / MIB
    );
    assert!(
        peak <= baseline + CEILING_ABOVE_BASELINE,
        "peak {} MiB over the ceiling {} MiB",
        peak / MIB,
        (baseline + CEILING_ABOVE_BASELINE) / MIB
    );
}
