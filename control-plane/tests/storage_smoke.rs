//! Both backends start: migrations apply on SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate_tests::{Backend, TestDb, on_both_backends};

on_both_backends!(migrations_apply);

async fn migrations_apply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store.ping().await.unwrap();
    store.close().await;
    // A second connect finds the migrations applied and does nothing.
    let again = db.store().await;
    again.close().await;
}
