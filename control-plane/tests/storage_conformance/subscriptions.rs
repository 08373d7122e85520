//! Subscriptions: lifecycle and expiry.

use tollgate_control_plane::model::{NewSubscription, Page};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::{GroupKind, SubscriptionStatus};
use tollgate_shared::now_ms;

use crate::fixtures::{
    DAY_MS, assert_already_exists, assert_invalid, assert_not_found, new_group, new_user, raw_exec,
    walk,
};

pub(crate) async fn case_subscription_lifecycle(store: &Store, url: &str) {
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

pub(crate) async fn case_subscription_expired_does_not_block(store: &Store) {
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
