//! Dead letters and the audit's queries.

use tollgate_control_plane::storage::{KeyBooks, Store, UserBooks};
use tollgate_shared::domain::BillingMode;

use crate::fixtures::{assert_not_found, new_key, new_user, raw_exec, usage};

pub(crate) async fn case_dead_letters_stored_once_listed_and_marked(store: &Store) {
    assert!(
        store
            .insert_dead_letter("r-1", "bad model", r#"{"a":"\u0000"}"#, 10)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_dead_letter("r-1", "again", "{}", 11)
            .await
            .unwrap(),
        "once"
    );
    assert!(
        store
            .insert_dead_letter("r-2", "no price", "{}", 20)
            .await
            .unwrap()
    );
    assert!(
        store
            .insert_dead_letter("r-3", "no key", "{}", 30)
            .await
            .unwrap()
    );
    let all = store.list_dead_letters(false, 0, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, vec!["r-3", "r-2", "r-1"], "newest first");
    assert_eq!(all[2].record, r#"{"a":"\u0000"}"#);
    assert_eq!(all[2].reason, "bad model");
    let page2 = store.list_dead_letters(false, all[0].id, 1).await.unwrap();
    assert_eq!(page2[0].request_id, "r-2");
    assert!(
        store
            .mark_dead_letter_recharged(all[2].id, "gpt-5", 40)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_dead_letter_recharged(all[2].id, "gpt-5", 41)
            .await
            .unwrap()
    );
    let got = store.get_dead_letter(all[2].id).await.unwrap();
    assert_eq!(
        (got.recharged_at_ms, got.recharged_model.as_str()),
        (Some(40), "gpt-5")
    );
    assert_eq!(
        store.list_dead_letters(false, 0, 10).await.unwrap().len(),
        2
    );
    assert_eq!(store.list_dead_letters(true, 0, 10).await.unwrap().len(), 3);
    let c = store.count_dead_letters().await.unwrap();
    assert_eq!((c.total, c.pending, c.oldest_pending_ms), (3, 2, Some(20)));
    assert_not_found(store.get_dead_letter(999).await, "dead letter 999");
}

pub(crate) async fn case_audit_queries(store: &Store, url: &str) {
    let user = store.create_user(new_user("audit@x")).await.unwrap();
    let mut k = new_key(user.id, "hash-audit");
    k.quota_nanos = 1_000_000_000;
    let key = store.create_key(k).await.unwrap();
    let charge = |id: &str| {
        let mut u = usage(id, 1);
        u.key_id = key.id;
        u.user_id = user.id;
        u.group_id = None;
        u
    };
    store.charge_usage(&charge("a-1"), 5).await.unwrap();
    store.reset_key_quota(key.id).await.unwrap();
    store.charge_usage(&charge("a-2"), 6).await.unwrap();
    let mut sub_row = charge("a-3");
    sub_row.billing_mode = BillingMode::Subscription;
    sub_row.subscription_id = Some(4242);
    store.insert_usage(&sub_row).await.unwrap();
    let mut free = charge("a-4");
    free.total_cost_nanos = 0;
    free.actual_cost_nanos = 0;
    store.insert_usage(&free).await.unwrap();

    assert_eq!(
        store.audit_keys().await.unwrap(),
        vec![KeyBooks {
            key_id: key.id,
            quota_used_nanos: 4_706_250,
            // Rows after the reset: a-2, a-3 (inserted directly) and a-4.
            charged_since_reset_nanos: 2 * 4_706_250,
        }]
    );
    assert_eq!(
        store.audit_users().await.unwrap(),
        vec![UserBooks {
            user_id: user.id,
            balance_nanos: -2 * 4_706_250,
            ledger_sum_nanos: 0,
            balance_charges_nanos: 2 * 4_706_250,
        }]
    );
    let orphans = store.audit_orphan_subscription_rows(10).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].request_id, "a-3");
    let zero = store.audit_zero_cost_rows(10).await.unwrap();
    assert_eq!(
        zero.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a-4"]
    );
    assert_eq!(zero[0].upstream_model, "gpt-5-2025-08-07");
    raw_exec(
        url,
        "UPDATE usage_logs SET estimated = 1 WHERE request_id = 'a-4'",
    )
    .await;
    assert!(
        store.audit_zero_cost_rows(10).await.unwrap().is_empty(),
        "estimates excepted"
    );
    assert_eq!(store.count_usage_rows().await.unwrap(), 4);
    // Turning a quota on sets the baseline too.
    let plain = store
        .create_key(new_key(user.id, "hash-plain"))
        .await
        .unwrap();
    let mut u = charge("a-5");
    u.key_id = plain.id;
    store.charge_usage(&u, 7).await.unwrap();
    store
        .update_key(
            plain.id,
            tollgate_control_plane::model::KeyPatch {
                quota_nanos: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let books = store.audit_keys().await.unwrap();
    let p = books.iter().find(|b| b.key_id == plain.id).unwrap();
    assert_eq!((p.quota_used_nanos, p.charged_since_reset_nanos), (0, 0));
}
