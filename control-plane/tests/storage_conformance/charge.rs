//! Charging: balance debits, replays, subscription windows, key quotas and concurrency.

use tollgate_control_plane::Error;
use tollgate_control_plane::model::{ApiKey, KeyPatch, NewSubscription, UsageFilter, UsageRecord};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::{BillingMode, GroupKind, KeyStatus};
use tollgate_shared::now_ms;

use crate::fixtures::{DAY_MS, new_group, new_key, new_user, page, usage};

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

pub(crate) async fn case_charge_balance_debit(store: &Store) {
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

pub(crate) async fn case_charge_replay_changes_nothing(store: &Store) {
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

pub(crate) async fn case_charge_subscription_windows(store: &Store) {
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

pub(crate) async fn case_charge_quota_flips_at_exactly_the_quota(store: &Store) {
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

pub(crate) async fn case_charge_concurrent_on_one_key(store: &Store) {
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

/// The control plane's estimate (`recovered`) is superseded by the real record: the
/// estimate's charges are undone and the real ones made, once; estimates never replace
/// anything, and replays of either change nothing.
pub(crate) async fn case_charge_estimate_superseded_once(store: &Store) {
    let u = funded_user(store, "est@x.io", 10_000).await;
    let key = key_with_quota(store, u.id, "hash-est", 1_000).await;
    let t0 = now_ms();
    let mut estimate = charge_rec(&key, "req-est-1", 1_000, 1_000);
    (estimate.estimated, estimate.recovered) = (true, true);
    // The control plane's estimate knows no client or upstream request id; the real
    // record (below) brings them.
    estimate.client_request_id.clear();
    estimate.upstream_request_id.clear();
    let out = store.charge_usage(&estimate, t0).await.unwrap();
    assert!(out.inserted && !out.superseded && out.key_exhausted);
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, 9_000);
    // A second estimate of the same request is a replay.
    let out = store.charge_usage(&estimate, t0).await.unwrap();
    assert!(!out.inserted);

    let real = charge_rec(&key, "req-est-1", 300, 300);
    let out = store.charge_usage(&real, t0 + 5).await.unwrap();
    assert!(out.inserted && out.superseded, "{out:?}");
    assert_eq!(out.balance_after_nanos, Some(9_700));
    assert_eq!(store.get_user(u.id).await.unwrap().balance_nanos, 9_700);
    let k = store.get_key(key.id).await.unwrap();
    assert_eq!(
        (k.quota_used_nanos, k.status),
        (300, KeyStatus::Active),
        "the estimate's exhaustion is undone"
    );
    assert!(!real.client_request_id.is_empty() && !real.upstream_request_id.is_empty());
    assert_eq!(usage_of_key(store, key.id).await, vec![real.clone()]);
    // Replays of the real record, and a late estimate, change nothing.
    let before = (
        store.get_user(u.id).await.unwrap(),
        store.get_key(key.id).await.unwrap(),
    );
    assert!(!store.charge_usage(&real, t0 + 6).await.unwrap().inserted);
    assert!(
        !store
            .charge_usage(&estimate, t0 + 7)
            .await
            .unwrap()
            .inserted
    );
    let after = (
        store.get_user(u.id).await.unwrap(),
        store.get_key(key.id).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(usage_of_key(store, key.id).await, vec![real]);
}

/// Superseding in subscription mode takes the estimate off the windows that held it
/// only: a window that restarted since the estimate keeps its own charges.
pub(crate) async fn case_charge_estimate_superseded_in_windows(store: &Store) {
    let u = funded_user(store, "est-sub@x.io", 0).await;
    let g = store
        .create_group(new_group("est-subs", GroupKind::Subscription))
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
    let mut nk = new_key(u.id, "hash-est-sub");
    nk.group_id = Some(g.id);
    let key = store.create_key(nk).await.unwrap();
    let rec = |id: &str, total: i64, at: i64| {
        let mut r = charge_rec(&key, id, total, total);
        r.billing_mode = BillingMode::Subscription;
        r.subscription_id = Some(s.id);
        r.created_at_ms = at - 1_000;
        r.duration_ms = 1_000;
        r
    };
    // The estimate (charged at t0) starts the windows.
    let mut estimate = rec("req-est-sub", 100, t0);
    (estimate.estimated, estimate.recovered) = (true, true);
    store.charge_usage(&estimate, t0).await.unwrap();
    // A day later another request restarts the daily window.
    let t1 = t0 + DAY_MS;
    store
        .charge_usage(&rec("req-other", 7, t1), t1)
        .await
        .unwrap();
    // The real record of the estimated request arrives.
    let mut real = rec("req-est-sub", 40, t0);
    real.duration_ms = 2_000;
    let out = store.charge_usage(&real, t1 + 1).await.unwrap();
    assert!(out.superseded);
    let s = store.get_subscription(s.id).await.unwrap();
    // daily: 7 (its own, since t1) + 40; weekly and monthly: 100 + 7 − 100 + 40.
    assert_eq!(
        (
            s.daily_usage_nanos,
            s.weekly_usage_nanos,
            s.monthly_usage_nanos
        ),
        (47, 47, 47)
    );
    assert_eq!(s.daily_window_start_ms, Some(t1));
    assert_eq!(s.weekly_window_start_ms, Some(t0));
}
