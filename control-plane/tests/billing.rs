//! ReportUsage end to end: a real control plane on `127.0.0.1:0` over a test database, a
//! data-plane `Session` (Attach first) to watch the invalidations, and the database read
//! directly to check what was charged. Runs on SQLite and Postgres.
//!
//! - a record reported twice is charged once and acknowledged both times;
//! - a restart between the commit and the acknowledgement (the data plane never saw the
//!   ack) and a replay to the new control plane: charged once;
//! - malformed records, unknown keys, unpriced models, NUL and over-long models are
//!   dead-lettered (acknowledged as such, stored once even when replayed) and
//!   re-charged by an operator exactly once, with a corrected model; fallback prices
//!   apply;
//! - estimates are charged unless `charge_estimates` is off;
//! - a key crossing its quota is invalidated on every attached data plane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_control_plane::Config;
use tollgate_control_plane::billing::FallbackPrice;
use tollgate_control_plane::billing::dead_letter;
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
    dead_letters_and_pricing,
    audit_reports_broken_books,
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

async fn dead_letters_and_pricing(backend: Backend) {
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
    unpriced.upstream_model = "o-unknown".into();
    let mut nul = record("req-nul", user, key);
    nul.model = "gpt-5\0".into();
    let mut long = record("req-long", user, key);
    long.model = format!("gpt-5.1-codex-{}", "x".repeat(300));
    long.upstream_model = long.model.clone();
    let mut dated = record("req-dated", user, key);
    dated.model = "gpt-5.1-codex-high-2025-11-13".into();
    dated.upstream_model = dated.model.clone();
    // A free-text field with a NUL is kept, cleaned (Postgres refuses NUL).
    let mut ok = record("req-ok", user, key);
    ok.user_agent = "agent\0x".into();

    let batch = vec![
        negative,
        bad_mode,
        bad_multiplier,
        no_id,
        unknown_key,
        unpriced,
        nul,
        long,
        dated,
        ok,
    ];
    let resp = report(&mut c, batch.clone()).await;
    assert_eq!(resp.acked_request_ids, vec!["req-dated", "req-ok"]);
    assert!(resp.rejected.is_empty());
    let reasons: Vec<(&str, &str)> = resp
        .dead_lettered
        .iter()
        .map(|r| (r.request_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 8, "{reasons:?}");
    for (id, needle) in [
        ("req-negative", "output_tokens"),
        ("req-mode", "billing_mode"),
        ("req-mult", "rate_multiplier"),
        ("", "request_id"),
        ("req-unknown-key", "api key 999999"),
        ("req-unpriced", "no price for model \"o-unknown\""),
        ("req-nul", "control character"),
        ("req-long", "model is longer"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(i, reason)| *i == id && reason.contains(needle)),
            "{id}: {reasons:?}"
        );
    }
    let rows = w.rows(user).await;
    let by_id = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap().clone();
    // The dated codex-high variant is priced as gpt-5.1-codex, like gpt-5.
    assert_eq!(by_id("req-dated").actual_cost_nanos, CHARGE);
    assert_eq!(by_id("req-ok").user_agent, "agentx");
    assert_eq!(rows.len(), 2);
    assert_eq!(w.balance(user).await, TEN_USD - 2 * CHARGE);

    // The data plane never saw the answer and sends the batch again: same answer,
    // nothing stored twice.
    let again = report(&mut c, batch).await;
    assert_eq!(again.acked_request_ids, resp.acked_request_ids);
    assert_eq!(again.dead_lettered.len(), 8);
    let counts = w.store.count_dead_letters().await.unwrap();
    assert_eq!((counts.total, counts.pending), (8, 8));
    assert!(counts.oldest_pending_ms.is_some());

    // Re-charging: the raw record is kept exactly; an unpriced one needs a model (or a
    // price), an unknown key stays unchargeable; a corrected one is charged once.
    let letters = w.store.list_dead_letters(false, 0, 100).await.unwrap();
    let find = |id: &str| letters.iter().find(|d| d.request_id == id).unwrap().id;
    let nameless = letters
        .iter()
        .find(|d| d.request_id.starts_with("invalid:"))
        .unwrap();
    assert!(
        nameless.record.contains("\"request_id\":\"\""),
        "{}",
        nameless.record
    );
    let bus = tollgate_control_plane::events::Invalidations::new();
    let settings = tollgate_control_plane::billing::BillingSettings::default();
    let recharge = |id: i64, model: Option<&'static str>| {
        let (store, bus) = (w.store.clone(), bus.clone());
        async move {
            dead_letter::recharge(
                &store,
                &bus,
                &settings,
                id,
                model,
                tollgate_shared::now_ms(),
            )
            .await
        }
    };
    let e = recharge(find("req-unpriced"), None).await.unwrap_err();
    assert!(e.to_string().contains("no price"), "{e}");
    let e = recharge(find("req-unknown-key"), Some("gpt-5"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("api key 999999"), "{e}");
    let done = recharge(find("req-long"), Some("gpt-5")).await.unwrap();
    assert!(done.charged_now);
    assert_eq!(done.usage.actual_cost_nanos, CHARGE);
    assert_eq!(done.dead_letter.recharged_model, "gpt-5");
    let e = recharge(find("req-long"), Some("gpt-5")).await.unwrap_err();
    assert!(e.to_string().contains("already re-charged"), "{e}");
    let done = recharge(nameless.id, None).await.unwrap();
    assert_eq!(done.usage.request_id, nameless.request_id);
    assert_eq!(w.balance(user).await, TEN_USD - 4 * CHARGE);
    let counts = w.store.count_dead_letters().await.unwrap();
    assert_eq!((counts.total, counts.pending), (8, 6));
    assert_eq!(
        w.store.list_dead_letters(true, 0, 100).await.unwrap().len(),
        8
    );
    drop(c);
    cp.stop().await;

    // A fallback price covers an unpriced model.
    let mut config = w.config();
    config.fallback_price = Some("1,2,0.5".parse::<FallbackPrice>().unwrap());
    let cp = w.start_with(config).await;
    let mut c = cp.gateway();
    let mut unpriced = record("req-fallback", user, key);
    unpriced.model = "o-unknown".into();
    unpriced.upstream_model = "o-unknown".into();
    let resp = report(&mut c, vec![unpriced]).await;
    assert_eq!(resp.acked_request_ids, vec!["req-fallback"]);
    // 900 × 1000 + 200 × 2000 + 100 × 500 nano-USD (1, 2 and 0.5 USD per million
    // tokens) = 1_350_000, × 1.5.
    let row = w
        .rows(user)
        .await
        .into_iter()
        .find(|r| r.request_id == "req-fallback")
        .unwrap();
    assert_eq!(
        (row.total_cost_nanos, row.actual_cost_nanos),
        (1_350_000, 2_025_000)
    );
    drop(c);
    cp.stop().await;
    w.finish().await;
}

/// Clean books after a small run (charges, a quota reset, a balance adjustment); each
/// invariant broken by hand in the database is reported.
async fn audit_reports_broken_books(backend: Backend) {
    use sqlx::Connection;
    use tollgate_control_plane::billing::audit;
    let w = World::new(backend).await;
    let (user, key) = w.user_and_key("audit", TEN_USD, 100 * CHARGE).await;
    let cp = w.start().await;
    let mut c = cp.gateway();
    let resp = report(
        &mut c,
        (0..5)
            .map(|i| record(&format!("req-a{i}"), user, key))
            .collect(),
    )
    .await;
    assert_eq!(resp.acked_request_ids.len(), 5);
    w.store.reset_key_quota(key).await.unwrap();
    report(&mut c, vec![record("req-a5", user, key)]).await;
    w.store
        .adjust_balance(
            user,
            tollgate_control_plane::model::BalanceOp::Add,
            1_000,
            "top-up",
            false,
        )
        .await
        .unwrap();
    let now = tollgate_shared::now_ms();
    let clean = audit::audit(&w.store, now, 3_600_000).await.unwrap();
    assert_eq!(clean.breaches, vec![], "clean books");
    assert_eq!((clean.keys_checked, clean.usage_rows), (1, 6));
    assert_eq!(w.store.get_key(key).await.unwrap().quota_used_nanos, CHARGE);

    // Break the books by hand: a key's quota_used and a user's balance drift, a usage
    // row is stored free although gpt-5 has a price.
    let mut conn = sqlx::AnyConnection::connect(&w.home.db().unwrap().url)
        .await
        .unwrap();
    for sql in [
        "UPDATE api_keys SET quota_used_nanos = quota_used_nanos + 7",
        "UPDATE users SET balance_nanos = balance_nanos - 11",
        "UPDATE usage_logs SET total_cost_nanos = 0 WHERE request_id = 'req-a0'",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let dirty = audit::audit(&w.store, now, 3_600_000).await.unwrap();
    let found: Vec<(&str, String, i64, i64)> = dirty
        .breaches
        .iter()
        .map(|b| {
            (
                b.invariant,
                b.subject.clone(),
                b.expected_nanos,
                b.actual_nanos,
            )
        })
        .collect();
    let balance = TEN_USD - 6 * CHARGE + 1_000;
    assert_eq!(
        found,
        vec![
            ("key_quota", format!("key {key}"), CHARGE, CHARGE + 7),
            (
                "user_balance",
                format!("user {user}"),
                balance,
                balance - 11
            ),
            ("usage_not_charged", "request req-a0".to_owned(), 0, 0),
        ]
    );

    // A dead letter waiting past the threshold.
    let mut bad = record("req-dl", user, key);
    bad.output_tokens = -1;
    report(&mut c, vec![bad]).await;
    let later = audit::audit(&w.store, now + 7_200_000, 3_600_000)
        .await
        .unwrap();
    assert!(
        later
            .breaches
            .iter()
            .any(|b| b.invariant == "dead_letter_waiting"),
        "{:?}",
        later.breaches
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
