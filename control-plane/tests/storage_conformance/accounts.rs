//! Upstream accounts: CRUD, credentials at rest, group membership, error and rate-limit state.

use std::collections::BTreeMap;

use sqlx::Connection;
use tollgate_control_plane::Error;
use tollgate_control_plane::model::{Account, AccountPatch, Credential, Page};
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{AccountKind, AccountStatus, GroupKind};

use crate::fixtures::{
    assert_invalid, assert_not_found, member, new_account, new_group, raw_exec, walk,
};

pub(crate) async fn case_account_create_get_list(store: &Store) {
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
    store.delete_group(g2.id, true).await.unwrap();
    assert!(store.get_account(b.id).await.unwrap().groups.is_empty());
    assert!(
        store
            .list_group_accounts(Some(g2.id))
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn case_account_credentials_encrypted_at_rest(store: &Store, url: &str) {
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
    let other = Store::connect(url, tollgate_tests::db::secrets())
        .await
        .unwrap();
    assert!(matches!(
        other.get_account(a.id).await,
        Err(Error::Crypto(_))
    ));
    other.close().await;
}

pub(crate) async fn case_account_update_patch(store: &Store) {
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

pub(crate) async fn case_account_groups_replace(store: &Store) {
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

pub(crate) async fn case_account_clear_error_and_rate_limit(store: &Store, url: &str) {
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
