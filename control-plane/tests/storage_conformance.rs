//! Storage conformance suite: every case runs against SQLite and Postgres, so the one
//! `Store` implementation is proven on both dialects. Each `case_x` is generated as
//! `sqlite_case_x` and `postgres_case_x` by `conformance!` at the bottom.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestDb};
use sqlx::Connection;
use tollgate_control_plane::Error;
use tollgate_control_plane::model::{
    Account, AccountGroup, AccountPatch, ApiKey, BalanceOp, Credential, GroupPatch, KeyPatch,
    NewAccount, NewApiKey, NewGroup, NewSubscription, NewUser, Page, Price, UsageFilter,
    UsageRecord, UsageTotals, UserPatch,
};
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{
    AccountKind, AccountStatus, BillingMode, GroupKind, GroupStatus, KeyStatus, Platform,
    SubscriptionStatus, UserRole, UserStatus,
};
use tollgate_shared::now_ms;

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------- fixtures

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        name: format!("name of {email}"),
        role: UserRole::User,
        concurrency: 5,
        notes: String::new(),
        initial_balance_nanos: 0,
    }
}

fn new_group(name: &str, kind: GroupKind) -> NewGroup {
    NewGroup {
        name: name.to_owned(),
        platform: Platform::OpenAi,
        rate_multiplier: Multiplier::from_ppm(1_500_000).unwrap(),
        kind,
        daily_limit_nanos: 1,
        weekly_limit_nanos: 2,
        monthly_limit_nanos: 3,
        exclusive: true,
        description: "desc".to_owned(),
    }
}

fn new_key(user_id: i64, hash: &str) -> NewApiKey {
    NewApiKey {
        user_id,
        name: format!("key {hash}"),
        group_id: None,
        key_hash: hash.to_owned(),
        key_hint: "sk-...abcd".to_owned(),
        ip_allow: vec![],
        ip_deny: vec![],
        quota_nanos: 0,
        expires_at_ms: None,
    }
}

fn new_account(name: &str, groups: Vec<AccountGroup>) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        platform: Platform::OpenAi,
        base_url: "https://api.openai.com".to_owned(),
        credential: Credential::ApiKey {
            api_key: format!("sk-plaintext-secret-{name}"),
        },
        concurrency: 3,
        priority: 50,
        model_mapping: BTreeMap::from([("gpt-5".to_owned(), "gpt-5.1".to_owned())]),
        proxy_url: "http://proxyuser:proxypass@proxy.local:3128".to_owned(),
        user_agent: "ua/1".to_owned(),
        expires_at_ms: Some(4_000_000_000_000),
        chatgpt_account_id: "acct-1".to_owned(),
        cost_multiplier: Multiplier::from_ppm(800_000).unwrap(),
        notes: "n".to_owned(),
        groups,
    }
}

fn member(group_id: i64, priority: i32) -> AccountGroup {
    AccountGroup { group_id, priority }
}

fn usage(request_id: &str, created_at_ms: i64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        key_id: 1,
        user_id: 1,
        group_id: Some(1),
        subscription_id: None,
        account_id: 1,
        model: "gpt-5".to_owned(),
        upstream_model: "gpt-5-2025-08-07".to_owned(),
        input_tokens: 1000,
        output_tokens: 200,
        cached_tokens: 100,
        reasoning_tokens: 50,
        input_cost_nanos: 1_125_000,
        output_cost_nanos: 2_000_000,
        cached_cost_nanos: 12_500,
        total_cost_nanos: 3_137_500,
        actual_cost_nanos: 4_706_250,
        rate_multiplier: Multiplier::from_ppm(1_500_000).unwrap(),
        account_cost_multiplier: Multiplier::ONE,
        billing_mode: BillingMode::Balance,
        stream: true,
        duration_ms: 1234,
        first_token_ms: Some(321),
        user_agent: "codex".to_owned(),
        client_ip: "10.0.0.1".to_owned(),
        reasoning_effort: "high".to_owned(),
        estimated: false,
        created_at_ms,
    }
}

fn page(after_id: i64, limit: u32) -> Page {
    Page { after_id, limit }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::NotFound(m)) => assert_eq!(m, what),
        other => panic!("expected NotFound({what}), got {other:?}"),
    }
}

fn assert_already_exists<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::AlreadyExists(_))),
        "expected AlreadyExists, got {r:?}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>, field: &str) {
    match r {
        Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidArgument({field}), got {other:?}"),
    }
}

/// Walks every page; asserts no page is over the limit and the cursor only moves on.
async fn walk<T, F, Fut>(limit: u32, mut fetch: F) -> (Vec<T>, usize)
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = tollgate_control_plane::model::Paged<T>>,
{
    let mut all = Vec::new();
    let mut pages = 0;
    let mut after = 0;
    loop {
        let p = fetch(page(after, limit)).await;
        pages += 1;
        assert!(p.items.len() <= limit as usize);
        all.extend(p.items);
        match p.next_after_id {
            Some(next) => {
                assert!(next > after, "cursor must advance");
                after = next;
            }
            None => break,
        }
        assert!(pages < 100, "pagination does not terminate");
    }
    (all, pages)
}

/// A raw connection for checks and setups the API deliberately does not offer.
async fn raw_exec(url: &str, sql: &str) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

// ---------------------------------------------------------------- users

async fn case_user_create_get_and_email_unique(store: &Store) {
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

    store.delete_user(u.id).await.unwrap();
    assert_not_found(store.get_user(u.id).await, &format!("user {}", u.id));
    assert_not_found(store.delete_user(u.id).await, &format!("user {}", u.id));
    assert_not_found(
        store.update_user(u.id, UserPatch::default()).await,
        &format!("user {}", u.id),
    );
    // A soft-deleted user frees the email.
    let again = store.create_user(new_user("a@x.io")).await.unwrap();
    assert_ne!(again.id, u.id);
}

async fn case_user_initial_balance_is_ledgered(store: &Store) {
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

async fn case_user_list_pagination_and_status(store: &Store) {
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
    store.delete_user(ids[4]).await.unwrap();
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

async fn case_user_update_patch(store: &Store) {
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

async fn case_balance_ops_and_ledger(store: &Store) {
    let u = store.create_user(new_user("b@x.io")).await.unwrap();
    let (after_add, e1) = store
        .adjust_balance(u.id, BalanceOp::Add, 100, "top-up")
        .await
        .unwrap();
    assert_eq!(after_add.balance_nanos, 100);
    let (_, e2) = store
        .adjust_balance(u.id, BalanceOp::Subtract, 30, "refund")
        .await
        .unwrap();
    let (after_set, e3) = store
        .adjust_balance(u.id, BalanceOp::Set, 1000, "correction")
        .await
        .unwrap();
    assert_eq!(after_set.balance_nanos, 1000);
    let (after_sub, e4) = store
        .adjust_balance(u.id, BalanceOp::Subtract, 1500, "may go negative")
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

    assert_invalid(
        store.adjust_balance(u.id, BalanceOp::Add, -1, "x").await,
        "amount_nanos",
    );
    assert_invalid(
        store
            .adjust_balance(u.id, BalanceOp::Subtract, i64::MAX, "overflow")
            .await,
        "amount_nanos",
    );
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, -500);
    for op in [BalanceOp::Add, BalanceOp::Subtract, BalanceOp::Set] {
        assert_not_found(store.adjust_balance(777, op, 1, "x").await, "user 777");
    }
    assert_not_found(store.list_ledger(777, Page::default()).await, "user 777");
    store.delete_user(u.id).await.unwrap();
    assert_not_found(
        store.adjust_balance(u.id, BalanceOp::Add, 1, "x").await,
        &format!("user {}", u.id),
    );
    assert_not_found(
        store.list_ledger(u.id, Page::default()).await,
        &format!("user {}", u.id),
    );
}

#[allow(clippy::disallowed_methods)]
async fn case_balance_concurrent_adds(store: &Store) {
    let u = store.create_user(new_user("c@x.io")).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=50_i64 {
        let store = store.clone();
        set.spawn(async move {
            store
                .adjust_balance(u.id, BalanceOp::Add, i, "concurrent")
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

// ---------------------------------------------------------------- groups

async fn case_group_crud_and_name_unique(store: &Store) {
    let g = store
        .create_group(new_group("team", GroupKind::Standard))
        .await
        .unwrap();
    assert_eq!(g.name, "team");
    assert_eq!(g.platform, Platform::OpenAi);
    assert_eq!(g.rate_multiplier.ppm(), 1_500_000);
    assert_eq!(g.kind, GroupKind::Standard);
    assert_eq!(
        (
            g.daily_limit_nanos,
            g.weekly_limit_nanos,
            g.monthly_limit_nanos
        ),
        (1, 2, 3)
    );
    assert_eq!(g.status, GroupStatus::Active);
    assert!(g.exclusive);
    assert_eq!(g.description, "desc");
    assert_eq!(store.get_group(g.id).await.unwrap(), g);
    assert_already_exists(
        store
            .create_group(new_group("team", GroupKind::Subscription))
            .await,
    );

    // A zero multiplier is stored as zero (free), not turned into one.
    let patch = GroupPatch {
        rate_multiplier: Some(Multiplier::ZERO),
        exclusive: Some(false),
        ..Default::default()
    };
    let p = store.update_group(g.id, patch).await.unwrap();
    assert_eq!(p.rate_multiplier, Multiplier::ZERO);
    assert!(!p.exclusive);
    assert_eq!(
        (
            &p.name,
            p.kind,
            p.daily_limit_nanos,
            p.status,
            &p.description
        ),
        (
            &g.name,
            g.kind,
            g.daily_limit_nanos,
            g.status,
            &g.description
        )
    );
    let patch = GroupPatch {
        name: Some("team2".into()),
        kind: Some(GroupKind::Subscription),
        daily_limit_nanos: Some(10),
        weekly_limit_nanos: Some(20),
        monthly_limit_nanos: Some(30),
        status: Some(GroupStatus::Disabled),
        description: Some("d2".into()),
        ..Default::default()
    };
    let p = store.update_group(g.id, patch).await.unwrap();
    assert_eq!(
        (
            p.name.as_str(),
            p.kind,
            p.daily_limit_nanos,
            p.weekly_limit_nanos,
            p.monthly_limit_nanos,
            p.status,
            p.description.as_str()
        ),
        (
            "team2",
            GroupKind::Subscription,
            10,
            20,
            30,
            GroupStatus::Disabled,
            "d2"
        )
    );
    assert_eq!(p.rate_multiplier, Multiplier::ZERO);

    let other = store
        .create_group(new_group("other", GroupKind::Standard))
        .await
        .unwrap();
    let clash = GroupPatch {
        name: Some("team2".into()),
        ..Default::default()
    };
    assert_already_exists(store.update_group(other.id, clash).await);

    store.delete_group(g.id).await.unwrap();
    let what = format!("group {}", g.id);
    assert_not_found(store.get_group(g.id).await, &what);
    assert_not_found(store.delete_group(g.id).await, &what);
    assert_not_found(store.update_group(g.id, GroupPatch::default()).await, &what);
    // The deleted group's name is free again.
    store
        .create_group(new_group("team2", GroupKind::Standard))
        .await
        .unwrap();
}

async fn case_group_list_pagination(store: &Store) {
    let mut ids = Vec::new();
    for i in 0..8 {
        let g = store
            .create_group(new_group(&format!("g{i}"), GroupKind::Standard))
            .await
            .unwrap();
        ids.push(g.id);
    }
    store.delete_group(ids[0]).await.unwrap();
    let (all, pages) = walk(3, |p| async move { store.list_groups(p).await.unwrap() }).await;
    // 7 live groups → 3, 3, 1.
    assert_eq!(pages, 3);
    let got: Vec<i64> = all.iter().map(|g| g.id).collect();
    assert_eq!(got, ids[1..].to_vec());
}

// ---------------------------------------------------------------- keys

async fn case_key_create_lookup_and_hash_unique(store: &Store) {
    let u = store.create_user(new_user("k@x.io")).await.unwrap();
    let g = store
        .create_group(new_group("kg", GroupKind::Standard))
        .await
        .unwrap();
    let mut nk = new_key(u.id, "hash-1");
    nk.group_id = Some(g.id);
    nk.ip_allow = vec!["10.0.0.0/8".into(), "192.168.1.1".into()];
    nk.ip_deny = vec!["10.0.0.7".into()];
    nk.quota_nanos = 5_000_000_000;
    nk.expires_at_ms = Some(4_000_000_000_000);
    let k = store.create_key(nk).await.unwrap();
    assert_eq!(k.user_id, u.id);
    assert_eq!(k.group_id, Some(g.id));
    assert_eq!(k.status, KeyStatus::Active);
    assert_eq!(k.ip_allow, vec!["10.0.0.0/8", "192.168.1.1"]);
    assert_eq!(k.ip_deny, vec!["10.0.0.7"]);
    assert_eq!((k.quota_nanos, k.quota_used_nanos), (5_000_000_000, 0));
    assert_eq!(k.expires_at_ms, Some(4_000_000_000_000));
    assert_eq!(k.key_hint, "sk-...abcd");
    assert_eq!(k.last_used_at_ms, None);
    assert_eq!(store.get_key(k.id).await.unwrap(), k);
    assert_eq!(
        store.get_key_by_hash("hash-1").await.unwrap(),
        Some(k.clone())
    );
    assert_eq!(store.get_key_by_hash("hash-unknown").await.unwrap(), None);

    assert_already_exists(store.create_key(new_key(u.id, "hash-1")).await);
    assert_not_found(store.create_key(new_key(9999, "hash-2")).await, "user 9999");
    let mut bad_group = new_key(u.id, "hash-3");
    bad_group.group_id = Some(8888);
    assert_not_found(store.create_key(bad_group).await, "group 8888");
    assert_not_found(store.get_key(123_456).await, "api key 123456");

    store.delete_key(k.id).await.unwrap();
    let what = format!("api key {}", k.id);
    assert_not_found(store.get_key(k.id).await, &what);
    assert_not_found(store.delete_key(k.id).await, &what);
    assert_eq!(store.get_key_by_hash("hash-1").await.unwrap(), None);
    // The hash of a deleted key stays reserved: a leaked key never comes back.
    assert_already_exists(store.create_key(new_key(u.id, "hash-1")).await);

    // Keys cannot be created for a deleted user or in a deleted group.
    store.delete_group(g.id).await.unwrap();
    let mut in_deleted = new_key(u.id, "hash-4");
    in_deleted.group_id = Some(g.id);
    assert_not_found(
        store.create_key(in_deleted).await,
        &format!("group {}", g.id),
    );
    store.delete_user(u.id).await.unwrap();
    assert_not_found(
        store.create_key(new_key(u.id, "hash-5")).await,
        &format!("user {}", u.id),
    );
}

async fn case_key_list_filters_and_pagination(store: &Store) {
    let a = store.create_user(new_user("ka@x.io")).await.unwrap();
    let b = store.create_user(new_user("kb@x.io")).await.unwrap();
    let g1 = store
        .create_group(new_group("kg1", GroupKind::Standard))
        .await
        .unwrap();
    let g2 = store
        .create_group(new_group("kg2", GroupKind::Standard))
        .await
        .unwrap();
    let mut by_user_group: BTreeMap<(i64, Option<i64>), Vec<i64>> = BTreeMap::new();
    let mut all_ids = Vec::new();
    for i in 0..12 {
        let user = if i % 2 == 0 { a.id } else { b.id };
        let group = match i % 3 {
            0 => None,
            1 => Some(g1.id),
            _ => Some(g2.id),
        };
        let mut nk = new_key(user, &format!("lh-{i}"));
        nk.group_id = group;
        let k = store.create_key(nk).await.unwrap();
        by_user_group.entry((user, group)).or_default().push(k.id);
        all_ids.push(k.id);
    }
    let deleted = all_ids.remove(5);
    store.delete_key(deleted).await.unwrap();
    for v in by_user_group.values_mut() {
        v.retain(|id| *id != deleted);
    }

    // 11 live keys, pages of 4 → 4, 4, 3.
    let (all, pages) = walk(4, |p| async move {
        store.list_keys(None, None, p).await.unwrap()
    })
    .await;
    assert_eq!(pages, 3);
    assert_eq!(all.iter().map(|k| k.id).collect::<Vec<_>>(), all_ids);

    let want = |f: &dyn Fn(i64, Option<i64>) -> bool| -> Vec<i64> {
        let mut v: Vec<i64> = by_user_group
            .iter()
            .filter(|((u, g), _)| f(*u, *g))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        v.sort_unstable();
        v
    };
    let ids = |keys: Vec<ApiKey>| keys.iter().map(|k| k.id).collect::<Vec<_>>();
    let by_a = store
        .list_keys(Some(a.id), None, Page::default())
        .await
        .unwrap();
    assert_eq!(ids(by_a.items), want(&|u, _| u == a.id));
    let by_g1 = store
        .list_keys(None, Some(g1.id), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(by_g1.items), want(&|_, g| g == Some(g1.id)));
    let by_b_g2 = store
        .list_keys(Some(b.id), Some(g2.id), Page::default())
        .await
        .unwrap();
    let expect = want(&|u, g| u == b.id && g == Some(g2.id));
    assert!(!expect.is_empty());
    assert_eq!(ids(by_b_g2.items), expect);
}

async fn case_key_patch_leaves_unspecified_fields(store: &Store) {
    let u = store.create_user(new_user("kp@x.io")).await.unwrap();
    let g = store
        .create_group(new_group("kpg", GroupKind::Standard))
        .await
        .unwrap();
    let g2 = store
        .create_group(new_group("kpg2", GroupKind::Standard))
        .await
        .unwrap();
    let mut nk = new_key(u.id, "kp-hash");
    nk.group_id = Some(g.id);
    nk.ip_allow = vec!["10.0.0.0/8".into()];
    nk.ip_deny = vec!["10.0.0.9".into()];
    nk.quota_nanos = 700;
    nk.expires_at_ms = Some(4_000_000_000_000);
    let k = store.create_key(nk).await.unwrap();

    let renamed = store
        .update_key(
            k.id,
            KeyPatch {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    let same_but_name = ApiKey {
        name: "renamed".into(),
        updated_at_ms: renamed.updated_at_ms,
        ..k.clone()
    };
    assert_eq!(renamed, same_but_name, "only the name may change");

    // Replacing one list leaves the other alone.
    let p = store
        .update_key(
            k.id,
            KeyPatch {
                ip_allow: Some(vec!["192.168.0.0/16".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.ip_allow, vec!["192.168.0.0/16"]);
    assert_eq!(p.ip_deny, vec!["10.0.0.9"]);
    let p = store
        .update_key(
            k.id,
            KeyPatch {
                ip_deny: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.ip_allow, vec!["192.168.0.0/16"]);
    assert!(p.ip_deny.is_empty());

    let p = store
        .update_key(
            k.id,
            KeyPatch {
                group_id: Some(Some(g2.id)),
                quota_nanos: Some(900),
                expires_at_ms: Some(4_100_000_000_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (p.group_id, p.quota_nanos, p.expires_at_ms),
        (Some(g2.id), 900, Some(4_100_000_000_000))
    );
    assert_eq!(p.name, "renamed");
    let p = store
        .update_key(
            k.id,
            KeyPatch {
                group_id: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.group_id, None);
    assert_eq!((p.quota_nanos, p.status), (900, KeyStatus::Active));
    assert_eq!(store.get_key(k.id).await.unwrap(), p);

    assert_not_found(
        store
            .update_key(
                k.id,
                KeyPatch {
                    group_id: Some(Some(5555)),
                    ..Default::default()
                },
            )
            .await,
        "group 5555",
    );
    assert_eq!(store.get_key(k.id).await.unwrap().group_id, None);
    assert_not_found(
        store.update_key(5555, KeyPatch::default()).await,
        "api key 5555",
    );
}

/// A key whose quota is used up, set up directly: charging is not a storage call here.
async fn exhausted_key(store: &Store, url: &str, hash: &str, quota: i64, used: i64) -> ApiKey {
    let u = store
        .create_user(new_user(&format!("{hash}@x.io")))
        .await
        .unwrap();
    let mut nk = new_key(u.id, hash);
    nk.quota_nanos = quota;
    let k = store.create_key(nk).await.unwrap();
    raw_exec(
        url,
        &format!(
            "UPDATE api_keys SET quota_used_nanos = {used}, status = 'quota_exhausted' \
             WHERE id = {}",
            k.id
        ),
    )
    .await;
    let k = store.get_key(k.id).await.unwrap();
    assert_eq!(
        (k.status, k.quota_used_nanos),
        (KeyStatus::QuotaExhausted, used)
    );
    k
}

async fn case_key_reset_quota_and_clear_expiration(store: &Store, url: &str) {
    let k = exhausted_key(store, url, "rq", 500, 500).await;
    let r = store.reset_key_quota(k.id).await.unwrap();
    assert_eq!(
        (r.status, r.quota_used_nanos, r.quota_nanos),
        (KeyStatus::Active, 0, 500)
    );

    // A disabled key stays disabled; only its usage is reset.
    let k = exhausted_key(store, url, "rq2", 500, 300).await;
    store
        .set_key_status(k.id, KeyStatus::Disabled)
        .await
        .unwrap();
    let r = store.reset_key_quota(k.id).await.unwrap();
    assert_eq!((r.status, r.quota_used_nanos), (KeyStatus::Disabled, 0));

    let u = store.create_user(new_user("exp@x.io")).await.unwrap();
    let mut nk = new_key(u.id, "exp-hash");
    nk.expires_at_ms = Some(1_000);
    let k = store.create_key(nk).await.unwrap();
    let k = store
        .set_key_status(k.id, KeyStatus::Expired)
        .await
        .unwrap();
    assert_eq!(k.status, KeyStatus::Expired);
    let c = store.clear_key_expiration(k.id).await.unwrap();
    assert_eq!((c.status, c.expires_at_ms), (KeyStatus::Active, None));

    let mut nk = new_key(u.id, "exp-hash-2");
    nk.expires_at_ms = Some(1_000);
    let k = store.create_key(nk).await.unwrap();
    store
        .set_key_status(k.id, KeyStatus::Disabled)
        .await
        .unwrap();
    let c = store.clear_key_expiration(k.id).await.unwrap();
    assert_eq!((c.status, c.expires_at_ms), (KeyStatus::Disabled, None));

    assert_not_found(store.reset_key_quota(4321).await, "api key 4321");
    assert_not_found(store.clear_key_expiration(4321).await, "api key 4321");
}

async fn case_key_quota_and_expiry_updates_reactivate(store: &Store, url: &str) {
    let quota = |q: i64| KeyPatch {
        quota_nanos: Some(q),
        ..Default::default()
    };
    let k = exhausted_key(store, url, "qa", 500, 500).await;
    // Not above what is used: still exhausted.
    let p = store.update_key(k.id, quota(500)).await.unwrap();
    assert_eq!((p.status, p.quota_nanos), (KeyStatus::QuotaExhausted, 500));
    let p = store.update_key(k.id, quota(400)).await.unwrap();
    assert_eq!(p.status, KeyStatus::QuotaExhausted);
    let p = store.update_key(k.id, quota(501)).await.unwrap();
    assert_eq!(
        (p.status, p.quota_nanos, p.quota_used_nanos),
        (KeyStatus::Active, 501, 500)
    );

    // 0 = unlimited reactivates too.
    let k = exhausted_key(store, url, "qb", 500, 600).await;
    let p = store.update_key(k.id, quota(0)).await.unwrap();
    assert_eq!(p.status, KeyStatus::Active);

    // A quota change does not re-enable a disabled key.
    let k = exhausted_key(store, url, "qc", 500, 500).await;
    store
        .set_key_status(k.id, KeyStatus::Disabled)
        .await
        .unwrap();
    let p = store.update_key(k.id, quota(0)).await.unwrap();
    assert_eq!(p.status, KeyStatus::Disabled);

    // Expiry: a past date keeps an expired key expired; a future one reactivates it.
    let u = store.create_user(new_user("qe@x.io")).await.unwrap();
    let mut nk = new_key(u.id, "qe-hash");
    nk.expires_at_ms = Some(1_000);
    let k = store.create_key(nk).await.unwrap();
    store
        .set_key_status(k.id, KeyStatus::Expired)
        .await
        .unwrap();
    let expiry = |t: i64| KeyPatch {
        expires_at_ms: Some(t),
        ..Default::default()
    };
    let p = store.update_key(k.id, expiry(2_000)).await.unwrap();
    assert_eq!(
        (p.status, p.expires_at_ms),
        (KeyStatus::Expired, Some(2_000))
    );
    let future = now_ms() + DAY_MS;
    let p = store.update_key(k.id, expiry(future)).await.unwrap();
    assert_eq!(
        (p.status, p.expires_at_ms),
        (KeyStatus::Active, Some(future))
    );
    // An expiry change does not lift quota exhaustion, and vice versa.
    let k = exhausted_key(store, url, "qd", 500, 500).await;
    let p = store.update_key(k.id, expiry(future)).await.unwrap();
    assert_eq!(p.status, KeyStatus::QuotaExhausted);
}

async fn case_key_status_and_touch(store: &Store) {
    let u = store.create_user(new_user("ks@x.io")).await.unwrap();
    let k = store.create_key(new_key(u.id, "ks-hash")).await.unwrap();
    let d = store
        .set_key_status(k.id, KeyStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(d.status, KeyStatus::Disabled);
    assert_eq!(
        store.get_key(k.id).await.unwrap().status,
        KeyStatus::Disabled
    );
    // Disabled keys are still found by hash: admission decides what to do with them.
    let by_hash = store.get_key_by_hash("ks-hash").await.unwrap().unwrap();
    assert_eq!(by_hash.status, KeyStatus::Disabled);
    let e = store.set_key_status(k.id, KeyStatus::Active).await.unwrap();
    assert_eq!(e.status, KeyStatus::Active);

    store.touch_key(k.id, 5_000).await.unwrap();
    assert_eq!(
        store.get_key(k.id).await.unwrap().last_used_at_ms,
        Some(5_000)
    );
    store.touch_key(k.id, 4_000).await.unwrap();
    assert_eq!(
        store.get_key(k.id).await.unwrap().last_used_at_ms,
        Some(5_000),
        "last use never moves backwards"
    );
    store.touch_key(k.id, 6_000).await.unwrap();
    assert_eq!(
        store.get_key(k.id).await.unwrap().last_used_at_ms,
        Some(6_000)
    );

    assert_not_found(store.touch_key(999, 1).await, "api key 999");
    assert_not_found(
        store.set_key_status(999, KeyStatus::Active).await,
        "api key 999",
    );
    store.delete_key(k.id).await.unwrap();
    let what = format!("api key {}", k.id);
    assert_not_found(store.set_key_status(k.id, KeyStatus::Active).await, &what);
    assert_not_found(store.touch_key(k.id, 7_000).await, &what);
}

// ---------------------------------------------------------------- accounts

async fn case_account_create_get_list(store: &Store) {
    let g1 = store
        .create_group(new_group("ag1", GroupKind::Standard))
        .await
        .unwrap();
    let g2 = store
        .create_group(new_group("ag2", GroupKind::Standard))
        .await
        .unwrap();
    let a = store
        .create_account(new_account(
            "a1",
            vec![member(g1.id, 10), member(g2.id, 20)],
        ))
        .await
        .unwrap();
    assert_eq!(a.kind, AccountKind::ApiKey);
    assert_eq!(
        a.credential,
        Credential::ApiKey {
            api_key: "sk-plaintext-secret-a1".into()
        }
    );
    assert_eq!(a.proxy_url, "http://proxyuser:proxypass@proxy.local:3128");
    assert_eq!(
        a.model_mapping.get("gpt-5").map(String::as_str),
        Some("gpt-5.1")
    );
    assert_eq!(a.status, AccountStatus::Active);
    assert!(a.schedulable);
    assert_eq!(a.cost_multiplier.ppm(), 800_000);
    assert_eq!((a.concurrency, a.priority), (3, 50));
    assert_eq!(a.expires_at_ms, Some(4_000_000_000_000));
    assert_eq!(a.chatgpt_account_id, "acct-1");
    assert!(a.codex_usage.is_empty());
    assert_eq!(a.groups, vec![member(g1.id, 10), member(g2.id, 20)]);
    assert_eq!(store.get_account(a.id).await.unwrap(), a);

    let mut no_proxy = new_account("a2", vec![member(g2.id, 5)]);
    no_proxy.proxy_url = String::new();
    no_proxy.credential = Credential::OAuth {
        access_token: "at".into(),
        refresh_token: "rt".into(),
        id_token: String::new(),
    };
    let b = store.create_account(no_proxy).await.unwrap();
    assert_eq!(b.proxy_url, "");
    assert_eq!(b.kind, AccountKind::OAuth);
    let c = store
        .create_account(new_account("a3", vec![]))
        .await
        .unwrap();
    assert!(c.groups.is_empty());
    store
        .update_account(
            c.id,
            AccountPatch {
                status: Some(AccountStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let ids = |v: Vec<Account>| v.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_group_accounts(Some(g1.id)).await.unwrap()),
        vec![a.id]
    );
    assert_eq!(
        ids(store.list_group_accounts(Some(g2.id)).await.unwrap()),
        vec![a.id, b.id]
    );
    assert_eq!(
        ids(store.list_group_accounts(None).await.unwrap()),
        vec![a.id, b.id, c.id]
    );
    let listed = store.list_group_accounts(Some(g2.id)).await.unwrap();
    assert_eq!(listed[0], a, "listed accounts carry all their groups");

    let (all, pages) = walk(2, |p| async move {
        store.list_accounts(None, None, p).await.unwrap()
    })
    .await;
    assert_eq!(ids(all), vec![a.id, b.id, c.id]);
    assert_eq!(pages, 2);
    let in_g2 = store
        .list_accounts(Some(g2.id), None, Page::default())
        .await
        .unwrap();
    assert_eq!(ids(in_g2.items), vec![a.id, b.id]);
    let disabled = store
        .list_accounts(None, Some(AccountStatus::Disabled), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(disabled.items), vec![c.id]);
    let none = store
        .list_accounts(Some(g1.id), Some(AccountStatus::Disabled), Page::default())
        .await
        .unwrap();
    assert!(none.items.is_empty());

    assert_not_found(
        store
            .create_account(new_account("bad", vec![member(7777, 1)]))
            .await,
        "group 7777",
    );
    // The failed create left no account behind.
    assert_eq!(store.list_group_accounts(None).await.unwrap().len(), 3);
    assert_invalid(
        store
            .create_account(new_account("dup", vec![member(g1.id, 1), member(g1.id, 2)]))
            .await,
        "groups",
    );
    assert_not_found(store.get_account(7777).await, "account 7777");

    store.delete_account(a.id).await.unwrap();
    let what = format!("account {}", a.id);
    assert_not_found(store.get_account(a.id).await, &what);
    assert_not_found(store.delete_account(a.id).await, &what);
    assert!(
        store
            .list_group_accounts(Some(g1.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.list_group_accounts(None).await.unwrap()),
        vec![b.id, c.id]
    );
    // Deleting a group drops its memberships.
    store.delete_group(g2.id).await.unwrap();
    assert!(store.get_account(b.id).await.unwrap().groups.is_empty());
    assert!(
        store
            .list_group_accounts(Some(g2.id))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_account_credentials_encrypted_at_rest(store: &Store, url: &str) {
    let a = store
        .create_account(new_account("enc", vec![]))
        .await
        .unwrap();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let row: (String, String) =
        sqlx::query_as("SELECT credential_enc, proxy_url_enc FROM accounts WHERE id = $1")
            .bind(a.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        !row.0.contains("sk-plaintext-secret"),
        "credential in clear"
    );
    assert!(!row.0.contains("api_key"), "credential JSON in clear");
    assert!(!row.1.contains("proxypass"), "proxy password in clear");
    assert!(row.0.starts_with("v1:") && row.1.starts_with("v1:"));

    // Updates are encrypted too.
    let patch = AccountPatch {
        credential: Some(Credential::OAuth {
            access_token: "oauth-access-plain".into(),
            refresh_token: "oauth-refresh-plain".into(),
            id_token: "id".into(),
        }),
        proxy_url: Some("socks5://u:newproxypass@p:1080".into()),
        ..Default::default()
    };
    let u = store.update_account(a.id, patch).await.unwrap();
    assert_eq!(u.kind, AccountKind::OAuth);
    let row: (String, String) =
        sqlx::query_as("SELECT credential_enc, proxy_url_enc FROM accounts WHERE id = $1")
            .bind(a.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!row.0.contains("oauth-access-plain") && !row.0.contains("oauth-refresh-plain"));
    assert!(!row.1.contains("newproxypass"));
    conn.close().await.unwrap();

    // Another encryption key cannot read the credential: it fails cleanly.
    let other = Store::connect(url, common::secrets()).await.unwrap();
    assert!(matches!(
        other.get_account(a.id).await,
        Err(Error::Crypto(_))
    ));
    other.close().await;
}

async fn case_account_update_patch(store: &Store) {
    let a = store
        .create_account(new_account("up", vec![]))
        .await
        .unwrap();
    let p = store
        .update_account(
            a.id,
            AccountPatch {
                priority: Some(7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p,
        Account {
            priority: 7,
            updated_at_ms: p.updated_at_ms,
            ..a.clone()
        },
        "only the priority may change"
    );
    let patch = AccountPatch {
        name: Some("up2".into()),
        credential: Some(Credential::OAuth {
            access_token: "a".into(),
            refresh_token: "r".into(),
            id_token: "i".into(),
        }),
        expires_at_ms: Some(None),
        chatgpt_account_id: Some("acct-2".into()),
        base_url: Some("https://chatgpt.com/backend-api/codex".into()),
        concurrency: Some(8),
        status: Some(AccountStatus::Disabled),
        schedulable: Some(false),
        model_mapping: Some(BTreeMap::new()),
        proxy_url: Some(String::new()),
        user_agent: Some("ua/2".into()),
        cost_multiplier: Some(Multiplier::ZERO),
        notes: Some("n2".into()),
        ..Default::default()
    };
    let p = store.update_account(a.id, patch).await.unwrap();
    assert_eq!(p.name, "up2");
    assert_eq!(p.kind, AccountKind::OAuth);
    assert_eq!(p.expires_at_ms, None);
    assert_eq!(p.chatgpt_account_id, "acct-2");
    assert_eq!(p.base_url, "https://chatgpt.com/backend-api/codex");
    assert_eq!((p.concurrency, p.priority), (8, 7));
    assert_eq!(p.status, AccountStatus::Disabled);
    assert!(!p.schedulable);
    assert!(p.model_mapping.is_empty());
    assert_eq!(p.proxy_url, "");
    assert_eq!(p.user_agent, "ua/2");
    assert_eq!(p.cost_multiplier, Multiplier::ZERO);
    assert_eq!(p.notes, "n2");
    assert_eq!(store.get_account(a.id).await.unwrap(), p);
    let p = store
        .update_account(
            a.id,
            AccountPatch {
                expires_at_ms: Some(Some(123)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.expires_at_ms, Some(123));
    assert_not_found(
        store.update_account(9191, AccountPatch::default()).await,
        "account 9191",
    );
}

async fn case_account_groups_replace(store: &Store) {
    let mut g = Vec::new();
    for i in 0..3 {
        g.push(
            store
                .create_group(new_group(&format!("rg{i}"), GroupKind::Standard))
                .await
                .unwrap()
                .id,
        );
    }
    let a = store
        .create_account(new_account("rep", vec![member(g[0], 1), member(g[1], 2)]))
        .await
        .unwrap();
    let r = store
        .set_account_groups(a.id, vec![member(g[2], 30), member(g[1], 10)])
        .await
        .unwrap();
    assert_eq!(r.groups, vec![member(g[1], 10), member(g[2], 30)]);
    assert_eq!(store.get_account(a.id).await.unwrap().groups, r.groups);
    assert!(
        store
            .list_group_accounts(Some(g[0]))
            .await
            .unwrap()
            .is_empty()
    );

    // A missing group fails the whole replacement.
    assert_not_found(
        store
            .set_account_groups(a.id, vec![member(g[0], 1), member(6060, 1)])
            .await,
        "group 6060",
    );
    assert_eq!(store.get_account(a.id).await.unwrap().groups, r.groups);
    assert_invalid(
        store
            .set_account_groups(a.id, vec![member(g[0], 1), member(g[0], 2)])
            .await,
        "groups",
    );
    let empty = store.set_account_groups(a.id, vec![]).await.unwrap();
    assert!(empty.groups.is_empty());
    assert_not_found(store.set_account_groups(6161, vec![]).await, "account 6161");
    store.delete_account(a.id).await.unwrap();
    assert_not_found(
        store.set_account_groups(a.id, vec![member(g[0], 1)]).await,
        &format!("account {}", a.id),
    );
}

async fn case_account_clear_error_and_rate_limit(store: &Store, url: &str) {
    let a = store
        .create_account(new_account("cl", vec![]))
        .await
        .unwrap();
    raw_exec(
        url,
        &format!(
            "UPDATE accounts SET status = 'error', error_message = 'token revoked', \
             rate_limited_until_ms = 10, overloaded_until_ms = 20, \
             temp_unschedulable_until_ms = 30, temp_unschedulable_reason = '429 storm' \
             WHERE id = {}",
            a.id
        ),
    )
    .await;
    let c = store.clear_account_error(a.id).await.unwrap();
    assert_eq!(
        (c.status, c.error_message.as_str()),
        (AccountStatus::Active, "")
    );
    // Rate limits are a separate call and untouched by clearing the error.
    assert_eq!(
        (
            c.rate_limited_until_ms,
            c.overloaded_until_ms,
            c.temp_unschedulable_until_ms
        ),
        (Some(10), Some(20), Some(30))
    );
    let r = store.clear_account_rate_limit(a.id).await.unwrap();
    assert_eq!(
        (
            r.rate_limited_until_ms,
            r.overloaded_until_ms,
            r.temp_unschedulable_until_ms,
            r.temp_unschedulable_reason.as_str()
        ),
        (None, None, None, "")
    );
    assert_eq!(r.status, AccountStatus::Active);

    // A disabled account is not turned active by clearing an error.
    store
        .update_account(
            a.id,
            AccountPatch {
                status: Some(AccountStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = store.clear_account_error(a.id).await.unwrap();
    assert_eq!(c.status, AccountStatus::Disabled);
    assert_not_found(store.clear_account_error(8080).await, "account 8080");
    assert_not_found(store.clear_account_rate_limit(8080).await, "account 8080");
}

// ---------------------------------------------------------------- subscriptions

async fn case_subscription_lifecycle(store: &Store, url: &str) {
    let u = store.create_user(new_user("s@x.io")).await.unwrap();
    let g = store
        .create_group(new_group("subs", GroupKind::Subscription))
        .await
        .unwrap();
    let std = store
        .create_group(new_group("std", GroupKind::Standard))
        .await
        .unwrap();
    let now = now_ms();
    let start = now - DAY_MS;
    let end = now + 30 * DAY_MS;
    let ns = |user_id, group_id, starts_at_ms, expires_at_ms| NewSubscription {
        user_id,
        group_id,
        starts_at_ms,
        expires_at_ms,
        notes: "trial".into(),
    };
    let s = store
        .create_subscription(ns(u.id, g.id, start, end))
        .await
        .unwrap();
    assert_eq!(
        (
            s.user_id,
            s.group_id,
            s.starts_at_ms,
            s.expires_at_ms,
            s.status
        ),
        (u.id, g.id, start, end, SubscriptionStatus::Active)
    );
    assert_eq!(
        (
            s.daily_usage_nanos,
            s.weekly_usage_nanos,
            s.monthly_usage_nanos
        ),
        (0, 0, 0)
    );
    assert_eq!(s.daily_window_start_ms, None);
    assert_eq!(s.notes, "trial");
    assert_eq!(store.get_subscription(s.id).await.unwrap(), s);

    assert_already_exists(store.create_subscription(ns(u.id, g.id, now, end)).await);
    assert_invalid(
        store
            .create_subscription(ns(u.id, std.id, start, end))
            .await,
        "group_id",
    );
    assert_invalid(
        store.create_subscription(ns(u.id, g.id, end, start)).await,
        "expires_at_ms",
    );
    assert_not_found(
        store.create_subscription(ns(4040, g.id, start, end)).await,
        "user 4040",
    );
    assert_not_found(
        store.create_subscription(ns(u.id, 4040, start, end)).await,
        "group 4040",
    );
    assert_not_found(store.get_subscription(4040).await, "subscription 4040");

    // Active lookup: only inside [starts, expires).
    assert_eq!(
        store.active_subscription(u.id, g.id, now).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        store
            .active_subscription(u.id, g.id, start - 1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.active_subscription(u.id, g.id, end).await.unwrap(),
        None
    );
    assert_eq!(
        store.active_subscription(u.id, std.id, now).await.unwrap(),
        None
    );

    let e = store.extend_subscription(s.id, 10, now).await.unwrap();
    assert_eq!(e.expires_at_ms, end + 10 * DAY_MS);
    assert_eq!(e.status, SubscriptionStatus::Active);
    assert!(
        store
            .active_subscription(u.id, g.id, end)
            .await
            .unwrap()
            .is_some()
    );
    assert_invalid(store.extend_subscription(s.id, 0, now).await, "days");
    assert_not_found(
        store.extend_subscription(4040, 1, now).await,
        "subscription 4040",
    );

    let r = store.revoke_subscription(s.id).await.unwrap();
    assert_eq!(r.status, SubscriptionStatus::Suspended);
    assert_eq!(
        store.active_subscription(u.id, g.id, now).await.unwrap(),
        None
    );
    // A revoked subscription stays revoked when extended.
    let e = store.extend_subscription(s.id, 1, now).await.unwrap();
    assert_eq!(e.status, SubscriptionStatus::Suspended);
    assert_not_found(store.revoke_subscription(4040).await, "subscription 4040");

    // After revocation a new one can be assigned.
    let s2 = store
        .create_subscription(ns(u.id, g.id, start, end))
        .await
        .unwrap();
    assert_eq!(
        store.active_subscription(u.id, g.id, now).await.unwrap(),
        Some(s2.clone())
    );

    // An expired subscription comes back when extended past now, not before.
    raw_exec(
        url,
        &format!(
            "UPDATE subscriptions SET status = 'expired', expires_at_ms = {} WHERE id = {}",
            now - 5 * DAY_MS,
            s2.id
        ),
    )
    .await;
    let e = store.extend_subscription(s2.id, 2, now).await.unwrap();
    assert_eq!(
        (e.status, e.expires_at_ms),
        (SubscriptionStatus::Expired, now - 3 * DAY_MS)
    );
    let e = store.extend_subscription(s2.id, 4, now).await.unwrap();
    assert_eq!(
        (e.status, e.expires_at_ms),
        (SubscriptionStatus::Active, now + DAY_MS)
    );
    let other = store.create_user(new_user("s2@x.io")).await.unwrap();
    let s4 = store
        .create_subscription(ns(other.id, g.id, start, end))
        .await
        .unwrap();
    let ids = |v: Vec<tollgate_control_plane::model::Subscription>| {
        v.iter().map(|s| s.id).collect::<Vec<_>>()
    };
    let by_user = store
        .list_subscriptions(Some(u.id), None, Page::default())
        .await
        .unwrap();
    assert_eq!(ids(by_user.items), vec![s.id, s2.id]);
    let by_group = store
        .list_subscriptions(None, Some(g.id), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(by_group.items), vec![s.id, s2.id, s4.id]);
    let both = store
        .list_subscriptions(Some(other.id), Some(g.id), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(both.items), vec![s4.id]);
    let (all, pages) = walk(2, |p| async move {
        store.list_subscriptions(None, None, p).await.unwrap()
    })
    .await;
    assert_eq!(ids(all), vec![s.id, s2.id, s4.id]);
    assert_eq!(pages, 2);
}

async fn case_subscription_expired_does_not_block(store: &Store) {
    let u = store.create_user(new_user("se@x.io")).await.unwrap();
    let g = store
        .create_group(new_group("subs-e", GroupKind::Subscription))
        .await
        .unwrap();
    let now = now_ms();
    // Status still `active` but the end has passed: not an active subscription.
    let old = store
        .create_subscription(NewSubscription {
            user_id: u.id,
            group_id: g.id,
            starts_at_ms: now - 10 * DAY_MS,
            expires_at_ms: now - DAY_MS,
            notes: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.active_subscription(u.id, g.id, now).await.unwrap(),
        None
    );
    let new = store
        .create_subscription(NewSubscription {
            user_id: u.id,
            group_id: g.id,
            starts_at_ms: now,
            expires_at_ms: now + DAY_MS,
            notes: String::new(),
        })
        .await
        .unwrap();
    assert_ne!(old.id, new.id);
    assert_eq!(
        store
            .active_subscription(u.id, g.id, now)
            .await
            .unwrap()
            .map(|s| s.id),
        Some(new.id)
    );
}

// ---------------------------------------------------------------- prices

async fn case_prices_seeded_defaults(store: &Store) {
    let prices = store.list_prices().await.unwrap();
    let table: Vec<(&str, i64, i64, i64)> = prices
        .iter()
        .map(|p| {
            (
                p.model.as_str(),
                p.input_per_mtok_nanos,
                p.output_per_mtok_nanos,
                p.cached_input_per_mtok_nanos,
            )
        })
        .collect();
    let mut want = vec![
        ("gpt-5", 1_250_000_000, 10_000_000_000, 125_000_000),
        ("gpt-5-mini", 250_000_000, 2_000_000_000, 25_000_000),
        ("gpt-5.1", 1_250_000_000, 10_000_000_000, 125_000_000),
        ("gpt-5.1-codex", 1_250_000_000, 10_000_000_000, 125_000_000),
        (
            "gpt-5.1-codex-max",
            1_250_000_000,
            10_000_000_000,
            125_000_000,
        ),
        ("gpt-5.1-codex-mini", 250_000_000, 2_000_000_000, 25_000_000),
        ("gpt-5.2", 1_750_000_000, 14_000_000_000, 175_000_000),
    ];
    want.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(table, want, "seeded, ordered by model");
}

async fn case_prices_upsert_get_delete(store: &Store) {
    let before = now_ms();
    let p = store
        .upsert_price(Price {
            model: "o3".into(),
            input_per_mtok_nanos: 2_000_000_000,
            output_per_mtok_nanos: 8_000_000_000,
            cached_input_per_mtok_nanos: 500_000_000,
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    assert!(p.updated_at_ms >= before);
    assert_eq!(store.get_price("o3").await.unwrap(), Some(p.clone()));
    let q = store
        .upsert_price(Price {
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 2,
            cached_input_per_mtok_nanos: 0,
            ..p.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            q.input_per_mtok_nanos,
            q.output_per_mtok_nanos,
            q.cached_input_per_mtok_nanos
        ),
        (1, 2, 0)
    );
    assert_eq!(store.get_price("o3").await.unwrap(), Some(q));
    assert_eq!(store.list_prices().await.unwrap().len(), 8);
    // Lookup is exact: no fallback to a family here.
    assert_eq!(store.get_price("o3-2025-01-01").await.unwrap(), None);

    // Overriding a seeded default.
    let g = store
        .upsert_price(Price {
            model: "gpt-5".into(),
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 1,
            cached_input_per_mtok_nanos: 1,
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(store.get_price("gpt-5").await.unwrap(), Some(g));

    store.delete_price("o3").await.unwrap();
    assert_eq!(store.get_price("o3").await.unwrap(), None);
    assert_not_found(store.delete_price("o3").await, "price for model o3");
    assert_invalid(
        store
            .upsert_price(Price {
                model: "neg".into(),
                input_per_mtok_nanos: -1,
                output_per_mtok_nanos: 0,
                cached_input_per_mtok_nanos: 0,
                updated_at_ms: 0,
            })
            .await,
        "input_per_mtok_nanos",
    );
    assert_eq!(store.get_price("neg").await.unwrap(), None);
}

// ---------------------------------------------------------------- usage

async fn case_usage_insert_idempotent(store: &Store) {
    let r = usage("req-1", 1_700_000_000_000);
    assert!(store.insert_usage(&r).await.unwrap());
    let mut replay = r.clone();
    replay.actual_cost_nanos = 999_999_999;
    replay.input_tokens = 1;
    assert!(!store.insert_usage(&replay).await.unwrap());
    let (page, totals) = store
        .query_usage(&UsageFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(
        page.items,
        vec![r.clone()],
        "every field round-trips; replay ignored"
    );
    assert_eq!(page.next_after_id, None);
    assert_eq!(
        totals,
        UsageTotals {
            requests: 1,
            input_tokens: 1000,
            output_tokens: 200,
            cached_tokens: 100,
            total_cost_nanos: 3_137_500,
            actual_cost_nanos: 4_706_250,
        }
    );

    // Optional fields and flags round-trip both ways.
    let mut other = usage("req-2", 1_700_000_000_001);
    other.group_id = None;
    other.subscription_id = Some(9);
    other.first_token_ms = None;
    other.stream = false;
    other.estimated = true;
    other.billing_mode = BillingMode::Subscription;
    other.rate_multiplier = Multiplier::ZERO;
    assert!(store.insert_usage(&other).await.unwrap());
    let (page, _) = store
        .query_usage(&UsageFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(page.items, vec![r, other]);
}

async fn case_usage_query_pagination_and_totals(store: &Store) {
    let t0 = 1_700_000_000_000;
    let mut want = Vec::new();
    for i in 0..10_i64 {
        let mut r = usage(&format!("pg-{i}"), t0 + i);
        r.input_tokens = i;
        r.actual_cost_nanos = 100 + i;
        r.key_id = if i < 8 { 1 } else { 2 };
        store.insert_usage(&r).await.unwrap();
        want.push(r);
    }
    let filter = UsageFilter {
        key_id: Some(1),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (p, totals) = store.query_usage(&filter, page(after, 3)).await.unwrap();
        pages += 1;
        // Totals cover the whole filter on every page, not the page.
        assert_eq!(totals.requests, 8);
        assert_eq!(totals.input_tokens, (0..8).sum::<i64>());
        assert_eq!(
            totals.actual_cost_nanos,
            (0..8).map(|i| 100 + i).sum::<i64>()
        );
        assert_eq!(totals.output_tokens, 8 * 200);
        assert_eq!(totals.cached_tokens, 8 * 100);
        assert_eq!(totals.total_cost_nanos, 8 * 3_137_500);
        seen.extend(p.items);
        match p.next_after_id {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, want[..8].to_vec(), "no overlap, no gap, oldest first");
    assert_eq!(store.usage_totals(&filter).await.unwrap().requests, 8);
}

async fn case_usage_series_by_utc_day(store: &Store) {
    // 2024-03-09 23:59:59.999 UTC and 2024-03-10 00:00:00.000 UTC.
    let midnight = 1_710_028_800_000;
    let mut a = usage("d-1", midnight - 1);
    a.output_tokens = 1;
    let mut b = usage("d-2", midnight);
    b.output_tokens = 10;
    let mut c = usage("d-3", midnight + DAY_MS - 1);
    c.output_tokens = 100;
    for r in [&c, &a, &b] {
        store.insert_usage(r).await.unwrap();
    }
    let (days, totals) = store.usage_series(&UsageFilter::default()).await.unwrap();
    let summary: Vec<(&str, i64, i64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.totals.requests, d.totals.output_tokens))
        .collect();
    assert_eq!(summary, vec![("2024-03-09", 1, 1), ("2024-03-10", 2, 110)]);
    assert_eq!(days[1].totals.actual_cost_nanos, 2 * 4_706_250);
    assert_eq!(totals.requests, 3);
    assert_eq!(totals.output_tokens, 111);
    assert_eq!(
        totals,
        store.usage_totals(&UsageFilter::default()).await.unwrap()
    );

    let only_second = UsageFilter {
        from_ms: Some(midnight),
        ..Default::default()
    };
    let (days, totals) = store.usage_series(&only_second).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].day, "2024-03-10");
    assert_eq!(totals.requests, 2);

    let (days, totals) = store
        .usage_series(&UsageFilter {
            model: Some("nothing".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(days.is_empty());
    assert_eq!(totals, UsageTotals::default());
}

async fn case_usage_filters(store: &Store) {
    let t0 = 1_700_000_000_000;
    let mut recs = Vec::new();
    for i in 0..12_i64 {
        let mut r = usage(&format!("f-{i}"), t0 + i * 1000);
        r.key_id = 10 + i % 2;
        r.user_id = 20 + i % 3;
        r.account_id = 30 + i % 4;
        r.group_id = if i % 5 == 0 { None } else { Some(40 + i % 2) };
        r.model = if i % 3 == 0 { "gpt-5.1-codex" } else { "gpt-5" }.to_owned();
        store.insert_usage(&r).await.unwrap();
        recs.push(r);
    }
    let check = |name: &'static str, f: UsageFilter, pred: Box<dyn Fn(&UsageRecord) -> bool>| {
        let want: BTreeSet<String> = recs
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.request_id.clone())
            .collect();
        (name, f, want)
    };
    let cases = vec![
        check(
            "key",
            UsageFilter {
                key_id: Some(11),
                ..Default::default()
            },
            Box::new(|r| r.key_id == 11),
        ),
        check(
            "user",
            UsageFilter {
                user_id: Some(22),
                ..Default::default()
            },
            Box::new(|r| r.user_id == 22),
        ),
        check(
            "account",
            UsageFilter {
                account_id: Some(33),
                ..Default::default()
            },
            Box::new(|r| r.account_id == 33),
        ),
        check(
            "group",
            UsageFilter {
                group_id: Some(40),
                ..Default::default()
            },
            Box::new(|r| r.group_id == Some(40)),
        ),
        check(
            "model",
            UsageFilter {
                model: Some("gpt-5.1-codex".into()),
                ..Default::default()
            },
            Box::new(|r| r.model == "gpt-5.1-codex"),
        ),
        check(
            "time range [from, to)",
            UsageFilter {
                from_ms: Some(t0 + 3000),
                to_ms: Some(t0 + 7000),
                ..Default::default()
            },
            Box::new(move |r| r.created_at_ms >= t0 + 3000 && r.created_at_ms < t0 + 7000),
        ),
        check(
            "combined",
            UsageFilter {
                key_id: Some(10),
                user_id: Some(20),
                model: Some("gpt-5.1-codex".into()),
                from_ms: Some(t0),
                ..Default::default()
            },
            Box::new(|r| r.key_id == 10 && r.user_id == 20 && r.model == "gpt-5.1-codex"),
        ),
    ];
    for (name, filter, want) in cases {
        assert!(!want.is_empty(), "{name}: fixture selects nothing");
        assert!(
            want.len() < recs.len(),
            "{name}: fixture selects everything"
        );
        let (p, totals) = store.query_usage(&filter, page(0, 100)).await.unwrap();
        let got: BTreeSet<String> = p.items.into_iter().map(|r| r.request_id).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(totals.requests, want.len() as i64, "{name}");
        assert_eq!(
            store.usage_totals(&filter).await.unwrap().requests,
            want.len() as i64,
            "{name}"
        );
        let (days, series_totals) = store.usage_series(&filter).await.unwrap();
        assert_eq!(series_totals, totals, "{name}");
        assert_eq!(days.len(), 1, "{name}");
    }
}

// ---------------------------------------------------------------- both backends

/// `case => sqlite_name, postgres_name;` generates one test per backend. Cases marked
/// `raw` also get the database URL for setups and checks outside the API.
macro_rules! conformance {
    ($($case:ident $(($raw:ident))? => $sqlite:ident, $postgres:ident;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                run(Backend::Sqlite, |store, _url| Box::pin(async move {
                    conformance!(@call $case $(($raw))?, store, _url)
                })).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                run(Backend::Postgres, |store, _url| Box::pin(async move {
                    conformance!(@call $case $(($raw))?, store, _url)
                })).await;
            }
        )+
    };
    (@call $case:ident (raw), $store:ident, $url:ident) => { $case(&$store, &$url).await };
    (@call $case:ident, $store:ident, $url:ident) => { $case(&$store).await };
}

type CaseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run(backend: Backend, case: impl FnOnce(Store, String) -> CaseFuture) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    case(store.clone(), db.url.clone()).await;
    store.close().await;
    db.cleanup().await;
}

conformance! {
    case_user_create_get_and_email_unique => sqlite_user_create_get_and_email_unique, postgres_user_create_get_and_email_unique;
    case_user_initial_balance_is_ledgered => sqlite_user_initial_balance_is_ledgered, postgres_user_initial_balance_is_ledgered;
    case_user_list_pagination_and_status => sqlite_user_list_pagination_and_status, postgres_user_list_pagination_and_status;
    case_user_update_patch => sqlite_user_update_patch, postgres_user_update_patch;
    case_balance_ops_and_ledger => sqlite_balance_ops_and_ledger, postgres_balance_ops_and_ledger;
    case_balance_concurrent_adds => sqlite_balance_concurrent_adds, postgres_balance_concurrent_adds;
    case_group_crud_and_name_unique => sqlite_group_crud_and_name_unique, postgres_group_crud_and_name_unique;
    case_group_list_pagination => sqlite_group_list_pagination, postgres_group_list_pagination;
    case_key_create_lookup_and_hash_unique => sqlite_key_create_lookup_and_hash_unique, postgres_key_create_lookup_and_hash_unique;
    case_key_list_filters_and_pagination => sqlite_key_list_filters_and_pagination, postgres_key_list_filters_and_pagination;
    case_key_patch_leaves_unspecified_fields => sqlite_key_patch_leaves_unspecified_fields, postgres_key_patch_leaves_unspecified_fields;
    case_key_reset_quota_and_clear_expiration(raw) => sqlite_key_reset_quota_and_clear_expiration, postgres_key_reset_quota_and_clear_expiration;
    case_key_quota_and_expiry_updates_reactivate(raw) => sqlite_key_quota_and_expiry_updates_reactivate, postgres_key_quota_and_expiry_updates_reactivate;
    case_key_status_and_touch => sqlite_key_status_and_touch, postgres_key_status_and_touch;
    case_account_create_get_list => sqlite_account_create_get_list, postgres_account_create_get_list;
    case_account_credentials_encrypted_at_rest(raw) => sqlite_account_credentials_encrypted_at_rest, postgres_account_credentials_encrypted_at_rest;
    case_account_update_patch => sqlite_account_update_patch, postgres_account_update_patch;
    case_account_groups_replace => sqlite_account_groups_replace, postgres_account_groups_replace;
    case_account_clear_error_and_rate_limit(raw) => sqlite_account_clear_error_and_rate_limit, postgres_account_clear_error_and_rate_limit;
    case_subscription_lifecycle(raw) => sqlite_subscription_lifecycle, postgres_subscription_lifecycle;
    case_subscription_expired_does_not_block => sqlite_subscription_expired_does_not_block, postgres_subscription_expired_does_not_block;
    case_prices_seeded_defaults => sqlite_prices_seeded_defaults, postgres_prices_seeded_defaults;
    case_prices_upsert_get_delete => sqlite_prices_upsert_get_delete, postgres_prices_upsert_get_delete;
    case_usage_insert_idempotent => sqlite_usage_insert_idempotent, postgres_usage_insert_idempotent;
    case_usage_query_pagination_and_totals => sqlite_usage_query_pagination_and_totals, postgres_usage_query_pagination_and_totals;
    case_usage_series_by_utc_day => sqlite_usage_series_by_utc_day, postgres_usage_series_by_utc_day;
    case_usage_filters => sqlite_usage_filters, postgres_usage_filters;
}

// ---------------------------------------------------------------- charging

/// A usage record of `key` (balance mode, no group) costing `total` before and `actual`
/// after the multiplier.
fn charge_rec(key: &ApiKey, request_id: &str, total: i64, actual: i64) -> UsageRecord {
    let mut r = usage(request_id, now_ms());
    r.key_id = key.id;
    r.user_id = key.user_id;
    r.group_id = key.group_id;
    r.input_cost_nanos = total;
    r.output_cost_nanos = 0;
    r.cached_cost_nanos = 0;
    r.total_cost_nanos = total;
    r.actual_cost_nanos = actual;
    r
}

async fn funded_user(
    store: &Store,
    email: &str,
    balance: i64,
) -> tollgate_control_plane::model::User {
    let mut nu = new_user(email);
    nu.initial_balance_nanos = balance;
    store.create_user(nu).await.unwrap()
}

async fn key_with_quota(store: &Store, user_id: i64, hash: &str, quota: i64) -> ApiKey {
    let mut nk = new_key(user_id, hash);
    nk.quota_nanos = quota;
    store.create_key(nk).await.unwrap()
}

async fn usage_of_key(store: &Store, key_id: i64) -> Vec<UsageRecord> {
    let filter = UsageFilter {
        key_id: Some(key_id),
        ..UsageFilter::default()
    };
    store
        .query_usage(&filter, page(0, 1000))
        .await
        .unwrap()
        .0
        .items
}

async fn case_charge_balance_debit(store: &Store) {
    let u = funded_user(store, "bal@x.io", 10_000_000_000).await;
    let key = key_with_quota(store, u.id, "hash-bal", 0).await;
    let rec = charge_rec(&key, "req-bal-1", 3_137_500, 4_706_250);
    let now = now_ms();
    let out = store.charge_usage(&rec, now).await.unwrap();
    assert!(out.inserted);
    assert!(!out.key_exhausted);
    assert_eq!(out.balance_after_nanos, Some(10_000_000_000 - 4_706_250));
    assert_eq!(out.key_quota_used_nanos, None, "no quota: nothing counted");
    assert_eq!(
        store.get_user(u.id).await.unwrap().balance_nanos,
        10_000_000_000 - 4_706_250
    );
    let k = store.get_key(key.id).await.unwrap();
    assert_eq!((k.quota_used_nanos, k.status), (0, KeyStatus::Active));
    assert_eq!(k.last_used_at_ms, Some(now));
    // The row keeps everything, exactly as given.
    assert_eq!(usage_of_key(store, key.id).await, vec![rec]);

    // The balance may go negative.
    let rec = charge_rec(&key, "req-bal-2", 20_000_000_000, 20_000_000_000);
    store.charge_usage(&rec, now).await.unwrap();
    assert_eq!(
        store.get_user(u.id).await.unwrap().balance_nanos,
        10_000_000_000 - 4_706_250 - 20_000_000_000
    );
}

async fn case_charge_replay_changes_nothing(store: &Store) {
    let u = funded_user(store, "replay@x.io", 1_000_000).await;
    let key = key_with_quota(store, u.id, "hash-replay", 500_000).await;
    let first = charge_rec(&key, "req-replay", 1_000, 2_000);
    assert!(store.charge_usage(&first, now_ms()).await.unwrap().inserted);
    let user_before = store.get_user(u.id).await.unwrap();
    let key_before = store.get_key(key.id).await.unwrap();

    // Same request id, other amounts, later: not inserted, nothing changes.
    let mut again = charge_rec(&key, "req-replay", 9_000, 9_000);
    again.input_tokens = 1;
    let out = store.charge_usage(&again, now_ms() + 1_000).await.unwrap();
    assert_eq!(
        out,
        tollgate_control_plane::storage::ChargeOutcome::default(),
        "a replay reports inserted: false and nothing else"
    );
    assert_eq!(store.get_user(u.id).await.unwrap(), user_before);
    assert_eq!(store.get_key(key.id).await.unwrap(), key_before);
    assert_eq!(usage_of_key(store, key.id).await, vec![first]);
}

async fn case_charge_subscription_windows(store: &Store) {
    let u = funded_user(store, "sub@x.io", 7_000).await;
    let g = store
        .create_group(new_group("subs", GroupKind::Subscription))
        .await
        .unwrap();
    let t0 = now_ms();
    let s = store
        .create_subscription(NewSubscription {
            user_id: u.id,
            group_id: g.id,
            starts_at_ms: t0 - DAY_MS,
            expires_at_ms: t0 + 365 * DAY_MS,
            notes: String::new(),
        })
        .await
        .unwrap();
    let mut nk = new_key(u.id, "hash-sub");
    nk.group_id = Some(g.id);
    nk.quota_nanos = 1_000_000;
    let key = store.create_key(nk).await.unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let charge = |total: i64, at: i64| {
        let mut r = charge_rec(
            &key,
            &format!(
                "req-sub-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            total,
            total * 3,
        );
        r.billing_mode = BillingMode::Subscription;
        r.subscription_id = Some(s.id);
        async move { store.charge_usage(&r, at).await.unwrap() }
    };
    let sub_id = s.id;
    let windows = move || async move {
        let s = store.get_subscription(sub_id).await.unwrap();
        (
            (s.daily_usage_nanos, s.daily_window_start_ms),
            (s.weekly_usage_nanos, s.weekly_window_start_ms),
            (s.monthly_usage_nanos, s.monthly_window_start_ms),
        )
    };

    // First use starts all three windows; they grow by the total (before the multiplier).
    let out = charge(100, t0).await;
    assert!(out.inserted);
    assert_eq!(out.balance_after_nanos, None);
    assert_eq!(
        windows().await,
        ((100, Some(t0)), (100, Some(t0)), (100, Some(t0)))
    );
    charge(50, t0 + DAY_MS - 1).await;
    assert_eq!(
        windows().await,
        ((150, Some(t0)), (150, Some(t0)), (150, Some(t0)))
    );
    // 24 h after its start the daily window has passed: it restarts at this charge.
    let t1 = t0 + DAY_MS;
    charge(7, t1).await;
    assert_eq!(
        windows().await,
        ((7, Some(t1)), (157, Some(t0)), (157, Some(t0)))
    );
    // 7 days: daily and weekly restart.
    let t2 = t0 + 7 * DAY_MS;
    charge(5, t2).await;
    assert_eq!(
        windows().await,
        ((5, Some(t2)), (5, Some(t2)), (162, Some(t0)))
    );
    // 30 days: all three.
    let t3 = t0 + 30 * DAY_MS;
    charge(1, t3).await;
    assert_eq!(
        windows().await,
        ((1, Some(t3)), (1, Some(t3)), (1, Some(t3)))
    );

    // The balance is untouched in subscription mode; the key quota counts the actual cost.
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, 7_000);
    assert_eq!(
        store.get_key(key.id).await.unwrap().quota_used_nanos,
        3 * (100 + 50 + 7 + 5 + 1)
    );

    // A subscription of someone else (or none) is refused and nothing is stored.
    let other = funded_user(store, "other@x.io", 0).await;
    let mut r = charge_rec(&key, "req-sub-foreign", 1, 1);
    r.billing_mode = BillingMode::Subscription;
    r.subscription_id = Some(s.id);
    r.user_id = other.id;
    assert!(matches!(
        store.charge_usage(&r, t3).await,
        Err(Error::NotFound(_))
    ));
    r.user_id = u.id;
    r.subscription_id = Some(999_999);
    assert!(matches!(
        store.charge_usage(&r, t3).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(usage_of_key(store, key.id).await.len(), 5);
}

async fn case_charge_quota_flips_at_exactly_the_quota(store: &Store) {
    let u = funded_user(store, "quota@x.io", 1_000_000).await;
    let key = key_with_quota(store, u.id, "hash-quota", 10_000).await;
    let charge = |id: &str, actual: i64| {
        let r = charge_rec(&key, id, actual, actual);
        async move { store.charge_usage(&r, now_ms()).await.unwrap() }
    };
    let out = charge("q1", 4_000).await;
    assert_eq!(
        (out.key_quota_used_nanos, out.key_exhausted),
        (Some(4_000), false)
    );
    let out = charge("q2", 5_999).await;
    assert_eq!(
        (out.key_quota_used_nanos, out.key_exhausted),
        (Some(9_999), false)
    );
    assert_eq!(
        store.get_key(key.id).await.unwrap().status,
        KeyStatus::Active
    );
    // Reaching the quota exactly flips the key.
    let out = charge("q3", 1).await;
    assert_eq!(
        (out.key_quota_used_nanos, out.key_exhausted),
        (Some(10_000), true)
    );
    assert_eq!(
        store.get_key(key.id).await.unwrap().status,
        KeyStatus::QuotaExhausted
    );
    // Later (in-flight) requests are still counted; the flip is reported once.
    let out = charge("q4", 500).await;
    assert_eq!(
        (out.key_quota_used_nanos, out.key_exhausted),
        (Some(10_500), false)
    );
    assert_eq!(
        store.get_user(u.id).await.unwrap().balance_nanos,
        1_000_000 - 10_500
    );

    // Only an active key flips: a disabled one stays disabled.
    let disabled = key_with_quota(store, u.id, "hash-quota-disabled", 100).await;
    store
        .set_key_status(disabled.id, KeyStatus::Disabled)
        .await
        .unwrap();
    let r = charge_rec(&disabled, "q5", 500, 500);
    let out = store.charge_usage(&r, now_ms()).await.unwrap();
    assert_eq!(
        (out.key_quota_used_nanos, out.key_exhausted),
        (Some(500), false)
    );
    assert_eq!(
        store.get_key(disabled.id).await.unwrap().status,
        KeyStatus::Disabled
    );

    // A zero cost on an over-quota active key (quota lowered by an operator) flips it.
    let lowered = key_with_quota(store, u.id, "hash-quota-lowered", 1_000).await;
    store
        .charge_usage(&charge_rec(&lowered, "q6", 600, 600), now_ms())
        .await
        .unwrap();
    store
        .update_key(
            lowered.id,
            KeyPatch {
                quota_nanos: Some(500),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_key(lowered.id).await.unwrap().status,
        KeyStatus::Active
    );
    let out = store
        .charge_usage(&charge_rec(&lowered, "q7", 0, 0), now_ms())
        .await
        .unwrap();
    assert!(out.key_exhausted);

    // A key that is not the user's is refused; nothing was stored or charged.
    let stranger = funded_user(store, "stranger@x.io", 50).await;
    let mut r = charge_rec(&key, "q8", 10, 10);
    r.user_id = stranger.id;
    assert!(matches!(
        store.charge_usage(&r, now_ms()).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.get_user(stranger.id).await.unwrap().balance_nanos, 50);
    assert_eq!(usage_of_key(store, key.id).await.len(), 4);
    // …so the same request id can still be charged correctly.
    let r = charge_rec(&key, "q8", 10, 10);
    assert!(store.charge_usage(&r, now_ms()).await.unwrap().inserted);
}

async fn case_charge_concurrent_on_one_key(store: &Store) {
    let u = funded_user(store, "conc@x.io", 1_000_000_000).await;
    let costs: Vec<i64> = (1..=50).map(|i| i * 1_000 + i % 7).collect();
    let sum: i64 = costs.iter().sum();
    // The quota is crossed somewhere in the middle: exactly one charge flips the key.
    let key = key_with_quota(store, u.id, "hash-conc", sum / 2).await;
    let mut set = tokio::task::JoinSet::new();
    for (i, cost) in costs.iter().copied().enumerate() {
        let store = store.clone();
        let r = charge_rec(&key, &format!("conc-{i}"), cost, cost);
        set.spawn(async move { store.charge_usage(&r, now_ms()).await.unwrap() });
    }
    let mut flips = 0;
    while let Some(out) = set.join_next().await {
        let out = out.unwrap();
        assert!(out.inserted);
        flips += usize::from(out.key_exhausted);
    }
    assert_eq!(flips, 1, "exactly one charge crosses the quota");
    let k = store.get_key(key.id).await.unwrap();
    assert_eq!(k.quota_used_nanos, sum);
    assert_eq!(k.status, KeyStatus::QuotaExhausted);
    assert_eq!(
        store.get_user(u.id).await.unwrap().balance_nanos,
        1_000_000_000 - sum
    );
    let filter = UsageFilter {
        key_id: Some(key.id),
        ..UsageFilter::default()
    };
    let totals = store.usage_totals(&filter).await.unwrap();
    assert_eq!((totals.requests, totals.actual_cost_nanos), (50, sum));
}

conformance! {
    case_charge_balance_debit => sqlite_charge_balance_debit, postgres_charge_balance_debit;
    case_charge_replay_changes_nothing => sqlite_charge_replay_changes_nothing, postgres_charge_replay_changes_nothing;
    case_charge_subscription_windows => sqlite_charge_subscription_windows, postgres_charge_subscription_windows;
    case_charge_quota_flips_at_exactly_the_quota => sqlite_charge_quota_flips_at_exactly_the_quota, postgres_charge_quota_flips_at_exactly_the_quota;
    case_charge_concurrent_on_one_key => sqlite_charge_concurrent_on_one_key, postgres_charge_concurrent_on_one_key;
}
