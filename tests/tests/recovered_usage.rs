//! Every lease ends in exactly one usage record (ARCHITECTURE.md "Every lease ends in one
//! usage record"): a data plane killed with open streams never reports their usage, so
//! the control plane records an estimate for each reaped lease; a real record arriving
//! later supersedes the estimate and the user is charged once, by the real amount. A
//! request released but never reported by a process that then died is estimated too;
//! one the data plane declared unbilled, or whose record arrived, or a response operation
//! (never billed), is not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tollgate_tests::cluster::IsolatedDataPlane;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::{Gateway, Options};
use tollgate_tests::{eventually, eventually_some};
use tonic::transport::Channel;

const STREAMS: usize = 20;
const OUTPUT_ALLOWANCE: i64 = 700;
const BALANCE_NANOS: i64 = 100_000_000_000;

async fn records(gw: &Gateway, user_id: i64) -> Vec<admin::UsageRecord> {
    gw.admin
        .clone()
        .query_usage(admin::QueryUsageRequest {
            filter: Some(admin::UsageFilter {
                user_id,
                ..Default::default()
            }),
            page: Some(admin::PageRequest {
                limit: 1000,
                page_token: String::new(),
            }),
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

async fn balance(gw: &Gateway, id: i64) -> i64 {
    gw.admin
        .clone()
        .get_user(admin::GetUserRequest { id })
        .await
        .unwrap()
        .into_inner()
        .balance_nanos
}

/// A streaming request whose body is `n`-ish bytes (its exact length is returned).
fn body(i: usize, pad: usize) -> (Value, usize) {
    let b = json!({
        "model": "gpt-5.1",
        "input": format!("request {i}: {}", "x".repeat(pad)),
        "stream": true,
    });
    let len = serde_json::to_vec(&b).unwrap().len();
    (b, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_data_plane_leaves_one_estimated_record_per_open_stream() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| c.recovered_output_tokens = OUTPUT_ALLOWANCE),
        ..Default::default()
    })
    .await;
    let user = gw.user(50, BALANCE_NANOS / 1_000_000_000).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 50).await;
    let (_, key) = gw.key(user, Some(group)).await;

    let doomed = IsolatedDataPlane::start(&gw.cp.url());
    eventually(
        "isolated data plane ready",
        Duration::from_secs(10),
        || async { doomed.admin_status("/readyz").await == 200 },
    )
    .await;
    // Twenty streams that send two events and then hang: open when the process dies.
    gw.up.push_n(
        Script::success().pause_after(2, Duration::from_secs(120)),
        STREAMS,
    );
    let mut sizes = Vec::new();
    let mut open = Vec::new();
    for i in 0..STREAMS {
        let (b, len) = body(i, 100 * i);
        sizes.push(len);
        let mut r = gw
            .http
            .post(format!("{}/v1/responses", doomed.proxy_url()))
            .bearer_auth(&key)
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.chunk().await.unwrap();
        open.push(r);
    }
    gw.up.wait_for_in_flight(STREAMS).await;
    assert!(records(&gw, user).await.is_empty(), "nothing reported yet");

    doomed.kill();
    drop(open);
    // After the grace period (2 s in tests) the reaper frees the leases and the
    // control plane records one estimate per request.
    let recs = eventually_some_records(&gw, user, STREAMS).await;
    assert_eq!(
        recs.len(),
        STREAMS,
        "exactly one record per admitted request"
    );
    let mut expected_inputs: Vec<i64> = sizes
        .iter()
        .map(|n| i64::try_from(n.div_ceil(4)).unwrap())
        .collect();
    let mut inputs: Vec<i64> = recs.iter().map(|r| r.input_tokens).collect();
    expected_inputs.sort_unstable();
    inputs.sort_unstable();
    assert_eq!(
        inputs, expected_inputs,
        "input = body bytes / 4, rounded up"
    );
    for r in &recs {
        assert!(r.estimated && r.recovered, "flagged: {r:?}");
        assert_eq!(r.output_tokens, OUTPUT_ALLOWANCE);
        assert!(r.stream);
        assert!(r.actual_cost_nanos > 0, "estimates are charged: {r:?}");
    }
    let charged: i64 = recs.iter().map(|r| r.actual_cost_nanos).sum();
    assert_eq!(balance(&gw, user).await, BALANCE_NANOS - charged);

    // The dead process's real record for one request turns up late (a spill file
    // replayed by its successor): it replaces the estimate, and the balance moves by
    // the difference only.
    let late = &recs[0];
    let real = pb::UsageReport {
        request_id: late.request_id.clone(),
        key_id: late.key_id,
        user_id: late.user_id,
        group_id: late.group_id,
        account_id: late.account_id,
        model: late.model.clone(),
        upstream_model: late.upstream_model.clone(),
        input_tokens: 40,
        output_tokens: 5_000,
        stream: true,
        started_at_ms: late.created_at_ms,
        billing_mode: "balance".into(),
        rate_multiplier: "1".into(),
        account_cost_multiplier: "1".into(),
        ..Default::default()
    };
    let mut gateway = gw.cp.gateway();
    for _ in 0..2 {
        // Sent twice: the second is a plain replay.
        let acked = gateway
            .report_usage(pb::ReportUsageRequest {
                records: vec![real.clone()],
            })
            .await
            .unwrap()
            .into_inner()
            .acked_request_ids;
        assert_eq!(acked, vec![late.request_id.clone()]);
    }
    let after = records(&gw, user).await;
    assert_eq!(after.len(), STREAMS, "superseded, not added");
    let replaced = after
        .iter()
        .find(|r| r.request_id == late.request_id)
        .unwrap();
    assert!(!replaced.estimated && !replaced.recovered, "{replaced:?}");
    assert_eq!((replaced.input_tokens, replaced.output_tokens), (40, 5_000));
    assert_ne!(replaced.actual_cost_nanos, late.actual_cost_nanos);
    let total: i64 = after.iter().map(|r| r.actual_cost_nanos).sum();
    assert_eq!(
        total,
        charged - late.actual_cost_nanos + replaced.actual_cost_nanos
    );
    assert_eq!(
        balance(&gw, user).await,
        BALANCE_NANOS - total,
        "charged once in total, by the real record"
    );
    let audit = gw
        .admin
        .clone()
        .audit_books(admin::AuditBooksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(audit.breaches.is_empty(), "{:?}", audit.breaches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reported_its_usage_gets_no_estimate() {
    let gw = Gateway::start(0).await;
    let user = gw.user(5, BALANCE_NANOS / 1_000_000_000).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let doomed = IsolatedDataPlane::start(&gw.cp.url());
    eventually("ready", Duration::from_secs(10), || async {
        doomed.admin_status("/readyz").await == 200
    })
    .await;
    // One request finishes and is reported; the process then dies.
    let (b, _) = body(0, 10);
    let r = gw
        .http
        .post(format!("{}/v1/responses", doomed.proxy_url()))
        .bearer_auth(&key)
        .json(&b)
        .send()
        .await
        .unwrap();
    let _ = r.text().await.unwrap();
    let recs = eventually_some_records(&gw, user, 1).await;
    doomed.kill();
    // Past the grace period and a few reaper ticks: still the one real record.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = records(&gw, user).await;
    assert_eq!(after, recs);
    assert!(!after[0].estimated && !after[0].recovered);
}

async fn eventually_some_records(gw: &Gateway, user: i64, n: usize) -> Vec<admin::UsageRecord> {
    eventually_some(
        &format!("{n} usage records"),
        Duration::from_secs(15),
        || async {
            let recs = records(gw, user).await;
            (recs.len() >= n).then_some(recs)
        },
    )
    .await
}

/// A Gateway session of our own, to play a data plane whose usage queue is lost.
struct Session {
    client: GatewayClient<Channel>,
    id: String,
    _driver: JoinSet<()>,
    /// Sending (or dropping) it ends the session stream, as a dying process's would.
    end: tokio::sync::oneshot::Sender<()>,
}

impl Session {
    async fn open(cp_url: &str) -> Self {
        let pki = tollgate_tests::cluster::test_pki();
        let identity = (pki.data_plane_cert.as_str(), pki.data_plane_key.as_str());
        let mut client =
            GatewayClient::new(tollgate_tests::cluster::channel(cp_url, Some(identity)));
        let attach = pb::SessionUp {
            msg: Some(pb::session_up::Msg::Attach(pb::Attach {
                data_plane_id: format!("lost-{}", uuid::Uuid::new_v4().simple()),
                held_leases: vec![],
                version: "test".into(),
            })),
        };
        let heartbeats = futures::stream::unfold(1u64, |seq| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let beat = pb::SessionUp {
                msg: Some(pb::session_up::Msg::Heartbeat(pb::Heartbeat {
                    seq,
                    in_flight: 0,
                })),
            };
            Some((beat, seq + 1))
        });
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let up = futures::stream::once(async move { attach })
            .chain(heartbeats)
            .take_until(ended);
        let mut down = client.session(up).await.unwrap().into_inner();
        let id = match down.next().await {
            Some(Ok(pb::SessionDown {
                msg: Some(pb::session_down::Msg::Attached(a)),
            })) => a.session_id,
            other => panic!("expected Attached, got {other:?}"),
        };
        let mut driver = JoinSet::new();
        driver.spawn(async move { while let Some(Ok(_)) = down.next().await {} });
        Self {
            client,
            id,
            _driver: driver,
            end,
        }
    }

    /// Admits `request_id` and releases its lease at once; returns the lease.
    async fn admit_and_release(&self, key_id: i64, request_id: &str) -> pb::Lease {
        let answer = self
            .client
            .clone()
            .admit(pb::AdmitRequest {
                session_id: self.id.clone(),
                request_id: request_id.into(),
                key_id,
                model: "gpt-5.1".into(),
                stream: true,
                request_bytes: 4_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .result;
        let Some(pb::admit_response::Result::Lease(lease)) = answer else {
            panic!("not admitted: {answer:?}");
        };
        self.release(&lease).await;
        lease
    }

    /// Admits a response operation on `response_id` (never billed) as `request_id`.
    async fn admit_operation(&self, key_id: i64, request_id: &str, response_id: &str) -> pb::Lease {
        let answer = self
            .client
            .clone()
            .admit(pb::AdmitRequest {
                session_id: self.id.clone(),
                request_id: request_id.into(),
                key_id,
                response_id: response_id.into(),
                response_operation: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .result;
        let Some(pb::admit_response::Result::Lease(lease)) = answer else {
            panic!("not admitted: {answer:?}");
        };
        lease
    }

    async fn release(&self, lease: &pb::Lease) {
        self.client
            .clone()
            .release(pb::ReleaseRequest {
                session_id: self.id.clone(),
                lease_ids: vec![lease.lease_id.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_requests_of_a_dead_data_plane_are_estimated_unless_settled() {
    let gw = Gateway::start_with(Options {
        data_planes: 0,
        control_plane: Box::new(|c| c.recovered_output_tokens = OUTPUT_ALLOWANCE),
        ..Default::default()
    })
    .await;
    let user = gw.user(5, BALANCE_NANOS / 1_000_000_000).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 5).await;
    let (key_id, _) = gw.key(user, Some(group)).await;

    let session = Session::open(&gw.cp.url()).await;
    // Three requests served and released; then the process dies with its usage queue:
    // - "lost": its record never arrives;
    // - "unbilled": it ended without a record (the data plane said so);
    // - "reported": its record arrived before the process died.
    session.admit_and_release(key_id, "lost").await;
    session.admit_and_release(key_id, "unbilled").await;
    let lease = session.admit_and_release(key_id, "reported").await;
    session
        .client
        .clone()
        .release(pb::ReleaseRequest {
            session_id: session.id.clone(),
            unbilled_request_ids: vec!["unbilled".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let real = pb::UsageReport {
        request_id: "reported".into(),
        key_id,
        user_id: user,
        group_id: lease.group_id,
        account_id: lease.account.as_ref().unwrap().account_id,
        model: "gpt-5.1".into(),
        upstream_model: "gpt-5.1".into(),
        input_tokens: 10,
        output_tokens: 20,
        billing_mode: lease.billing_mode.clone(),
        rate_multiplier: lease.rate_multiplier.clone(),
        account_cost_multiplier: "1".into(),
        ..Default::default()
    };
    let acked = session
        .client
        .clone()
        .report_usage(pb::ReportUsageRequest {
            records: vec![real],
        })
        .await
        .unwrap()
        .into_inner()
        .acked_request_ids;
    assert_eq!(acked, vec!["reported".to_owned()]);
    // Response operations are never billed: one released, one still held when the
    // process dies; neither gets an estimate.
    session
        .client
        .clone()
        .record_response(pb::RecordResponseRequest {
            response_id: "resp_lost_dp".into(),
            account_id: lease.account.as_ref().unwrap().account_id,
            user_id: user,
            request_id: "reported".into(),
        })
        .await
        .unwrap();
    let op = session
        .admit_operation(key_id, "op-released", "resp_lost_dp")
        .await;
    session.release(&op).await;
    session
        .admit_operation(key_id, "op-held", "resp_lost_dp")
        .await;
    let _ = session.end.send(()); // the session stream ends: the process is gone

    let recs = eventually_some_records(&gw, user, 2).await;
    // A few more reaper ticks: nothing else turns up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recs_after = records(&gw, user).await;
    assert_eq!(recs_after, recs);
    let by_id = |id: &str| recs.iter().find(|r| r.request_id == id);
    let lost = by_id("lost").expect("the lost record is estimated");
    assert!(lost.estimated && lost.recovered);
    assert_eq!(
        (lost.input_tokens, lost.output_tokens),
        (1_000, OUTPUT_ALLOWANCE)
    );
    let reported = by_id("reported").unwrap();
    assert!(!reported.recovered && reported.output_tokens == 20);
    assert!(
        by_id("unbilled").is_none(),
        "ended without a record: no estimate"
    );
    // Nor a dead-lettered estimate (an operation names no model to price).
    let dead = gw
        .admin
        .clone()
        .list_dead_letters(admin::ListDeadLettersRequest {
            include_recharged: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    for op in ["op-released", "op-held"] {
        assert!(by_id(op).is_none(), "response operation {op} estimated");
        assert!(
            dead.iter().all(|d| d.request_id != op),
            "response operation {op} estimated: {dead:?}"
        );
    }
    let charged: i64 = recs.iter().map(|r| r.actual_cost_nanos).sum();
    assert_eq!(balance(&gw, user).await, BALANCE_NANOS - charged);
}
