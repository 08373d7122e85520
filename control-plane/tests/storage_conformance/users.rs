//! Users, their balances and the balance ledger.

use tollgate_control_plane::Error;
use tollgate_control_plane::model::{BalanceOp, Page, UserPatch};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::{UserRole, UserStatus};
use tollgate_shared::now_ms;

use crate::fixtures::{
    assert_already_exists, assert_invalid, assert_not_found, new_user, page, walk,
};

pub(crate) async fn case_user_create_get_and_email_unique(store: &Store) {
    let before = now_ms();
    let u = store.create_user(new_user("a@x.io")).await.unwrap();
    assert_eq!(u.email, "a@x.io");
    assert_eq!(u.name, "name of a@x.io");
    assert_eq!(u.role, UserRole::User);
    assert_eq!(u.status, UserStatus::Active);
    assert_eq!(u.balance_nanos, 0);
    assert_eq!(u.concurrency, 5);
    assert!(u.created_at_ms >= before && u.updated_at_ms == u.created_at_ms);
    assert_eq!(store.get_user(u.id).await.unwrap(), u);

    assert_already_exists(store.create_user(new_user("a@x.io")).await);
    assert_not_found(store.get_user(999_999).await, "user 999999");

    store.delete_user(u.id, true).await.unwrap();
    assert_not_found(store.get_user(u.id).await, &format!("user {}", u.id));
    assert_not_found(
        store.delete_user(u.id, true).await,
        &format!("user {}", u.id),
    );
    assert_not_found(
        store.update_user(u.id, UserPatch::default()).await,
        &format!("user {}", u.id),
    );
    // A soft-deleted user frees the email.
    let again = store.create_user(new_user("a@x.io")).await.unwrap();
    assert_ne!(again.id, u.id);
}

pub(crate) async fn case_user_initial_balance_is_ledgered(store: &Store) {
    let mut nu = new_user("rich@x.io");
    nu.initial_balance_nanos = 5_000_000_000;
    let rich = store.create_user(nu).await.unwrap();
    assert_eq!(rich.balance_nanos, 5_000_000_000);
    let ledger = store.list_ledger(rich.id, Page::default()).await.unwrap();
    assert_eq!(ledger.items.len(), 1);
    let e = &ledger.items[0];
    assert_eq!(
        (
            e.kind.as_str(),
            e.delta_nanos,
            e.balance_after_nanos,
            e.user_id
        ),
        ("initial", 5_000_000_000, 5_000_000_000, rich.id)
    );

    let poor = store.create_user(new_user("poor@x.io")).await.unwrap();
    let ledger = store.list_ledger(poor.id, Page::default()).await.unwrap();
    assert!(ledger.items.is_empty());
    assert_eq!(ledger.next_after_id, None);
}

pub(crate) async fn case_user_list_pagination_and_status(store: &Store) {
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(
            store
                .create_user(new_user(&format!("u{i}@x.io")))
                .await
                .unwrap()
                .id,
        );
    }
    // One deleted, two disabled: 8 live users → pages of 3, 3, 2.
    store.delete_user(ids[4], true).await.unwrap();
    for id in [ids[1], ids[7]] {
        let patch = UserPatch {
            status: Some(UserStatus::Disabled),
            ..Default::default()
        };
        store.update_user(id, patch).await.unwrap();
    }
    let (all, pages) = walk(
        3,
        |p| async move { store.list_users(None, p).await.unwrap() },
    )
    .await;
    assert_eq!(pages, 3);
    let got: Vec<i64> = all.iter().map(|u| u.id).collect();
    let want: Vec<i64> = ids.iter().copied().filter(|id| *id != ids[4]).collect();
    assert_eq!(got, want, "ascending, no overlap, no gap, no deleted row");

    let disabled = store
        .list_users(Some(UserStatus::Disabled), Page::default())
        .await
        .unwrap();
    let got: Vec<i64> = disabled.items.iter().map(|u| u.id).collect();
    assert_eq!(got, vec![ids[1], ids[7]]);
    assert_eq!(disabled.next_after_id, None);
}

pub(crate) async fn case_user_update_patch(store: &Store) {
    let u = store.create_user(new_user("p@x.io")).await.unwrap();
    store.create_user(new_user("taken@x.io")).await.unwrap();
    let patch = UserPatch {
        name: Some("New Name".into()),
        concurrency: Some(9),
        ..Default::default()
    };
    let p = store.update_user(u.id, patch).await.unwrap();
    assert_eq!(p.name, "New Name");
    assert_eq!(p.concurrency, 9);
    assert_eq!(
        (&p.email, p.role, p.status, &p.notes, p.balance_nanos),
        (&u.email, u.role, u.status, &u.notes, u.balance_nanos)
    );
    assert!(p.updated_at_ms >= u.updated_at_ms);
    assert_eq!(p.created_at_ms, u.created_at_ms);

    let patch = UserPatch {
        email: Some("taken@x.io".into()),
        ..Default::default()
    };
    assert_already_exists(store.update_user(u.id, patch).await);

    let patch = UserPatch {
        email: Some("q@x.io".into()),
        role: Some(UserRole::Admin),
        notes: Some("vip".into()),
        ..Default::default()
    };
    let q = store.update_user(u.id, patch).await.unwrap();
    assert_eq!(
        (q.email.as_str(), q.role, q.notes.as_str()),
        ("q@x.io", UserRole::Admin, "vip")
    );
    assert_eq!(q.name, "New Name");
    assert_eq!(store.get_user(u.id).await.unwrap(), q);
    assert_not_found(
        store.update_user(424_242, UserPatch::default()).await,
        "user 424242",
    );
}

pub(crate) async fn case_balance_ops_and_ledger(store: &Store) {
    let u = store.create_user(new_user("b@x.io")).await.unwrap();
    let (after_add, e1) = store
        .adjust_balance(u.id, BalanceOp::Add, 100, "top-up", true)
        .await
        .unwrap();
    assert_eq!(after_add.balance_nanos, 100);
    let (_, e2) = store
        .adjust_balance(u.id, BalanceOp::Subtract, 30, "refund", true)
        .await
        .unwrap();
    let (after_set, e3) = store
        .adjust_balance(u.id, BalanceOp::Set, 1000, "correction", true)
        .await
        .unwrap();
    assert_eq!(after_set.balance_nanos, 1000);
    let (after_sub, e4) = store
        .adjust_balance(u.id, BalanceOp::Subtract, 1500, "may go negative", true)
        .await
        .unwrap();
    assert_eq!(after_sub.balance_nanos, -500);
    let summary: Vec<(&str, i64, i64, &str)> = [&e1, &e2, &e3, &e4]
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.delta_nanos,
                e.balance_after_nanos,
                e.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("add", 100, 100, "top-up"),
            ("subtract", -30, 70, "refund"),
            ("set", 930, 1000, "correction"),
            ("subtract", -1500, -500, "may go negative"),
        ]
    );
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, -500);

    // The ledger lists the same entries, oldest first, paginated.
    let (entries, pages) = walk(
        3,
        |p| async move { store.list_ledger(u.id, p).await.unwrap() },
    )
    .await;
    assert_eq!(pages, 2);
    assert_eq!(entries, vec![e1, e2, e3, e4]);

    // Below zero only when allowed; a refusal changes nothing and writes no ledger row.
    let refused = |r: Result<_, Error>| match r {
        Err(Error::FailedPrecondition(m)) => {
            assert!(
                m.contains("below zero") && m.contains("--allow-negative"),
                "{m}"
            )
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    };
    refused(
        store
            .adjust_balance(u.id, BalanceOp::Subtract, 1, "more", false)
            .await,
    );
    store
        .adjust_balance(u.id, BalanceOp::Add, 600, "top-up", false)
        .await
        .unwrap();
    refused(
        store
            .adjust_balance(u.id, BalanceOp::Subtract, 101, "too much", false)
            .await,
    );
    let (at_zero, _) = store
        .adjust_balance(u.id, BalanceOp::Subtract, 100, "to zero", false)
        .await
        .unwrap();
    assert_eq!(at_zero.balance_nanos, 0);
    let ledger = store
        .list_ledger(u.id, Page::default())
        .await
        .unwrap()
        .items;
    assert_eq!(ledger.len(), 6, "refusals leave no ledger row");
    store
        .adjust_balance(u.id, BalanceOp::Subtract, 500, "back below", true)
        .await
        .unwrap();

    assert_invalid(
        store
            .adjust_balance(u.id, BalanceOp::Add, -1, "x", true)
            .await,
        "amount_nanos",
    );
    assert_invalid(
        store
            .adjust_balance(u.id, BalanceOp::Subtract, i64::MAX, "overflow", true)
            .await,
        "amount_nanos",
    );
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, -500);
    for op in [BalanceOp::Add, BalanceOp::Subtract, BalanceOp::Set] {
        assert_not_found(
            store.adjust_balance(777, op, 1, "x", true).await,
            "user 777",
        );
    }
    assert_not_found(store.list_ledger(777, Page::default()).await, "user 777");
    store.delete_user(u.id, true).await.unwrap();
    assert_not_found(
        store
            .adjust_balance(u.id, BalanceOp::Add, 1, "x", true)
            .await,
        &format!("user {}", u.id),
    );
    assert_not_found(
        store.list_ledger(u.id, Page::default()).await,
        &format!("user {}", u.id),
    );
}

#[allow(clippy::disallowed_methods)]
pub(crate) async fn case_balance_concurrent_adds(store: &Store) {
    let u = store.create_user(new_user("c@x.io")).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=50_i64 {
        let store = store.clone();
        set.spawn(async move {
            store
                .adjust_balance(u.id, BalanceOp::Add, i, "concurrent", true)
                .await
                .unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let total: i64 = (1..=50).sum();
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, total);

    // Every ledger entry saw the balance exactly as its own add left it: sorted by
    // balance_after, each step is that entry's delta.
    let mut entries = store.list_ledger(u.id, page(0, 100)).await.unwrap().items;
    assert_eq!(entries.len(), 50);
    entries.sort_by_key(|e| e.balance_after_nanos);
    let mut running = 0;
    for e in &entries {
        running += e.delta_nanos;
        assert_eq!(e.balance_after_nanos, running);
    }
    assert_eq!(running, total);
}
