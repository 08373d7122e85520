//! API keys: lookup by hash, listing, patches, quota, expiry and status.

use std::collections::BTreeMap;

use tollgate_control_plane::model::{ApiKey, KeyPatch, Page};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::{GroupKind, KeyStatus};
use tollgate_shared::now_ms;

use crate::fixtures::{
    DAY_MS, assert_already_exists, assert_not_found, new_group, new_key, new_user, raw_exec, walk,
};

pub(crate) async fn case_key_create_lookup_and_hash_unique(store: &Store) {
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
    store.delete_group(g.id, true).await.unwrap();
    let mut in_deleted = new_key(u.id, "hash-4");
    in_deleted.group_id = Some(g.id);
    assert_not_found(
        store.create_key(in_deleted).await,
        &format!("group {}", g.id),
    );
    store.delete_user(u.id, true).await.unwrap();
    assert_not_found(
        store.create_key(new_key(u.id, "hash-5")).await,
        &format!("user {}", u.id),
    );
}

pub(crate) async fn case_key_list_filters_and_pagination(store: &Store) {
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

pub(crate) async fn case_key_patch_leaves_unspecified_fields(store: &Store) {
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

pub(crate) async fn case_key_reset_quota_and_clear_expiration(store: &Store, url: &str) {
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

pub(crate) async fn case_key_quota_and_expiry_updates_reactivate(store: &Store, url: &str) {
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

pub(crate) async fn case_key_status_and_touch(store: &Store) {
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

/// A user or group with keys is not deleted unless the delete cascades, which disables
/// those keys (deleted keys do not count; already-disabled ones are not counted again).
pub(crate) async fn case_key_owner_delete_guards(store: &Store) {
    let refused = |r: Result<Vec<i64>, tollgate_control_plane::Error>, what: &str| match r {
        Err(tollgate_control_plane::Error::FailedPrecondition(m)) => {
            assert!(m.contains(what) && m.contains("--cascade"), "{m}")
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    };
    let u = store.create_user(new_user("owner@x.io")).await.unwrap();
    let g = store
        .create_group(new_group("owned", GroupKind::Standard))
        .await
        .unwrap();
    let mut in_group = new_key(u.id, "hash-owned-1");
    in_group.group_id = Some(g.id);
    let k1 = store.create_key(in_group).await.unwrap();
    let k2 = store
        .create_key(new_key(u.id, "hash-owned-2"))
        .await
        .unwrap();
    let k3 = store
        .create_key(new_key(u.id, "hash-owned-3"))
        .await
        .unwrap();
    store
        .set_key_status(k3.id, KeyStatus::Disabled)
        .await
        .unwrap();

    refused(
        store.delete_group(g.id, false).await,
        &format!("group {}", g.id),
    );
    refused(
        store.delete_user(u.id, false).await,
        &format!("user {}", u.id),
    );
    // Refused: nothing changed.
    store.get_group(g.id).await.unwrap();
    store.get_user(u.id).await.unwrap();
    assert_eq!(
        store.get_key(k1.id).await.unwrap().status,
        KeyStatus::Active
    );

    assert_eq!(store.delete_group(g.id, true).await.unwrap(), vec![k1.id]);
    assert_not_found(store.get_group(g.id).await, &format!("group {}", g.id));
    assert_eq!(
        store.get_key(k1.id).await.unwrap().status,
        KeyStatus::Disabled
    );
    assert_eq!(
        store.get_key(k2.id).await.unwrap().status,
        KeyStatus::Active
    );

    store.delete_key(k2.id).await.unwrap();
    // k1 and k3 are disabled but still keys of the user.
    refused(
        store.delete_user(u.id, false).await,
        &format!("user {}", u.id),
    );
    assert_eq!(
        store.delete_user(u.id, true).await.unwrap(),
        Vec::<i64>::new()
    );
    assert_not_found(store.get_user(u.id).await, &format!("user {}", u.id));

    // Without keys, no flag is needed.
    let lone = store.create_user(new_user("lone@x.io")).await.unwrap();
    assert!(store.delete_user(lone.id, false).await.unwrap().is_empty());
}
