//! SIGTERM to a data-plane process during 20 open streams: streams that finish within
//! the drain budget arrive whole, the ones still open at the cut end with an SSE `error`
//! event, every usage record reaches the control plane, and the process exits within the
//! budget (issue 11 item 4; the steps: `shared/src/drain.rs`, `data-plane/src/lib.rs`).
//! Also the control plane's drain: NOT_SERVING first, calls dropped at the cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::dp_process::DataPlaneProcess;
use tollgate_tests::fake_control_plane::FakeControlPlane;
use tollgate_tests::fake_upstream::{FakeUpstream, Script, Usage};
use tollgate_tests::sse::parse_sse;
use tollgate_tests::stage::KEY;

/// The drain budget given to the process (`TOLLGATE_DRAIN_TIMEOUT_SECS`); the cut comes at
/// four fifths of it.
const BUDGET: Duration = Duration::from_secs(5);
const FAST: usize = 10;
const SLOW: usize = 10;
/// Non-streaming requests still waiting for the upstream's answer at the cut.
const WAITING: usize = 2;
const FAST_TEXT: [&str; 4] = ["Hello", ", ", "world", "!"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn status(url: &str) -> u16 {
    match tollgate_tests::http_client().get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_twenty_streams_finishes_or_ends_each_and_loses_no_usage() {
    let up = FakeUpstream::start().await;
    let cp = FakeControlPlane::start(&up.responses_url()).await;
    let mut dp = DataPlaneProcess::start(
        env!("CARGO_BIN_EXE_tollgate-data-plane-under-test"),
        &cp.url(),
        &[
            // The scripted control plane speaks plaintext (mTLS is covered by tests/tls.rs).
            ("TOLLGATE_ALLOW_PLAINTEXT_CONTROL_PLANE", "true".into()),
            ("TOLLGATE_DRAIN_TIMEOUT_SECS", BUDGET.as_secs().to_string()),
        ],
    )
    .await;
    let proxy = dp.proxy_addr.port();
    let readyz = format!("http://{}/readyz", dp.admin_addr);

    // Fast streams take about 2 s (well inside the budget); slow ones would take 40 s.
    for _ in 0..FAST {
        up.push(
            Script::success()
                .text(FAST_TEXT)
                .usage(Usage::new(11, 0, 4, 0))
                .event_delay(Duration::from_millis(150)),
        );
    }
    for _ in 0..SLOW {
        up.push(
            Script::success()
                .text(vec!["slow "; 400])
                .usage(Usage::new(11, 0, 400, 0))
                .event_delay(Duration::from_millis(100)),
        );
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut streams = Vec::new();
    for _ in 0..FAST + SLOW {
        let client = client.clone();
        let url = format!("http://127.0.0.1:{proxy}/v1/responses");
        #[allow(clippy::disallowed_methods)] // the test's own clients, joined below
        streams.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }));
    }
    up.wait_for_in_flight(FAST + SLOW).await;
    // And non-streaming requests whose upstream has not answered by the cut.
    for _ in 0..WAITING {
        up.push(Script::success().delay(Duration::from_secs(60)));
    }
    let mut waiting = Vec::new();
    for _ in 0..WAITING {
        let client = client.clone();
        let url = format!("http://127.0.0.1:{proxy}/v1/responses");
        #[allow(clippy::disallowed_methods)] // the test's own clients, joined below
        waiting.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-5.1", "input": "hi"}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }));
    }
    up.wait_for_in_flight(FAST + SLOW + WAITING).await;

    dp.terminate();
    let signalled = Instant::now();

    // Not ready at once, while the streams go on.
    tollgate_tests::eventually(
        "readiness 503 after SIGTERM",
        Duration::from_secs(1),
        || async { status(&readyz).await == 503 },
    )
    .await;
    // No new connections.
    tollgate_tests::eventually("the proxy port closed", Duration::from_secs(1), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", proxy))
            .await
            .is_err()
    })
    .await;

    let mut complete = 0;
    let mut ended = 0;
    for s in streams {
        let body = s.await.unwrap();
        let sse = parse_sse(&body);
        let last = sse.last().expect("at least one event");
        let text: String = sse
            .iter()
            .filter(|e| e.kind().as_deref() == Some("response.output_text.delta"))
            .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
            .collect();
        if last.kind().as_deref() == Some("response.completed") {
            // A fast stream: the whole upstream content, as sent.
            assert_eq!(text, FAST_TEXT.concat());
            complete += 1;
        } else {
            // A slow stream at the cut: an error event the OpenAI SDKs raise as APIError.
            assert_eq!(last.name(), "error", "{body}");
            let err = &last.json()["error"];
            assert_eq!(err["type"], "api_error", "{body}");
            assert!(
                err["message"].as_str().unwrap().contains("shutting down"),
                "{body}"
            );
            assert!(text.starts_with("slow "), "some of the stream came first");
            assert!(text.len() < "slow ".len() * 400, "cut before its end");
            ended += 1;
        }
    }
    assert_eq!((complete, ended), (FAST, SLOW));
    for w in waiting {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("shutting down"),
            "{body}"
        );
    }

    let exit = dp.wait_exit(BUDGET + Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    println!("SIGTERM to exit: {took:?} (budget {BUDGET:?})");
    assert!(exit.success(), "exit {exit:?}");
    // The budget, plus a generous margin for a loaded machine (a regression guard, not a
    // speed test: before, the drain could take three timeouts in a row).
    assert!(took < BUDGET + Duration::from_secs(3), "{took:?}");

    // Every request's usage was committed before the exit: the real one for the
    // completed streams, an estimate from the relayed text for the cut ones, and from
    // the input for the requests the upstream had not answered (it may bill them).
    let committed = cp.usage_committed();
    assert_eq!(committed.len(), FAST + SLOW + WAITING);
    let real: Vec<_> = committed.iter().filter(|r| !r.estimated).collect();
    assert_eq!(real.len(), FAST);
    assert!(
        real.iter()
            .all(|r| r.input_tokens == 11 && r.output_tokens == 4)
    );
    let (cut, unanswered): (Vec<_>, Vec<_>) = committed
        .iter()
        .filter(|r| r.estimated)
        .partition(|r| r.stream);
    assert_eq!((cut.len(), unanswered.len()), (SLOW, WAITING));
    assert!(cut.iter().all(|r| r.output_tokens > 0));
    assert!(unanswered.iter().all(|r| r.output_tokens == 0));
    // Nothing left behind for a next start.
    assert!(!dp.spill_path().exists());
}

/// The control plane's drain: NOT_SERVING on both ports first, while calls still run;
/// a call still open at the cut is dropped; the whole fits the budget.
#[tokio::test]
async fn control_plane_reports_not_serving_first_and_stops_within_its_budget() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let health_addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let home = tollgate_tests::cluster::Home::embedded();
    let mut config = tollgate_tests::cluster::control_plane_config(home.data_dir());
    config.health_listen = Some(health_addr);
    config.drain_timeout_secs = 3;
    let cp = tollgate_tests::cluster::ControlPlane::start_with(home, config).await;
    let probe = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect_lazy(),
    );
    let check = |mut probe: HealthClient<tonic::transport::Channel>| async move {
        match probe.check(HealthCheckRequest::default()).await {
            Ok(r) => Some(r.into_inner().status),
            Err(_) => None,
        }
    };
    tollgate_tests::eventually("health port serving", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move { check(probe).await == Some(ServingStatus::Serving as i32) }
    })
    .await;
    // A call that stays open (a health watch on the main port) keeps the drain going
    // until the cut.
    let mut watch = HealthClient::new(cp.channel())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let signalled = Instant::now();
    let stopping = cp.stop();
    tokio::pin!(stopping);
    // While it drains: the open call hears NOT_SERVING, and so do new probes.
    let heard = tokio::select! {
        m = watch.message() => m.unwrap().unwrap(),
        _ = &mut stopping => panic!("stopped before reporting NOT_SERVING"),
    };
    assert_eq!(heard.status, ServingStatus::NotServing as i32);
    let probed = tokio::select! {
        s = check(probe.clone()) => s,
        _ = &mut stopping => panic!("stopped before a probe saw NOT_SERVING"),
    };
    assert_eq!(probed, Some(ServingStatus::NotServing as i32));
    stopping.await;
    let took = signalled.elapsed();
    println!("control plane drain: {took:?} (budget 3 s)");
    // The open call was dropped at the cut (4/5 of the budget), not waited for.
    assert!(took >= Duration::from_millis(2_000), "{took:?}");
    assert!(took < Duration::from_secs(3 + 3), "{took:?}");
}
