//! Upstream time bounds (issue 10, item 2): an upstream that never sends its response head
//! holds a user's slot only until the header timeout, fails over like a 5xx and is
//! reported to the account's health; a client that leaves while the head is awaited frees
//! the slot at once and is charged nothing; a non-streaming body that stalls is cut at
//! the body timeout. The fake upstream delays its head by ten minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::{Gateway, Options};
use tollgate_tests::stage::Stage;

const TEN_MINUTES: Duration = Duration::from_secs(600);

fn body() -> Value {
    json!({"model": "gpt-5.1", "input": "hi"})
}

/// A gateway whose data plane waits 2 s for a response head; with `rule`, its control
/// plane makes an account that timed out unschedulable for 3 minutes (so the outcome
/// shows on the account).
async fn gateway_with_header_timeout(rule: bool) -> Gateway {
    let rules = if rule {
        r#"[{"status":0,"keywords":["header timeout"],"minutes":3}]"#
    } else {
        ""
    };
    Gateway::start_with(Options {
        data_plane: |c| c.flow.upstream_header_timeout_ms = 2_000,
        control_plane: Box::new(move |c| c.unschedulable_rules = rules.parse().unwrap()),
        ..Options::default()
    })
    .await
}

async fn usage_records(gw: &Gateway, user: i64) -> Vec<admin::UsageRecord> {
    gw.admin
        .clone()
        .query_usage(admin::QueryUsageRequest {
            filter: Some(admin::UsageFilter {
                user_id: user,
                ..Default::default()
            }),
            page: None,
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

async fn get_account(gw: &Gateway, id: i64) -> admin::Account {
    gw.admin
        .clone()
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner()
}

async fn balance(gw: &Gateway, user: i64) -> i64 {
    gw.admin
        .clone()
        .get_user(admin::GetUserRequest { id: user })
        .await
        .unwrap()
        .into_inner()
        .balance_nanos
}

#[tokio::test]
async fn a_hung_upstream_frees_the_users_slot_at_the_header_timeout() {
    let gw = gateway_with_header_timeout(false).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("sk-hung", group, 1, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    gw.up
        .push_for("sk-hung", Script::success().delay(TEN_MINUTES));

    let started = Instant::now();
    let first = gw.spawn_post(0, &key, body());
    gw.up.wait_for_count(1).await;
    // The same user (concurrency 1) asks again while the first request holds the slot.
    let second = gw.post(0, &key, body()).await;
    assert_eq!(second.status(), 200, "{:?}", second.text().await);
    let waited = started.elapsed();
    // The slot came back with the 2 s header timeout, not the upstream's 10 minutes
    // (nor the control plane's 30 s wait for a user slot, which would have been a 429).
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(20),
        "second request served after {waited:?}"
    );
    // The only account timed out: no account answered in time.
    let first = first.await.unwrap();
    assert_eq!(first.as_u16(), 504);

    // The abandoned request had no byte back: only the served one is recorded.
    eventually("one usage record", Duration::from_secs(10), || async {
        usage_records(&gw, user).await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_header_timeout_fails_over_like_a_5xx_and_reaches_the_accounts_health() {
    let gw = gateway_with_header_timeout(true).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    let hung = gw.api_key_account("sk-hung", group, 1, 5).await;
    gw.api_key_account("sk-ok", group, 2, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    gw.up
        .push_for("sk-hung", Script::success().delay(TEN_MINUTES));

    let r = gw.post(0, &key, body()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(gw.up.count_for("sk-hung"), 1);
    assert_eq!(gw.up.count_for("sk-ok"), 1);
    eventually("one usage record", Duration::from_secs(10), || async {
        usage_records(&gw, user).await.len() == 1
    })
    .await;
    let records = usage_records(&gw, user).await;
    assert!(!records[0].estimated, "the answering account's real usage");

    // The timed-out attempt reached the account's health as a timeout outcome (the
    // operator rule for status 0 with "header timeout" applied).
    eventually(
        "the timeout outcome applied",
        Duration::from_secs(10),
        || async {
            get_account(&gw, hung)
                .await
                .temp_unschedulable_until_ms
                .is_some()
        },
    )
    .await;
    assert!(
        get_account(&gw, hung)
            .await
            .temp_unschedulable_reason
            .starts_with("rule: stream timeout"),
    );
}

#[tokio::test]
async fn a_client_that_leaves_while_the_head_is_awaited_frees_the_slot_and_pays_nothing() {
    // The header timeout stays at its ten-minute default: only noticing the departed
    // client can free the slot.
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("sk-hung", group, 1, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let before = balance(&gw, user).await;
    gw.up
        .push_for("sk-hung", Script::success().delay(TEN_MINUTES));

    gw.up
        .push_for("sk-hung", Script::success().delay(TEN_MINUTES));
    // A non-streaming and a streaming client give up while the upstream is silent.
    for stream in [false, true] {
        let abandoned = gw.spawn_post(
            0,
            &key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": stream}),
        );
        eventually(
            "the upstream holds the request",
            Duration::from_secs(10),
            || async { gw.up.in_flight() == 1 },
        )
        .await;
        // The client's connection closes.
        abandoned.abort();
        // The data plane lets go of the upstream request too, and of the user's only
        // slot: otherwise the next request would wait for it (up to 30 s) and this
        // one's upstream request would never come.
        eventually(
            "the upstream request cancelled",
            Duration::from_secs(10),
            || async { gw.up.in_flight() == 0 },
        )
        .await;
    }
    let started = Instant::now();
    let next = gw.post(0, &key, body()).await;
    assert_eq!(next.status(), 200, "{:?}", next.text().await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the slot was free: served after {:?}",
        started.elapsed()
    );
    // Only the served request is recorded and charged.
    eventually("one usage record", Duration::from_secs(10), || async {
        usage_records(&gw, user).await.len() == 1
    })
    .await;
    let records = usage_records(&gw, user).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        before - balance(&gw, user).await,
        records[0].actual_cost_nanos,
        "nothing charged for the abandoned requests"
    );
}

#[tokio::test]
async fn a_stalled_non_streaming_body_is_cut_at_the_body_timeout() {
    let s = Stage::start_with(|c| c.flow.upstream_body_timeout_ms = 1_000).await;
    // The head comes at once; the body only after ten minutes.
    s.up.push(Script::success().pause_after(0, TEN_MINUTES));
    let started = Instant::now();
    let (status, v) = s.ask().await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "stream_timeout");
    assert!(started.elapsed() < Duration::from_secs(30));
    s.cp.wait_for("the timeout reported", Duration::from_secs(10), |cp| {
        !cp.outcomes().is_empty()
    })
    .await;
    let o = &s.cp.outcomes()[0];
    assert_eq!(
        o.kind,
        pb::report_outcome_request::Kind::StreamTimeout as i32
    );
}
