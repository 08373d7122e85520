//! Both backends start: migrations apply on SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDb};

#[tokio::test]
async fn migrations_apply_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        store.ping().await.unwrap();
        store.close().await;
        // A second connect finds the migrations applied and does nothing.
        let again = db.store().await;
        again.close().await;
        db.cleanup().await;
    }
}
