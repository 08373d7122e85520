//! ReportUsage end to end: a real control plane on `127.0.0.1:0` over a test database, a
//! data-plane `Session` (Attach first) to watch the invalidations, and the database read
//! directly to check what was charged. Runs on SQLite and Postgres.
//!
//! - a record reported twice is charged once and acknowledged both times;
//! - a restart between the commit and the acknowledgement (the data plane never saw the
//!   ack) and a replay to the new control plane: charged once;
//! - malformed records, unknown keys and unpriced models under strict pricing are
//!   rejected; unpriced models otherwise are kept at zero cost; fallback prices apply;
//! - estimates are charged unless `charge_estimates` is off;
//! - a key crossing its quota is invalidated on every attached data plane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_control_plane::Config;
use tollgate_control_plane::billing::FallbackPrice;
use tollgate_control_plane::model::{NewApiKey, NewUser, UsageFilter, UsageRecord};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::{KeyStatus, UserRole};
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tollgate_tests::cluster::{ControlPlane, Home};
use tollgate_tests::{Backend, on_both_backends};
use tonic::Streaming;
use tonic::transport::Channel;

// ------------------------------------------------------------------ harness

/// One test's world: a database, a data dir (secrets survive restarts), a store on the
/// same database for setup and checks.
struct World {
    home: Home,
    store: Store,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let home = Home::on(backend).await;
        let store = home.db().unwrap().store().await;
        Self { home, store }
    }

    fn config(&self) -> Config {
        let mut c = self.home.config();
        // Sessions here send no heartbeats; keep them alive for the whole test.
        c.lease_grace_ms = 120_000;
        c.heartbeat_interval_ms = 60_000;
        c
    }

    async fn start(&self) -> ControlPlane {
        self.start_with(self.config()).await
    }

    async fn start_with(&self, config: Config) -> ControlPlane {
        ControlPlane::start_with(self.home.clone(), config).await
    }

    /// A user with `balance` nano-USD and a key (no group) with `quota` (0 = none).
    async fn user_and_key(&self, name: &str, balance: i64, quota: i64) -> (i64, i64) {
        let user = self
            .store
            .create_user(NewUser {
                email: format!("{name}@example.com"),
                name: name.to_owned(),
                role: UserRole::User,
                concurrency: 5,
                notes: String::new(),
                initial_balance_nanos: balance,
            })
            .await
            .unwrap();
        let key = self
            .store
            .create_key(NewApiKey {
                user_id: user.id,
                name: "k".into(),
                group_id: None,
                key_hash: format!("{:0>64}", user.id),
                key_hint: "sk-…".into(),
                ip_allow: vec![],
                ip_deny: vec![],
                quota_nanos: quota,
                expires_at_ms: None,
            })
            .await
            .unwrap();
        (user.id, key.id)
    }

    async fn balance(&self, user_id: i64) -> i64 {
        self.store.get_user(user_id).await.unwrap().balance_nanos
    }

    async fn rows(&self, user_id: i64) -> Vec<UsageRecord> {
        let filter = UsageFilter {
            user_id: Some(user_id),
            ..UsageFilter::default()
        };
        let (page, _) = self
            .store
            .query_usage(&filter, tollgate_control_plane::model::Page::default())
            .await
            .unwrap();
        page.items
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

/// A data-plane session: Attach sent, Attached received. Dropping it hangs up.
struct Session {
    _up: mpsc::Sender<pb::SessionUp>,
    down: Streaming<pb::SessionDown>,
}

async fn attach(client: &mut GatewayClient<Channel>) -> Session {
    let (up, rx) = mpsc::channel(8);
    up.send(pb::SessionUp {
        msg: Some(pb::session_up::Msg::Attach(pb::Attach {
            data_plane_id: "billing-test-dp".into(),
            held_leases: vec![],
            version: "test".into(),
        })),
    })
    .await
    .unwrap();
    let mut down = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = down.message().await.unwrap().unwrap();
    assert!(
        matches!(first.msg, Some(pb::session_down::Msg::Attached(_))),
        "{first:?}"
    );
    Session { _up: up, down }
}

impl Session {
    /// Invalidations received until `want` (scope, id) shows up; panics after 10 s.
    async fn expect_invalidation(&mut self, scope: pb::invalidate::Scope, id: i64) {
        let wait = async {
            loop {
                let msg = self.down.message().await.unwrap().unwrap();
                if let Some(pb::session_down::Msg::Invalidate(inv)) = msg.msg
                    && inv.scope == scope as i32
                    && inv.ids.contains(&id)
                {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no {scope:?} invalidation for {id}"));
    }
}

/// gpt-5: 1000 input of which 100 cached, 200 output. Total 3_137_500 nano-USD.
fn record(request_id: &str, user_id: i64, key_id: i64) -> pb::UsageReport {
    pb::UsageReport {
        request_id: request_id.into(),
        key_id,
        user_id,
        account_id: 1,
        model: "gpt-5".into(),
        upstream_model: "gpt-5-2025-08-07".into(),
        input_tokens: 1000,
        output_tokens: 200,
        cached_tokens: 100,
        reasoning_tokens: 64,
        stream: true,
        duration_ms: 1500,
        first_token_ms: Some(300),
        user_agent: "codex_cli_rs/0.1".into(),
        client_ip: "10.1.2.3".into(),
        reasoning_effort: "high".into(),
        started_at_ms: tollgate_shared::now_ms(),
        billing_mode: "balance".into(),
        rate_multiplier: "1.5".into(),
        account_cost_multiplier: "0.8".into(),
        ..Default::default()
    }
}

async fn report(
    client: &mut GatewayClient<Channel>,
    records: Vec<pb::UsageReport>,
) -> pb::ReportUsageResponse {
    client
        .report_usage(pb::ReportUsageRequest { records })
        .await
        .unwrap()
        .into_inner()
}

on_both_backends!(
    reported_twice_charged_once,
    restart_between_commit_and_ack_charges_once,
    rejections_and_pricing,
    estimates_follow_the_setting,
    quota_exhaustion_reaches_data_planes,
);

const CHARGE: i64 = 4_706_250; // 3_137_500 × 1.5
const TEN_USD: i64 = 10_000_000_000;

// ------------------------------------------------------------------ tests

async fn reported_twice_charged_once(backend: Backend) {
    let w = World::new(backend).await;
    let (user, key) = w.user_and_key("twice", TEN_USD, 0).await;
    let cp = w.start().await;
    let mut c = cp.gateway();
    let mut session = attach(&mut c).await;

    let rec = record("req-twice", user, key);
    let resp = report(&mut c, vec![rec.clone()]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-twice".to_owned()]);
    assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
    assert_eq!(w.balance(user).await, TEN_USD - CHARGE);
    // An ordinary charge changes no authorization decision, so caches are kept (the
    // hot path stays one call); a charge that takes the balance to zero or below makes
    // data planes drop the user at once.
    let low = w.user_and_key("low", CHARGE - 1, 0).await;
    let resp = report(&mut c, vec![record("req-low", low.0, low.1)]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-low".to_owned()]);
    session
        .expect_invalidation(pb::invalidate::Scope::User, low.0)
        .await;

    // The usage row keeps every count, component and multiplier.
    let rows = w.rows(user).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (
            r.input_tokens,
            r.output_tokens,
            r.cached_tokens,
            r.reasoning_tokens
        ),
        (1000, 200, 100, 64)
    );
    assert_eq!(
        (
            r.input_cost_nanos,
            r.output_cost_nanos,
            r.cached_cost_nanos,
            r.total_cost_nanos,
            r.actual_cost_nanos
        ),
        (1_125_000, 2_000_000, 12_500, 3_137_500, CHARGE)
    );
    assert_eq!(r.rate_multiplier.to_string(), "1.5");
    assert_eq!(r.account_cost_multiplier.to_string(), "0.8");
    assert_eq!(r.created_at_ms, rec.started_at_ms);
    assert_eq!(
        (
            r.model.as_str(),
            r.upstream_model.as_str(),
            r.first_token_ms,
            r.estimated
        ),
        ("gpt-5", "gpt-5-2025-08-07", Some(300), false)
    );

    // The same record again (its ack was lost): acknowledged, not charged.
    let resp = report(&mut c, vec![rec.clone(), rec]).await;
    assert_eq!(
        resp.acked_request_ids,
        vec!["req-twice".to_owned(), "req-twice".to_owned()]
    );
    assert_eq!(w.balance(user).await, TEN_USD - CHARGE);
    assert_eq!(w.rows(user).await.len(), 1);

    drop(session);
    drop(c);
    cp.stop().await;
    w.finish().await;
}

async fn restart_between_commit_and_ack_charges_once(backend: Backend) {
    let w = World::new(backend).await;
    let (user, key) = w.user_and_key("restart", TEN_USD, TEN_USD).await;
    let rec = record("req-restart", user, key);

    let cp = w.start().await;
    let mut c = cp.gateway();
    let _session = attach(&mut c).await;
    // Committed, but the data plane never sees this answer: the control plane goes away.
    let _lost = report(&mut c, vec![rec.clone()]).await;
    drop(_session);
    drop(c);
    cp.stop().await;

    // A new control plane on the same database; the data plane re-attaches and replays.
    let cp = w.start().await;
    let mut c = cp.gateway();
    let _session = attach(&mut c).await;
    let resp = report(&mut c, vec![rec]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-restart".to_owned()]);
    assert_eq!(w.balance(user).await, TEN_USD - CHARGE);
    assert_eq!(w.store.get_key(key).await.unwrap().quota_used_nanos, CHARGE);
    assert_eq!(w.rows(user).await.len(), 1);

    drop(_session);
    drop(c);
    cp.stop().await;
    w.finish().await;
}

async fn rejections_and_pricing(backend: Backend) {
    let w = World::new(backend).await;
    let (user, key) = w.user_and_key("pricing", TEN_USD, 0).await;
    let cp = w.start().await;
    let mut c = cp.gateway();

    let mut negative = record("req-negative", user, key);
    negative.output_tokens = -1;
    let mut bad_mode = record("req-mode", user, key);
    bad_mode.billing_mode = "free".into();
    let mut bad_multiplier = record("req-mult", user, key);
    bad_multiplier.rate_multiplier = "one".into();
    let mut no_id = record("", user, key);
    no_id.request_id.clear();
    let unknown_key = record("req-unknown-key", user, 999_999);
    let mut unpriced = record("req-unpriced", user, key);
    unpriced.model = "o-unknown".into();
    let mut dated = record("req-dated", user, key);
    dated.model = "gpt-5.1-codex-high-2025-11-13".into();
    let ok = record("req-ok", user, key);

    let resp = report(
        &mut c,
        vec![
            negative,
            bad_mode,
            bad_multiplier,
            no_id,
            unknown_key,
            unpriced,
            dated,
            ok,
        ],
    )
    .await;
    assert_eq!(
        resp.acked_request_ids,
        vec!["req-unpriced", "req-dated", "req-ok"]
    );
    let reasons: Vec<(&str, &str)> = resp
        .rejected
        .iter()
        .map(|r| (r.request_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for (id, needle) in [
        ("req-negative", "output_tokens"),
        ("req-mode", "billing_mode"),
        ("req-mult", "rate_multiplier"),
        ("", "request_id"),
        ("req-unknown-key", "api key 999999"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(i, reason)| *i == id && reason.contains(needle)),
            "{id}: {reasons:?}"
        );
    }
    // Unpriced (lenient default): kept, tokens and all, at zero cost. The dated
    // codex-high variant is priced as gpt-5.1-codex, like gpt-5.
    let rows = w.rows(user).await;
    let by_id = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap().clone();
    let unpriced = by_id("req-unpriced");
    assert_eq!(
        (unpriced.total_cost_nanos, unpriced.input_tokens),
        (0, 1000)
    );
    assert_eq!(by_id("req-dated").actual_cost_nanos, CHARGE);
    assert_eq!(rows.len(), 3);
    assert_eq!(w.balance(user).await, TEN_USD - 2 * CHARGE);
    drop(c);
    cp.stop().await;

    // Strict pricing: an unpriced model is refused, naming it.
    let mut strict = w.config();
    strict.strict_pricing = true;
    let cp = w.start_with(strict.clone()).await;
    let mut c = cp.gateway();
    let mut unpriced = record("req-strict", user, key);
    unpriced.model = "o-unknown".into();
    let resp = report(&mut c, vec![unpriced.clone()]).await;
    assert!(resp.acked_request_ids.is_empty());
    assert_eq!(resp.rejected.len(), 1);
    assert!(
        resp.rejected[0].reason.contains("\"o-unknown\""),
        "{:?}",
        resp.rejected
    );
    drop(c);
    cp.stop().await;

    // A fallback price covers it, strict or not.
    strict.fallback_price = Some("1,2,0.5".parse::<FallbackPrice>().unwrap());
    let cp = w.start_with(strict).await;
    let mut c = cp.gateway();
    let resp = report(&mut c, vec![unpriced]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-strict"]);
    // 900 × 1000 + 200 × 2000 + 100 × 500 nano-USD (1, 2 and 0.5 USD per million
    // tokens) = 1_350_000, × 1.5.
    let row = w
        .rows(user)
        .await
        .into_iter()
        .find(|r| r.request_id == "req-strict")
        .unwrap();
    assert_eq!(
        (row.total_cost_nanos, row.actual_cost_nanos),
        (1_350_000, 2_025_000)
    );
    drop(c);
    cp.stop().await;
    w.finish().await;
}

async fn estimates_follow_the_setting(backend: Backend) {
    let w = World::new(backend).await;
    let (user, key) = w.user_and_key("estimates", TEN_USD, 0).await;

    let cp = w.start().await;
    let mut c = cp.gateway();
    let mut est = record("req-est-charged", user, key);
    est.estimated = true;
    let resp = report(&mut c, vec![est]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-est-charged"]);
    assert_eq!(w.balance(user).await, TEN_USD - CHARGE);
    drop(c);
    cp.stop().await;

    let mut config = w.config();
    config.charge_estimates = false;
    let cp = w.start_with(config).await;
    let mut c = cp.gateway();
    let mut est = record("req-est-free", user, key);
    est.estimated = true;
    let resp = report(&mut c, vec![est]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-est-free"]);
    assert_eq!(w.balance(user).await, TEN_USD - CHARGE);
    let row = w
        .rows(user)
        .await
        .into_iter()
        .find(|r| r.request_id == "req-est-free")
        .unwrap();
    assert!(row.estimated);
    assert_eq!(
        (
            row.total_cost_nanos,
            row.actual_cost_nanos,
            row.input_tokens
        ),
        (0, 0, 1000)
    );
    drop(c);
    cp.stop().await;
    w.finish().await;
}

async fn quota_exhaustion_reaches_data_planes(backend: Backend) {
    let w = World::new(backend).await;
    // Room for two charges exactly.
    let (user, key) = w.user_and_key("quota", TEN_USD, 2 * CHARGE).await;
    let cp = w.start().await;
    let mut c = cp.gateway();
    let mut one = attach(&mut c).await;
    let mut c2 = cp.gateway();
    let mut two = attach(&mut c2).await;

    let resp = report(
        &mut c,
        vec![
            record("req-q1", user, key),
            record("req-q2", user, key),
            record("req-q3", user, key),
        ],
    )
    .await;
    // In-flight requests past the quota are still charged (the overshoot is visible).
    assert_eq!(resp.acked_request_ids.len(), 3);
    let k = w.store.get_key(key).await.unwrap();
    assert_eq!(k.status, KeyStatus::QuotaExhausted);
    assert_eq!(k.quota_used_nanos, 3 * CHARGE);
    one.expect_invalidation(pb::invalidate::Scope::Key, key)
        .await;
    two.expect_invalidation(pb::invalidate::Scope::Key, key)
        .await;

    drop((one, two, c, c2));
    cp.stop().await;
    w.finish().await;
}
