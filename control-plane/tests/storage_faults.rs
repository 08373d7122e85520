//! Fault injection on the store: a full disk, a read-only database, Postgres stopped and
//! started again. What must hold through every fault: a write that reported success is
//! on disk (no acknowledged usage record missing, no record charged twice, an Admin
//! write either failed or persisted), and writes succeed again once the fault clears,
//! without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;

use faults::*;

/// A 4 MiB filesystem filled to the last byte, then given back a little at a time (so
/// some writes fit and the next ones hit the full disk again), then freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_loses_nothing_acknowledged_and_recovers() {
    let Some(fs) = SmallFs::mount(4) else {
        return;
    };
    let url = format!("sqlite://{}", fs.path().join("tollgate.db").display());
    let store = connect(&url).await;
    let books = Books::open(&store).await;

    let filler = fs.fill();
    let mut during = Vec::new();
    let mut admin = Vec::new();
    for step in 0..4 {
        during.push(books.charge_many(&store, &format!("full{step}"), 10).await);
        admin.push(books.admin_writes(&store, &format!("full{step}"), 3).await);
        filler.release(96 * 1024);
    }
    let acked: usize = during.iter().map(|r| r.acked.len()).sum();
    let failed: usize = during.iter().map(|r| r.errors.len()).sum();
    println!("disk full: {acked} of 40 usage records acknowledged, {failed} refused");
    assert!(
        failed > 0,
        "a full disk failed no write: the test filled nothing"
    );
    for error in during.iter().flat_map(|r| &r.errors) {
        assert!(error.contains("database is unavailable"), "{error}");
    }
    drop(filler);

    // Space is back: the same store (no restart) writes again.
    let after = books.charge_many(&store, "after", 10).await;
    assert_eq!(
        after.acked.len(),
        10,
        "writes failed after space was freed: {:?}",
        after.errors
    );
    let admin_after = books.admin_writes(&store, "after", 2).await;
    assert!(admin_after.errors.is_empty(), "{admin_after:?}");
    store.close().await;

    // A fresh store sees every acknowledged write, each once.
    let fresh = connect(&url).await;
    let rounds: Vec<&Round> = during.iter().chain([&after]).collect();
    books.check(&fresh, &rounds).await;
    let admin_rounds: Vec<&AdminRound> = admin.iter().chain([&admin_after]).collect();
    books.check_admin(&fresh, &admin_rounds).await;
    fresh.close().await;
}
