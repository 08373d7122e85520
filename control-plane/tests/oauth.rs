//! OAuth token storage on both dialects (SQLite and Postgres): which logins the
//! background refresher finds due, and storing a refreshed credential (encrypted, only
//! on live OAuth accounts, the ChatGPT account id replaced only when given).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDb};
use sqlx::Connection;
use tollgate_control_plane::model::{Credential, NewAccount};
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{AccountStatus, Platform};
use tollgate_shared::now_ms;

const MIN: i64 = 60_000;

fn oauth(access: &str, refresh: &str) -> Credential {
    Credential::OAuth {
        access_token: access.into(),
        refresh_token: refresh.into(),
        id_token: String::new(),
    }
}

async fn account(store: &Store, credential: Credential, expires_at_ms: Option<i64>) -> i64 {
    store
        .create_account(NewAccount {
            name: "login".into(),
            platform: Platform::OpenAi,
            base_url: String::new(),
            credential,
            concurrency: 3,
            priority: 50,
            model_mapping: Default::default(),
            proxy_url: String::new(),
            user_agent: String::new(),
            expires_at_ms,
            chatgpt_account_id: "acct-old".into(),
            cost_multiplier: Multiplier::ONE,
            notes: String::new(),
            groups: Vec::new(),
        })
        .await
        .unwrap()
        .id
}

async fn due_accounts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let now = now_ms();
    let soon = account(&store, oauth("a", "r"), Some(now + 10 * MIN)).await;
    let expired = account(&store, oauth("a", "r"), Some(now - MIN)).await;
    let _later = account(&store, oauth("a", "r"), Some(now + 120 * MIN)).await;
    let _unknown = account(&store, oauth("a", "r"), None).await;
    let _api_key = account(
        &store,
        Credential::ApiKey {
            api_key: "sk".into(),
        },
        Some(now),
    )
    .await;
    let errored = account(&store, oauth("a", "r"), Some(now)).await;
    store.set_account_error(errored, "x").await.unwrap();
    let deleted = account(&store, oauth("a", "r"), Some(now)).await;
    store.delete_account(deleted).await.unwrap();

    let due = store.oauth_accounts_due(now + 30 * MIN).await.unwrap();
    assert_eq!(
        due,
        vec![expired, soon],
        "soonest first; only live active OAuth"
    );
    assert!(
        store
            .oauth_accounts_due(now - 2 * MIN)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    db.cleanup().await;
}

async fn store_tokens(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let id = account(&store, oauth("at-old", "rt-old"), Some(now_ms())).await;
    store
        .set_account_error(id, "earlier trouble")
        .await
        .unwrap();

    let fresh = Credential::OAuth {
        access_token: "at-fresh-plain".into(),
        refresh_token: "rt-fresh-plain".into(),
        id_token: "id-fresh".into(),
    };
    let until = now_ms() + 60 * MIN;
    assert!(
        store
            .store_oauth_tokens(id, &fresh, Some(until), Some("acct-new"))
            .await
            .unwrap()
    );
    let a = store.get_account(id).await.unwrap();
    assert_eq!(a.credential, fresh);
    assert_eq!(a.expires_at_ms, Some(until));
    assert_eq!(a.chatgpt_account_id, "acct-new");
    assert_eq!(
        a.status,
        AccountStatus::Error,
        "status is not the refresher's to clear"
    );
    assert_eq!(a.error_message, "earlier trouble");

    // Encrypted at rest.
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let (enc,): (String,) = sqlx::query_as("SELECT credential_enc FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(enc.starts_with("v1:"));
    assert!(!enc.contains("at-fresh-plain") && !enc.contains("rt-fresh-plain"));
    conn.close().await.unwrap();

    // The ChatGPT account id stays when none (or an empty one) is given.
    for given in [None, Some(""), Some("  ")] {
        store
            .store_oauth_tokens(id, &fresh, None, given)
            .await
            .unwrap();
        let a = store.get_account(id).await.unwrap();
        assert_eq!(a.chatgpt_account_id, "acct-new");
        assert_eq!(a.expires_at_ms, None);
    }

    // Only live OAuth accounts, only OAuth credentials.
    let api = account(
        &store,
        Credential::ApiKey {
            api_key: "sk".into(),
        },
        None,
    )
    .await;
    assert!(
        !store
            .store_oauth_tokens(api, &fresh, None, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_account(api).await.unwrap().credential,
        Credential::ApiKey {
            api_key: "sk".into()
        }
    );
    assert!(
        store
            .store_oauth_tokens(
                id,
                &Credential::ApiKey {
                    api_key: "sk".into()
                },
                None,
                None
            )
            .await
            .is_err()
    );
    store.delete_account(id).await.unwrap();
    assert!(
        !store
            .store_oauth_tokens(id, &fresh, None, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_oauth_tokens(9_999, &fresh, None, None)
            .await
            .unwrap()
    );
    store.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_due_accounts() {
    due_accounts(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_due_accounts() {
    due_accounts(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_store_tokens() {
    store_tokens(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_tokens() {
    store_tokens(Backend::Postgres).await;
}
