//! Billing end to end: exact quota accounting under concurrency, quota exhaustion
//! reaching every data plane, unpriced models refused (or a fallback price), the served
//! model priced, and usage flushed on graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};

fn body(model: &str) -> Value {
    json!({"model": model, "input": "hi"})
}

async fn records(gw: &Gateway, key_id: i64) -> admin::QueryUsageResponse {
    gw.admin
        .clone()
        .query_usage(admin::QueryUsageRequest {
            filter: Some(admin::UsageFilter {
                key_id,
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
}

async fn key(gw: &Gateway, id: i64) -> admin::ApiKey {
    gw.admin
        .clone()
        .get_key(admin::GetKeyRequest { id })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_account_the_quota_exactly() {
    let gw = Gateway::start(2).await;
    let user = gw.user(50, 100).await;
    let group = gw.group("1.5").await;
    gw.api_key_account("upstream-a", group, 10, 50).await;
    // gpt-5.1 with the fake's usage (100 in / 20 cached / 50 out):
    // 80 × 1.25 + 50 × 10 + 20 × 0.125 = 602.5 µUSD → 602_500 nano; × 1.5 = 903_750.
    let per_request = 903_750;
    let quota = 40 * per_request;
    let (key_id, secret) = gw
        .key_with(admin::CreateKeyRequest {
            user_id: user,
            group_id: Some(group),
            name: "quota".into(),
            quota_nanos: quota,
            ..Default::default()
        })
        .await;
    // Hold all 50 at the upstream so they are admitted concurrently (quota is checked at
    // admission; in-flight requests may overshoot by their own cost).
    let gate = Gate::new();
    gw.up.set_default(Script::success().hold(&gate));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let http = gw.http.clone();
        let url = gw.responses_url(i % 2);
        let secret = secret.clone();
        set.spawn(async move {
            http.post(url)
                .bearer_auth(secret)
                .json(&body("gpt-5.1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    gw.up.wait_for_in_flight(50).await;
    gate.open();
    assert_eq!(set.join_all().await, vec![200; 50]);

    eventually(
        "50 usage records committed",
        Duration::from_secs(15),
        || async { records(&gw, key_id).await.records.len() == 50 },
    )
    .await;
    let usage = records(&gw, key_id).await;
    let sum: i64 = usage.records.iter().map(|r| r.actual_cost_nanos).sum();
    assert!(
        usage
            .records
            .iter()
            .all(|r| r.actual_cost_nanos == per_request),
        "exact per-request cost"
    );
    assert_eq!(usage.totals.unwrap().actual_cost_nanos, sum);
    let k = key(&gw, key_id).await;
    assert_eq!(
        k.quota_used_nanos, sum,
        "quota_used is the exact sum of actual_cost"
    );
    assert_eq!(k.status, "quota_exhausted");

    // The balance was charged the same exact sum.
    let u = gw
        .admin
        .clone()
        .get_user(admin::GetUserRequest { id: user })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.balance_nanos, 100_000_000_000 - sum);

    // Every data plane refuses the key at once (invalidation pushed on the flip).
    for dp in 0..2 {
        let r = gw.post(dp, &secret, body("gpt-5.1")).await;
        assert_eq!(r.status(), 429, "data plane {dp}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "API_KEY_QUOTA_EXHAUSTED");
    }
    assert_eq!(gw.up.count(), 50);
}

#[tokio::test]
async fn unpriced_models_are_refused_before_the_upstream_by_default() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let r = gw.post(0, &b.key, body("mystery-model-9")).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_priced");
    assert_eq!(
        v["error"]["message"],
        "Model 'mystery-model-9' has no configured price"
    );
    // A long name sharing a priced prefix is no longer priced by that prefix.
    let long = format!("gpt-5.1-codex-{}", "x".repeat(300));
    let r = gw.post(0, &b.key, body(&long)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(gw.up.count(), 0, "no upstream call");
    // Dated and effort-suffixed names find their model's price; the shipped table
    // prices the variants as themselves.
    for model in [
        "gpt-5.1-2025-11-13",
        "gpt-5.1-codex-high",
        "gpt-5-nano",
        "gpt-5-pro",
        "gpt-4.1-mini",
        "o3",
        "codex-mini-latest",
    ] {
        assert_eq!(
            gw.post(0, &b.key, body(model)).await.status(),
            200,
            "{model}"
        );
    }
}

#[tokio::test]
async fn a_fallback_price_opts_out_of_the_refusal() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| c.fallback_price = Some("1,2,0.5".parse().unwrap())),
        ..Default::default()
    })
    .await;
    let b = gw.basic().await;
    assert_eq!(
        gw.post(0, &b.key, body("mystery-model-9")).await.status(),
        200
    );
    eventually("usage recorded", Duration::from_secs(10), || async {
        records(&gw, b.key_id).await.records.len() == 1
    })
    .await;
    // The fake's usage: 80 × 1 + 50 × 2 + 20 × 0.5 = 190 µUSD.
    assert_eq!(
        records(&gw, b.key_id).await.records[0].total_cost_nanos,
        190_000
    );
}

/// A subscription (OAuth) account serves an unknown name as gpt-5.1-codex: the request
/// is billed at gpt-5.1-codex's price, never at zero, and never at the price of a
/// cheaper name the client asked for. Both names are in the usage log.
#[tokio::test]
async fn subscription_accounts_bill_the_served_model() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.oauth_account("oauth-tok", group, 10).await;
    let (key_id, key) = gw.key(user, Some(group)).await;
    for model in ["foo", "gpt-4.1-nano"] {
        let r = gw.post(0, &key, body(model)).await;
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(gw.up.last().unwrap().body_json["model"], "gpt-5.1-codex");
    }
    eventually("usage recorded", Duration::from_secs(10), || async {
        records(&gw, key_id).await.records.len() == 2
    })
    .await;
    let mut rows = records(&gw, key_id).await.records;
    rows.sort_by(|a, b| a.model.cmp(&b.model));
    // gpt-5.1-codex with the fake's usage (100 in / 20 cached / 50 out):
    // 80 × 1.25 + 50 × 10 + 20 × 0.125 = 602.5 µUSD.
    for (row, requested) in rows.iter().zip(["foo", "gpt-4.1-nano"]) {
        assert_eq!(row.model, requested);
        assert_eq!(row.upstream_model, "gpt-5.1-codex");
        assert_eq!(row.actual_cost_nanos, 602_500, "{requested}");
    }
}

#[tokio::test]
async fn usage_pending_at_graceful_shutdown_is_committed() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let gate = Gate::new();
    gw.up.set_default(Script::success().hold(&gate));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let http = gw.http.clone();
        let url = gw.responses_url(0);
        let key = b.key.clone();
        set.spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&body("gpt-5.1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    gw.up.wait_for_in_flight(5).await;
    // The control plane goes away; the requests finish; their usage cannot be sent.
    let Gateway {
        up,
        cp,
        mut dps,
        admin,
        http,
    } = gw;
    let (dir, config) = cp.stop().await;
    gate.open();
    assert_eq!(set.join_all().await, vec![200; 5]);
    // The control plane comes back; the data plane is shut down gracefully right away.
    let cp = tollgate_tests::cluster::ControlPlane::start_with(dir, config).await;
    let dp = dps.remove(0);
    dp.stop().await;
    // Everything it had pending was committed before it exited.
    let gw = Gateway {
        up,
        cp,
        dps,
        admin,
        http,
    };
    assert_eq!(records(&gw, b.key_id).await.records.len(), 5);
}
