//! A `ReportUsage` batch charged in one transaction with a savepoint per record, on
//! SQLite and Postgres, through the control plane's handler (`billing::report_usage`)
//! over a real database:
//!
//! - a record refused for good (its key is another user's; a value the database
//!   refuses) costs only itself: the good records around it are charged exactly once,
//!   it is dead-lettered, and nothing of its partial charge stays;
//! - a batch replayed in full changes nothing and is acknowledged again;
//! - a transient failure of one record in the middle keeps the others; the record is
//!   charged when it is sent again;
//! - a commit that fails acknowledges nothing, dead-letters nothing and stores nothing;
//!   the batch sent again is charged once.
//!
//! Faults come from triggers the test adds to the database: a statement refused for a
//! request id (SQLite `RAISE(ABORT)`, Postgres SQLSTATE 23514), a transient error
//! (SQLite "malformed JSON", Postgres deadlock 40P01) and a failure at COMMIT (a
//! deferred foreign key on SQLite, a deferred constraint trigger raising "disk full"
//! 53100 on Postgres).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use tollgate_control_plane::billing::{BillingSettings, report_usage};
use tollgate_control_plane::events::{Invalidation, Invalidations, Scope};
use tollgate_control_plane::metrics::Metrics;
use tollgate_control_plane::model::{NewApiKey, NewUser, Page, UsageFilter};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::UserRole;
use tollgate_shared::now_ms;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_tests::db::TestDb;
use tollgate_tests::{Backend, on_both_backends};

on_both_backends!(
    a_refused_record_costs_only_itself,
    a_batch_replayed_in_full_is_charged_once,
    a_transient_failure_keeps_the_others,
    a_failed_commit_acknowledges_nothing,
);

/// gpt-5 at the seeded price: 1000 input, 200 output.
const COST: i64 = 3_250_000;
const BALANCE: i64 = 10_000_000_000;

struct World {
    db: TestDb,
    store: Store,
    bus: Invalidations,
    metrics: Metrics,
    user: i64,
    key: i64,
    /// Another user's key: a record naming it for `user` can never be charged.
    other_key: i64,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (user, key) = user_and_key(&store, "payer", BALANCE).await;
        let (_, other_key) = user_and_key(&store, "other", BALANCE).await;
        Self {
            db,
            store,
            bus: Invalidations::new(),
            metrics: Metrics::new(),
            user,
            key,
            other_key,
        }
    }

    fn record(&self, request_id: &str) -> pb::UsageReport {
        pb::UsageReport {
            request_id: request_id.into(),
            key_id: self.key,
            user_id: self.user,
            account_id: 1,
            model: "gpt-5".into(),
            upstream_model: "gpt-5".into(),
            input_tokens: 1000,
            output_tokens: 200,
            billing_mode: "balance".into(),
            rate_multiplier: "1".into(),
            account_cost_multiplier: "1".into(),
            started_at_ms: now_ms(),
            ..Default::default()
        }
    }

    async fn report(
        &self,
        records: Vec<pb::UsageReport>,
    ) -> tollgate_control_plane::error::Result<pb::ReportUsageResponse> {
        report_usage(
            &self.store,
            &self.bus,
            &BillingSettings::default(),
            &self.metrics.billing,
            records,
            now_ms(),
        )
        .await
    }

    async fn balance(&self) -> i64 {
        self.store.get_user(self.user).await.unwrap().balance_nanos
    }

    /// Request ids stored for the payer, sorted.
    async fn stored(&self) -> Vec<String> {
        let filter = UsageFilter {
            user_id: Some(self.user),
            ..UsageFilter::default()
        };
        let page = Page {
            after_id: 0,
            limit: 1000,
        };
        let rows = self.store.query_usage(&filter, page).await.unwrap().0.items;
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.request_id).collect();
        ids.sort();
        ids
    }

    async fn dead_letters(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .store
            .list_dead_letters(true, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.request_id)
            .collect();
        ids.sort();
        ids
    }

    /// Runs statements on a connection of the test's own (triggers the store's pool
    /// then sees).
    async fn sql(&self, statements: &[&str]) {
        let mut conn = sqlx::AnyConnection::connect(&self.db.url).await.unwrap();
        for s in statements {
            sqlx::raw_sql(s).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

async fn user_and_key(store: &Store, name: &str, balance: i64) -> (i64, i64) {
    let user = store
        .create_user(NewUser {
            email: format!("{name}@example.com"),
            name: name.into(),
            role: UserRole::User,
            concurrency: 5,
            notes: String::new(),
            initial_balance_nanos: balance,
        })
        .await
        .unwrap();
    let key = store
        .create_key(NewApiKey {
            user_id: user.id,
            name: "k".into(),
            group_id: None,
            key_hash: format!("hash-of-{name}"),
            key_hint: "sk-…".into(),
            ip_allow: vec![],
            ip_deny: vec![],
            quota_nanos: 0,
            expires_at_ms: None,
        })
        .await
        .unwrap();
    (user.id, key.id)
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn dead_lettered(resp: &pb::ReportUsageResponse) -> Vec<String> {
    sorted(
        resp.dead_lettered
            .iter()
            .map(|d| d.request_id.clone())
            .collect(),
    )
}

/// A trigger refusing (for good) the usage row of request ids starting with `refused`.
async fn refuse_by_trigger(w: &World, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            w.sql(&["CREATE TRIGGER refuse AFTER INSERT ON usage_logs \
                     WHEN NEW.request_id LIKE 'refused%' \
                     BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"])
                .await
        }
        Backend::Postgres => {
            w.sql(&[
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = '23514'; END $$",
                "CREATE TRIGGER refuse AFTER INSERT ON usage_logs FOR EACH ROW \
                 WHEN (NEW.request_id LIKE 'refused%') EXECUTE FUNCTION refuse()",
            ])
            .await
        }
    }
}

async fn a_refused_record_costs_only_itself(backend: Backend) {
    let w = World::new(backend).await;
    refuse_by_trigger(&w, backend).await;
    // Its usage row and balance charge are written before its key is found to be
    // another user's: its savepoint must undo them.
    let mut wrong_key = w.record("wrong-key");
    wrong_key.key_id = w.other_key;
    let batch = vec![
        w.record("good-1"),
        wrong_key,
        w.record("refused-1"),
        w.record("good-2"),
    ];
    let resp = w.report(batch).await.unwrap();
    assert_eq!(
        sorted(resp.acked_request_ids.clone()),
        ids(&["good-1", "good-2"])
    );
    assert_eq!(dead_lettered(&resp), ids(&["refused-1", "wrong-key"]));
    assert_eq!(w.stored().await, ids(&["good-1", "good-2"]));
    assert_eq!(w.balance().await, BALANCE - 2 * COST);
    assert_eq!(w.dead_letters().await, ids(&["refused-1", "wrong-key"]));

    // The data plane's next batch (after a lost answer) changes nothing.
    let again = vec![
        w.record("good-2"),
        w.record("refused-1"),
        w.record("good-1"),
    ];
    let resp = w.report(again).await.unwrap();
    assert_eq!(
        sorted(resp.acked_request_ids.clone()),
        ids(&["good-1", "good-2"])
    );
    assert_eq!(dead_lettered(&resp), ids(&["refused-1"]));
    assert_eq!(w.balance().await, BALANCE - 2 * COST);
    assert_eq!(w.dead_letters().await, ids(&["refused-1", "wrong-key"]));
    w.finish().await;
}

async fn a_batch_replayed_in_full_is_charged_once(backend: Backend) {
    let w = World::new(backend).await;
    let mut rx = w.bus.subscribe();
    // The last record takes the balance to zero: the user is invalidated once the batch
    // committed.
    let mut last = w.record("r-3");
    // gpt-5 input is 1_250 nano-USD a token.
    assert_eq!((BALANCE - 2 * COST) % 1_250, 0);
    last.input_tokens = (BALANCE - 2 * COST) / 1_250;
    last.output_tokens = 0;
    // A record twice in one batch is charged once and acknowledged twice.
    let batch = vec![w.record("r-1"), w.record("r-2"), w.record("r-1"), last];
    for round in 0..2 {
        let resp = w.report(batch.clone()).await.unwrap();
        assert_eq!(
            sorted(resp.acked_request_ids),
            ids(&["r-1", "r-1", "r-2", "r-3"]),
            "round {round}"
        );
        assert!(resp.dead_lettered.is_empty(), "{:?}", resp.dead_lettered);
        assert_eq!(w.stored().await, ids(&["r-1", "r-2", "r-3"]));
        assert_eq!(w.balance().await, 0, "round {round}");
        if round == 0 {
            assert_eq!(
                rx.try_recv().unwrap(),
                Invalidation {
                    scope: Scope::User,
                    ids: vec![w.user]
                }
            );
        }
        // A replay changed nothing, so it invalidates nothing.
        assert!(rx.try_recv().is_err(), "round {round}");
    }
    w.finish().await;
}

async fn a_transient_failure_keeps_the_others(backend: Backend) {
    let w = World::new(backend).await;
    // A statement error that is neither the database being away nor the record's data
    // for good: the record is retried. On Postgres it aborts the transaction until the
    // savepoint is rolled back, so the records after it prove the rollback.
    match backend {
        Backend::Sqlite => {
            w.sql(&["CREATE TRIGGER flaky AFTER INSERT ON usage_logs \
                     WHEN NEW.request_id LIKE 'flaky%' \
                     BEGIN SELECT json(NEW.request_id); END"])
                .await
        }
        Backend::Postgres => {
            w.sql(&[
                "CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'a deadlock (a test trigger)' USING ERRCODE = '40P01'; END $$",
                "CREATE TRIGGER flaky AFTER INSERT ON usage_logs FOR EACH ROW \
                 WHEN (NEW.request_id LIKE 'flaky%') EXECUTE FUNCTION flaky()",
            ])
            .await
        }
    }
    let batch = vec![w.record("a"), w.record("flaky"), w.record("b")];
    let resp = w.report(batch.clone()).await.unwrap();
    assert_eq!(sorted(resp.acked_request_ids), ids(&["a", "b"]));
    assert!(resp.dead_lettered.is_empty(), "{:?}", resp.dead_lettered);
    assert_eq!(w.stored().await, ids(&["a", "b"]));
    assert_eq!(w.balance().await, BALANCE - 2 * COST);
    assert!(w.dead_letters().await.is_empty());

    // The fault clears; the data plane sends the batch again.
    match backend {
        Backend::Sqlite => w.sql(&["DROP TRIGGER flaky"]).await,
        Backend::Postgres => w.sql(&["DROP TRIGGER flaky ON usage_logs"]).await,
    }
    let resp = w.report(batch).await.unwrap();
    assert_eq!(sorted(resp.acked_request_ids), ids(&["a", "b", "flaky"]));
    assert_eq!(w.stored().await, ids(&["a", "b", "flaky"]));
    assert_eq!(w.balance().await, BALANCE - 3 * COST);
    w.finish().await;
}

async fn a_failed_commit_acknowledges_nothing(backend: Backend) {
    let w = World::new(backend).await;
    // A batch's statements all succeed; its COMMIT fails when it holds a `doomed` row.
    match backend {
        Backend::Sqlite => {
            w.sql(&[
                "CREATE TABLE doom_parent (id INTEGER PRIMARY KEY)",
                "CREATE TABLE doom (parent INTEGER \
                 REFERENCES doom_parent (id) DEFERRABLE INITIALLY DEFERRED)",
                "CREATE TRIGGER doom AFTER INSERT ON usage_logs \
                 WHEN NEW.request_id LIKE 'doomed%' \
                 BEGIN INSERT INTO doom (parent) VALUES (-1); END",
            ])
            .await
        }
        Backend::Postgres => {
            w.sql(&[
                "CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'disk full at commit (a test trigger)' USING ERRCODE = '53100'; \
                 END $$",
                "CREATE CONSTRAINT TRIGGER doom AFTER INSERT ON usage_logs \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
                 WHEN (NEW.request_id LIKE 'doomed%') EXECUTE FUNCTION doom()",
            ])
            .await
        }
    }
    let mut rx = w.bus.subscribe();
    let mut malformed = w.record("bad");
    malformed.output_tokens = -1;
    let batch = vec![
        w.record("ok-1"),
        w.record("doomed"),
        malformed,
        w.record("ok-2"),
    ];
    let err = w.report(batch.clone()).await.unwrap_err();
    println!("the commit failed: {err}");
    // Nothing was acknowledged (the call failed), and nothing is stored: no usage row,
    // no charge, no dead letter.
    assert!(w.stored().await.is_empty());
    assert_eq!(w.balance().await, BALANCE);
    assert!(w.dead_letters().await.is_empty());
    // Any invalidation sent for it is harmless; none is needed (nothing changed).
    while rx.try_recv().is_ok() {}

    // The fault clears; the data plane sends the same batch again: charged once.
    match backend {
        Backend::Sqlite => w.sql(&["DROP TRIGGER doom"]).await,
        Backend::Postgres => w.sql(&["DROP TRIGGER doom ON usage_logs"]).await,
    }
    let resp = w.report(batch).await.unwrap();
    assert_eq!(
        sorted(resp.acked_request_ids.clone()),
        ids(&["doomed", "ok-1", "ok-2"])
    );
    assert_eq!(dead_lettered(&resp), ids(&["bad"]));
    assert_eq!(w.stored().await, ids(&["doomed", "ok-1", "ok-2"]));
    assert_eq!(w.balance().await, BALANCE - 3 * COST);
    assert_eq!(w.dead_letters().await, ids(&["bad"]));
    w.finish().await;
}
