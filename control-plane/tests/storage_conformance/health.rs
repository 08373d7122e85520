//! Account health and OAuth token storage: cool-downs only extend, errors and usage
//! snapshots stick, refreshed tokens are stored encrypted and found when due.

use std::collections::BTreeMap;

use tollgate_control_plane::model::Credential;
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::AccountStatus;

use crate::fixtures::new_account;

pub(crate) async fn case_account_cooldowns_only_extend(store: &Store) {
    let a = store
        .create_account(new_account("h1", vec![]))
        .await
        .unwrap();
    let t = 5_000_000_000_000;
    assert!(store.extend_account_rate_limit(a.id, t).await.unwrap());
    assert!(
        store
            .extend_account_rate_limit(a.id, t - 1_000)
            .await
            .unwrap()
    );
    assert!(store.extend_account_overload(a.id, t + 10).await.unwrap());
    assert!(store.extend_account_overload(a.id, t).await.unwrap());
    assert!(
        store
            .extend_account_temp_unschedulable(a.id, t + 20, "rule: 503 capacity")
            .await
            .unwrap()
    );
    assert!(
        store
            .extend_account_temp_unschedulable(a.id, t, "rule: shorter")
            .await
            .unwrap()
    );
    let got = store.get_account(a.id).await.unwrap();
    assert_eq!(
        got.rate_limited_until_ms,
        Some(t),
        "a shorter reset never shortens"
    );
    assert_eq!(got.overloaded_until_ms, Some(t + 10));
    assert_eq!(got.temp_unschedulable_until_ms, Some(t + 20));
    assert_eq!(
        got.temp_unschedulable_reason, "rule: 503 capacity",
        "the reason follows the time"
    );
    assert_eq!(
        got.status,
        AccountStatus::Active,
        "cool-downs are not errors"
    );
    // Later ones do extend.
    store.extend_account_rate_limit(a.id, t + 99).await.unwrap();
    assert_eq!(
        store.get_account(a.id).await.unwrap().rate_limited_until_ms,
        Some(t + 99)
    );
    // Unknown accounts are reported, not errors.
    assert!(
        !store
            .extend_account_rate_limit(a.id + 1_000, t)
            .await
            .unwrap()
    );
}

pub(crate) async fn case_account_error_snapshot_and_last_used(store: &Store) {
    let a = store
        .create_account(new_account("h2", vec![]))
        .await
        .unwrap();
    assert!(
        store
            .set_account_error(a.id, "Access forbidden (403): nope")
            .await
            .unwrap()
    );
    let got = store.get_account(a.id).await.unwrap();
    assert_eq!(got.status, AccountStatus::Error);
    assert_eq!(got.error_message, "Access forbidden (403): nope");

    let snap = BTreeMap::from([
        ("x-codex-primary-used-percent".to_owned(), "42".to_owned()),
        ("x-codex-secondary-used-percent".to_owned(), "7".to_owned()),
    ]);
    assert!(store.set_account_codex_usage(a.id, &snap).await.unwrap());
    assert_eq!(store.get_account(a.id).await.unwrap().codex_usage, snap);

    store
        .touch_accounts_last_used(&[(a.id, 1_700_000_000_000)])
        .await
        .unwrap();
    assert_eq!(
        store.get_account(a.id).await.unwrap().last_used_at_ms,
        Some(1_700_000_000_000)
    );
}

pub(crate) async fn case_oauth_tokens_due_and_stored(store: &Store) {
    let mut n = new_account("h3", vec![]);
    n.credential = Credential::OAuth {
        access_token: "at-old".into(),
        refresh_token: "rt-old".into(),
        id_token: String::new(),
    };
    n.base_url = String::new();
    n.expires_at_ms = Some(1_000_000);
    let a = store.create_account(n).await.unwrap();
    let keyed = store
        .create_account(new_account("h4", vec![]))
        .await
        .unwrap();
    let due = store.oauth_accounts_due(2_000_000).await.unwrap();
    assert!(due.contains(&a.id), "{due:?}");
    assert!(!due.contains(&keyed.id), "API-key accounts are never due");

    let fresh = Credential::OAuth {
        access_token: "at-new".into(),
        refresh_token: "rt-new".into(),
        id_token: "idt".into(),
    };
    assert!(
        store
            .store_oauth_tokens(a.id, &fresh, Some(9_000_000), Some("chatgpt-9"))
            .await
            .unwrap()
    );
    let got = store.get_account(a.id).await.unwrap();
    assert_eq!(got.credential, fresh);
    assert_eq!(got.expires_at_ms, Some(9_000_000));
    assert_eq!(got.chatgpt_account_id, "chatgpt-9");
    assert!(
        !store
            .oauth_accounts_due(2_000_000)
            .await
            .unwrap()
            .contains(&a.id)
    );
    // An API-key credential is refused here.
    assert!(
        store
            .store_oauth_tokens(
                a.id,
                &Credential::ApiKey {
                    api_key: "x".into()
                },
                None,
                None
            )
            .await
            .is_err()
    );
}
