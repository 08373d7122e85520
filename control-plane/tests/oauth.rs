//! OAuth token storage on both dialects (SQLite and Postgres): which logins the
//! background refresher finds due, and storing a refreshed credential (encrypted, only
//! on live OAuth accounts, the ChatGPT account id replaced only when given). Plus the
//! onboarding round trip through `tollgate-admin` against a real control plane and the
//! test kit's fake token endpoint. (The full flows with data planes are in `tests/tests/oauth.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use sqlx::Connection;
use tollgate_admin as cli;
use tollgate_control_plane::model::{Credential, NewAccount};
use tollgate_control_plane::oauth::pkce::challenge_s256;
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{AccountStatus, Platform};
use tollgate_shared::now_ms;
use tollgate_tests::cluster::{ADMIN_TOKEN, ControlPlane, Home, base_config};
use tollgate_tests::fake_upstream::{FakeUpstream, OAuthScript};
use tollgate_tests::{Backend, TestDb, on_both_backends};

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
}

on_both_backends!(due_accounts, store_tokens);

// ---------------------------------------------------------------- CLI onboarding

async fn cli_json(endpoint: &str, args: &[&str]) -> Value {
    let mut argv = vec!["tollgate-admin", "--json"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--endpoint", endpoint, "--token", ADMIN_TOKEN]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::main_with(argv, &mut out, &mut err).await;
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    assert_eq!(code, 0, "{args:?}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn cli_onboarding_round_trip() {
    let up = FakeUpstream::start().await;
    up.set_oauth_default(
        OAuthScript::grant()
            .access_token("at-cli")
            .refresh_token("rt-cli")
            .email("cli@example.com")
            .account_id("acct-cli")
            .plan_type("team")
            .expires_in(3600),
    );
    let home = Home::embedded();
    let mut config = base_config(home.data_dir());
    config.oauth_token_url = up.oauth_token_url();
    let cp = ControlPlane::start_with(home, config).await;
    let endpoint = cp.url();

    let started = cli_json(&endpoint, &["account", "oauth-url"]).await;
    let auth_url = started["auth_url"].as_str().unwrap();
    let session = started["session_id"].as_str().unwrap();
    let state = started["state"].as_str().unwrap();
    assert!(
        auth_url.contains("code_challenge_method=S256"),
        "{auth_url}"
    );
    assert!(started["expires_at_ms"].as_i64().unwrap() > now_ms());
    let challenge = url::Url::parse(auth_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code_challenge")
        .map(|(_, v)| v.into_owned())
        .unwrap();

    let callback = format!("http://localhost:1455/auth/callback?code=the-code&state={state}");
    let account = cli_json(
        &endpoint,
        &[
            "account",
            "oauth-exchange",
            "--session",
            session,
            "--code",
            &callback,
            "--concurrency",
            "7",
        ],
    )
    .await;
    assert_eq!(account["kind"], "oauth");
    assert_eq!(account["name"], "cli@example.com");
    assert_eq!(account["chatgpt_account_id"], "acct-cli");
    assert_eq!(account["notes"], "ChatGPT plan: team");
    assert_eq!(account["concurrency"], 7);
    let printed = account.to_string();
    assert!(!printed.contains("at-cli") && !printed.contains("rt-cli"));

    let calls = up.oauth_calls();
    assert_eq!(calls.len(), 1);
    let form = &calls[0].params;
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(challenge_s256(&form["code_verifier"]), challenge);

    cp.stop().await;
}
