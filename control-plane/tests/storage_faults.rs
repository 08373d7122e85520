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

/// The same full disk under usage batches of 8 (one transaction each, the commit at
/// the end, where SQLite writes the WAL and finds no space): what was acknowledged is
/// on disk, each record once, the balance exact — a batch whose commit failed
/// acknowledged nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_under_batches_acknowledges_only_commits() {
    let Some(fs) = SmallFs::mount(4) else {
        return;
    };
    let url = format!("sqlite://{}", fs.path().join("tollgate.db").display());
    let store = connect(&url).await;
    let books = Books::open(&store).await;

    let filler = fs.fill();
    let mut during = Vec::new();
    for step in 0..8 {
        during.push(books.charge_batch(&store, &format!("full{step}"), 8).await);
        if step % 2 == 1 {
            filler.release(96 * 1024);
        }
    }
    let failed = during.iter().filter(|r| r.acked.is_empty()).count();
    println!("disk full: {failed} of 8 batches refused");
    assert!(
        failed > 0,
        "a full disk failed no batch: the test filled nothing"
    );
    for error in during.iter().flat_map(|r| &r.errors) {
        assert!(error.contains("database is unavailable"), "{error}");
    }
    drop(filler);

    let after = books.charge_batch(&store, "after", 8).await;
    assert_eq!(after.acked.len(), 8, "{:?}", after.errors);
    store.close().await;

    let fresh = connect(&url).await;
    let rounds: Vec<&Round> = during.iter().chain([&after]).collect();
    books.check(&fresh, &rounds).await;
    fresh.close().await;
}

/// The database turned read-only under a running store (as a failover to a standby or
/// an operator's disk-full guard does), then writable again. SQLite's own read-only
/// case cannot be made at run time: a filesystem is not remounted read-only while
/// SQLite holds its files open for writing, and the disk-full test covers its writes
/// failing underneath.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_refuses_writes_and_recovers() {
    let Some(pg) = postgres::PgCluster::start() else {
        return;
    };
    let store = connect(&pg.url()).await;
    let books = Books::open(&store).await;
    let before = books.charge_many(&store, "before", 3).await;
    assert_eq!(before.acked.len(), 3, "{before:?}");

    pg.set_read_only(true);
    // A configuration reload reaches the server's sessions as they next run a command.
    // Rounds until one is refused whole; the earlier ones are checked too.
    let rounds = std::sync::Mutex::new(Vec::new());
    let probe = |tag: &'static str| {
        let (books, store, rounds) = (&books, &store, &rounds);
        move || async move {
            let n = rounds.lock().unwrap().len();
            let round = books.charge_many(store, &format!("{tag}{n}"), 5).await;
            let all = if tag == "ro" {
                round.acked.is_empty()
            } else {
                round.acked.len() == 5
            };
            rounds.lock().unwrap().push(round);
            all.then_some(())
        }
    };
    let wait = std::time::Duration::from_secs(10);
    tollgate_tests::eventually_some("writes refused", wait, probe("ro")).await;
    let during = rounds.lock().unwrap().pop().unwrap();
    let admin = books.admin_writes(&store, "ro", 2).await;
    pg.set_read_only(false);
    assert!(
        admin.created.is_empty() && admin.notes_acked.is_none(),
        "{admin:?}"
    );
    for error in during.errors.iter().chain(&admin.errors) {
        assert!(error.contains("database is unavailable"), "{error}");
    }

    tollgate_tests::eventually_some("writes accepted", wait, probe("after")).await;
    let admin_after = books.admin_writes(&store, "after", 1).await;
    assert!(admin_after.errors.is_empty(), "{admin_after:?}");
    let rounds = rounds.into_inner().unwrap();
    let all: Vec<&Round> = [&before, &during].into_iter().chain(&rounds).collect();
    books.check(&store, &all).await;
    books.check_admin(&store, &[&admin, &admin_after]).await;
    store.close().await;
}

/// A Postgres of the test's own, stopped under a running store and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_loses_nothing_and_recovers() {
    let Some(pg) = postgres::PgCluster::start() else {
        return;
    };
    let store = connect(&pg.url()).await;
    let books = Books::open(&store).await;
    let before = books.charge_many(&store, "before", 3).await;
    assert_eq!(before.acked.len(), 3, "{before:?}");

    pg.down();
    let during = books.charge_many(&store, "down", 2).await;
    let admin = books.admin_writes(&store, "down", 1).await;
    assert!(
        during.acked.is_empty(),
        "acknowledged with Postgres down: {during:?}"
    );
    assert!(
        admin.created.is_empty() && admin.notes_acked.is_none(),
        "{admin:?}"
    );
    for error in during.errors.iter().chain(&admin.errors) {
        assert!(error.contains("database is unavailable"), "{error}");
    }
    pg.up();

    let after = books.charge_many(&store, "after", 5).await;
    assert_eq!(
        after.acked.len(),
        5,
        "no recovery without a restart: {:?}",
        after.errors
    );
    let admin_after = books.admin_writes(&store, "after", 1).await;
    assert!(admin_after.errors.is_empty(), "{admin_after:?}");
    // The records acknowledged before the stop survived it; none counted twice.
    books.check(&store, &[&before, &during, &after]).await;
    books.check_admin(&store, &[&admin, &admin_after]).await;
    store.close().await;
}

/// The Admin API over real gRPC with the control plane's data dir (its embedded SQLite)
/// on a small filesystem that fills up: each write either answers UNAVAILABLE with a
/// message that says so, or persists; the balance it serves is the one on disk; it
/// writes again once space is freed, and a restart finds exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_on_a_full_disk_fail_clearly_or_persist() {
    use tollgate_shared::proto::admin::v1 as pb;
    use tollgate_tests::cluster::{ControlPlane, Home, control_plane_config};

    let home = Home::embedded();
    let Some(mount) = SmallFs::mount_on(home.data_dir(), 8) else {
        return;
    };
    let config = control_plane_config(home.data_dir());
    let cp = ControlPlane::start_with(home, config).await;
    let mut admin = cp.admin();
    let create = |email: String| pb::CreateUserRequest {
        email,
        name: "n".into(),
        initial_balance_nanos: 1_000,
        ..Default::default()
    };
    let add_one = |user_id| pb::AdjustBalanceRequest {
        user_id,
        op: pb::BalanceOp::Add as i32,
        amount_nanos: 1,
        reason: "fault test".into(),
        allow_negative: false,
    };
    let payer = admin
        .create_user(create("payer@x.io".into()))
        .await
        .unwrap()
        .into_inner();

    let filler = mount.fill();
    let (mut added, mut created, mut refused) = (0, Vec::new(), Vec::new());
    for i in 0..24 {
        match admin.adjust_balance(add_one(payer.id)).await {
            Ok(_) => added += 1,
            Err(status) => refused.push(status),
        }
        match admin.create_user(create(format!("u{i}@x.io"))).await {
            Ok(u) => created.push(u.into_inner().email),
            Err(status) => refused.push(status),
        }
        if i % 6 == 5 {
            filler.release(64 * 1024);
        }
    }
    println!(
        "disk full: {added} balance adds and {} creates acknowledged, {} refused",
        created.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "a full disk refused no Admin write");
    for status in &refused {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("database is unavailable"),
            "{status:?}"
        );
    }
    drop(filler);

    // No restart: writes work again, and the balance served counts every acknowledged add.
    let after = admin
        .adjust_balance(add_one(payer.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.user.unwrap().balance_nanos, 1_000 + added + 1);

    // A restart reads the same from disk.
    let (home, config) = cp.stop().await;
    let cp = ControlPlane::start_with(home, config).await;
    let mut admin = cp.admin();
    let get = pb::GetUserRequest { id: payer.id };
    let on_disk = admin.get_user(get).await.unwrap().into_inner();
    assert_eq!(on_disk.balance_nanos, 1_000 + added + 1);
    let listed = admin
        .list_users(pb::ListUsersRequest {
            page: Some(pb::PageRequest {
                limit: 500,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    for email in &created {
        assert!(
            listed.iter().any(|u| &u.email == email),
            "{email} acknowledged, missing"
        );
    }
    cp.stop().await;
    drop(mount);
}
