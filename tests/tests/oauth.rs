//! Subscription (OAuth) logins end to end (accounts.md, "Subscription tokens"): a real
//! control plane and data plane, the fake upstream's codex endpoint and its fake OAuth
//! token endpoint. Token refresh before use, collapsed concurrent refreshes, retirement
//! after failing refreshes, the forced refresh after a 401, and onboarding through the
//! Admin API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_control_plane::oauth::pkce::challenge_s256;
use tollgate_control_plane::oauth::{DEFAULT_CLIENT_ID, DEFAULT_REDIRECT_URI};
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually;
use tollgate_tests::fake_proxy::HttpProxy;
use tollgate_tests::fake_upstream::{OAuthScript, Script};
use tollgate_tests::fixture::{Gateway, Options};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// Retries 2 with a 20 ms backoff, so failing refreshes settle quickly.
async fn start() -> Gateway {
    Gateway::start_with(Options {
        control_plane: Box::new(|c| {
            c.oauth_refresh_retries = 2;
            c.oauth_refresh_backoff_ms = 20;
        }),
        ..Options::default()
    })
    .await
}

fn body() -> Value {
    json!({"model": "gpt-5.1-codex", "input": "hi", "stream": false})
}

/// A user (concurrency 20) with a key on a fresh group: (group, key secret).
async fn user_and_group(gw: &Gateway) -> (i64, String) {
    let user = gw.user(20, 10).await;
    let group = gw.group("1").await;
    let (_, key) = gw.key(user, Some(group)).await;
    (group, key)
}

/// An OAuth login whose access token `token` expires `expires_in_ms` from now; its
/// refresh token is `rt-<token>`.
async fn login(gw: &Gateway, token: &str, expires_in_ms: i64, group: i64, priority: i32) -> i64 {
    gw.account(admin::CreateAccountRequest {
        name: format!("login-{token}"),
        credential: Some(admin::create_account_request::Credential::Oauth(
            admin::OAuthCredential {
                access_token: token.into(),
                refresh_token: format!("rt-{token}"),
                expires_at_ms: Some(now_ms() + expires_in_ms),
                chatgpt_account_id: format!("chatgpt-{token}"),
                id_token: String::new(),
            },
        )),
        concurrency: Some(20),
        priority,
        groups: vec![admin::AccountGroup {
            group_id: group,
            priority,
        }],
        ..Default::default()
    })
    .await
}

async fn get_account(gw: &Gateway, id: i64) -> admin::Account {
    gw.admin
        .clone()
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner()
}

/// POSTs one request; (status, body text).
async fn send(gw: &Gateway, key: &str) -> (u16, String) {
    let r = gw.post(0, key, body()).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn an_expiring_login_is_refreshed_before_use() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let id = login(&gw, "at-old", MIN, group, 1).await;
    gw.up.push_oauth(
        OAuthScript::grant()
            .access_token("at-new")
            .refresh_token("rt-new")
            .expires_in(3600),
    );

    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(gw.up.oauth_count(), 1);
    let call = &gw.up.oauth_calls()[0];
    assert_eq!(call.grant_type(), Some("refresh_token"));
    assert_eq!(call.param("refresh_token"), Some("rt-at-old"));
    assert_eq!(call.param("client_id"), Some(DEFAULT_CLIENT_ID));
    assert_eq!(call.param("scope"), Some("openid profile email"));
    let got = gw.up.last().unwrap();
    assert_eq!(
        got.bearer.as_deref(),
        Some("at-new"),
        "the lease carried the new token"
    );
    assert_eq!(gw.up.count_for("at-old"), 0);

    let a = get_account(&gw, id).await;
    assert_eq!(a.status, "active");
    let expires = a.expires_at_ms.unwrap();
    assert!(
        (now_ms() + HOUR - MIN..=now_ms() + HOUR).contains(&expires),
        "expiry = now + expires_in: {}",
        expires - now_ms()
    );

    // Fresh now: the next request needs no refresh.
    let (status, _) = send(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(gw.up.oauth_count(), 1);
    assert_eq!(gw.up.count_for("at-new"), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    login(&gw, "at-stale", 30_000, group, 1).await;
    gw.up.push_oauth(
        OAuthScript::grant()
            .access_token("at-shared")
            .delay(Duration::from_millis(500)),
    );

    let requests = (0..10).map(|_| send(&gw, &key));
    let results = futures::future::join_all(requests).await;
    for (status, text) in &results {
        assert_eq!(*status, 200, "{text}");
    }
    assert_eq!(
        gw.up.oauth_count(),
        1,
        "one token-endpoint call for all ten"
    );
    assert_eq!(gw.up.count_for("at-shared"), 10);
    assert_eq!(gw.up.count_for("at-stale"), 0);
}

#[tokio::test]
async fn a_failing_token_endpoint_retires_the_login_and_requests_fail_over() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let id = login(&gw, "at-doomed", MIN, group, 1).await;
    gw.api_key_account("sk-fallback", group, 10, 5).await;
    gw.up.set_oauth_default(OAuthScript::server_error());

    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        gw.up.count_for("sk-fallback"),
        1,
        "served by the other account"
    );
    assert_eq!(gw.up.count_for("at-doomed"), 0);
    assert_eq!(gw.up.oauth_count(), 3, "the first attempt and two retries");

    let a = get_account(&gw, id).await;
    assert_eq!(a.status, "error");
    assert!(
        a.error_message
            .starts_with("Token refresh failed: token endpoint answered 500: server_error"),
        "{}",
        a.error_message
    );
    assert!(!a.error_message.contains("rt-at-doomed"));

    // Retired: no more refresh attempts, the other account serves.
    let (status, _) = send(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(gw.up.oauth_count(), 3);
    assert_eq!(gw.up.count_for("sk-fallback"), 2);
}

#[tokio::test]
async fn a_refused_refresh_with_no_other_account_is_503() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let id = login(&gw, "at-revoked", -MIN, group, 1).await;
    gw.up.set_oauth_default(OAuthScript::invalid_grant());

    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(
        gw.up.count(),
        0,
        "nothing went upstream with the expired token"
    );
    assert_eq!(gw.up.oauth_count(), 1, "invalid_grant is not retried");
    let a = get_account(&gw, id).await;
    assert_eq!(a.status, "error");
    assert!(
        a.error_message
            .starts_with("Token refresh failed: token endpoint answered 400: invalid_grant"),
        "{}",
        a.error_message
    );
}

#[tokio::test]
async fn a_401_forces_a_refresh_and_keeps_the_login() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let id = login(&gw, "at-rejected", 24 * HOUR, group, 1).await;
    gw.api_key_account("sk-backup", group, 10, 5).await;
    gw.up
        .push_for("at-rejected", Script::error(401).message("token expired"));
    gw.up.push_oauth(
        OAuthScript::grant()
            .access_token("at-renewed")
            .refresh_token("rt-renewed")
            .expires_in(3600),
    );

    // The 401 fails over to the other account (the same one is excluded).
    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(gw.up.count_for("at-rejected"), 1);
    assert_eq!(gw.up.count_for("sk-backup"), 1);

    // The reported 401 forced a refresh although the token was far from expiry.
    eventually(
        "the forced refresh is stored",
        Duration::from_secs(10),
        || async {
            get_account(&gw, id)
                .await
                .expires_at_ms
                .is_some_and(|t| t < now_ms() + 2 * HOUR)
        },
    )
    .await;
    assert_eq!(gw.up.oauth_count(), 1);
    let call = &gw.up.oauth_calls()[0];
    assert_eq!(call.param("refresh_token"), Some("rt-at-rejected"));
    let a = get_account(&gw, id).await;
    assert_eq!(a.status, "active", "{}", a.error_message);
    assert_eq!(a.error_message, "");

    // The login serves again, with the new token.
    let (status, _) = send(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(gw.up.count_for("at-renewed"), 1);
    assert_eq!(gw.up.oauth_count(), 1);
}

#[tokio::test]
async fn a_401_whose_refresh_fails_retires_the_login() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let id = login(&gw, "at-gone", 24 * HOUR, group, 1).await;
    gw.api_key_account("sk-spare", group, 10, 5).await;
    gw.up
        .push_for("at-gone", Script::error(401).message("token revoked"));
    gw.up.set_oauth_default(OAuthScript::invalid_grant());

    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    eventually("the login is retired", Duration::from_secs(10), || async {
        get_account(&gw, id).await.status == "error"
    })
    .await;
    // The 401's own message wins over the refresh failure's.
    eventually(
        "the 401 message is recorded",
        Duration::from_secs(10),
        || async {
            get_account(&gw, id).await.error_message == "Authentication failed (401): token revoked"
        },
    )
    .await;
    assert_eq!(gw.up.oauth_count(), 1);
    let (status, _) = send(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(gw.up.count_for("sk-spare"), 2);
}

#[tokio::test]
async fn onboarding_creates_the_account_from_the_id_token() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let mut admin = gw.admin.clone();

    let started = admin
        .generate_o_auth_url(admin::GenerateOAuthUrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!started.session_id.is_empty());
    assert!(started.expires_at_ms > now_ms() + 5 * MIN);
    let url = url::Url::parse(&started.auth_url).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(q["redirect_uri"], DEFAULT_REDIRECT_URI);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], started.state);
    let challenge = q["code_challenge"].clone();
    assert_eq!(challenge.len(), 43, "base64url of a SHA-256 digest");

    gw.up.push_oauth(
        OAuthScript::grant()
            .access_token("at-onboarded")
            .refresh_token("rt-onboarded")
            .email("new-login@example.com")
            .account_id("acct-onboarded")
            .plan_type("pro")
            .expires_in(3600),
    );
    let account = admin
        .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
            session_id: started.session_id.clone(),
            code: format!(
                "{DEFAULT_REDIRECT_URI}?code=code-123&scope=openid&state={}",
                started.state
            ),
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority: 5,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.kind, "oauth");
    assert_eq!(account.status, "active");
    assert_eq!(account.chatgpt_account_id, "acct-onboarded");
    assert_eq!(account.name, "new-login@example.com");
    assert_eq!(account.notes, "ChatGPT plan: pro");
    assert!(account.expires_at_ms.unwrap() > now_ms() + HOUR - MIN);

    // The exchange sent the code with the verifier behind the URL's challenge.
    assert_eq!(gw.up.oauth_count(), 1);
    let call = &gw.up.oauth_calls()[0];
    assert_eq!(call.grant_type(), Some("authorization_code"));
    assert_eq!(call.param("code"), Some("code-123"));
    assert_eq!(call.param("redirect_uri"), Some(DEFAULT_REDIRECT_URI));
    assert_eq!(call.param("client_id"), Some(DEFAULT_CLIENT_ID));
    let verifier = call.param("code_verifier").unwrap();
    assert_eq!(challenge_s256(verifier), challenge);

    // The new login serves with its tokens.
    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    let got = gw.up.last().unwrap();
    assert_eq!(got.bearer.as_deref(), Some("at-onboarded"));
    assert_eq!(got.header("chatgpt-account-id"), Some("acct-onboarded"));

    // A session is used once; unknown sessions are refused naming the field.
    for session_id in [started.session_id.clone(), "no-such-session".to_owned()] {
        let e = admin
            .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
                session_id,
                code: "code-456".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("session_id"), "{}", e.message());
    }
    assert_eq!(gw.up.oauth_count(), 1, "refused before any exchange");
}

#[tokio::test]
async fn onboarding_refuses_a_mismatched_state_and_keeps_the_session() {
    let gw = start().await;
    let mut admin = gw.admin.clone();
    let started = admin
        .generate_o_auth_url(admin::GenerateOAuthUrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    let e = admin
        .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
            session_id: started.session_id.clone(),
            code: "code-1".into(),
            state: "not-the-state".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("state"), "{}", e.message());

    // A failed exchange keeps the session too; the error carries no code or token.
    gw.up.push_oauth(OAuthScript::invalid_grant());
    let e = admin
        .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
            session_id: started.session_id.clone(),
            code: "code-bad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("invalid_grant"), "{}", e.message());
    assert!(!e.message().contains("code-bad"));

    let account = admin
        .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
            session_id: started.session_id,
            code: "code-good".into(),
            state: started.state,
            name: "my login".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.name, "my login");
    assert_eq!(account.chatgpt_account_id, "acct-fake-0001");
    assert_eq!(gw.up.oauth_count(), 2);
}

#[tokio::test]
async fn refresh_and_code_exchange_go_through_the_account_proxy() {
    let gw = start().await;
    let (group, key) = user_and_group(&gw).await;
    let proxy = HttpProxy::with_credentials("proxy-user", "proxy-pass").await;
    let proxy_url = proxy.url_with("proxy-user", "proxy-pass");
    let id = gw
        .account(admin::CreateAccountRequest {
            name: "proxied".into(),
            credential: Some(admin::create_account_request::Credential::Oauth(
                admin::OAuthCredential {
                    access_token: "at-proxied".into(),
                    refresh_token: "rt-proxied".into(),
                    expires_at_ms: Some(now_ms() + 30_000),
                    ..Default::default()
                },
            )),
            proxy_url: proxy_url.clone(),
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority: 1,
            }],
            ..Default::default()
        })
        .await;
    gw.up
        .push_oauth(OAuthScript::grant().access_token("at-proxied-new"));
    let (status, text) = send(&gw, &key).await;
    assert_eq!(status, 200, "{text}");
    let token_calls: Vec<_> = proxy
        .forwarded()
        .into_iter()
        .filter(|r| r.target.ends_with("/oauth/token"))
        .collect();
    assert_eq!(token_calls.len(), 1, "{:?}", proxy.requests());
    assert_eq!(
        token_calls[0].credentials,
        Some(("proxy-user".into(), "proxy-pass".into()))
    );
    assert_eq!(gw.up.count_for("at-proxied-new"), 1);
    assert_eq!(get_account(&gw, id).await.status, "active");

    // Onboarding with a proxy exchanges the code through it and keeps it on the account.
    let mut admin = gw.admin.clone();
    let started = admin
        .generate_o_auth_url(admin::GenerateOAuthUrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    let account = admin
        .exchange_o_auth_code(admin::ExchangeOAuthCodeRequest {
            session_id: started.session_id,
            code: "code-via-proxy".into(),
            proxy_url: proxy_url.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token_calls = proxy
        .forwarded()
        .into_iter()
        .filter(|r| r.target.ends_with("/oauth/token"))
        .count();
    assert_eq!(token_calls, 2);
    assert!(!account.proxy_url.is_empty());
    assert!(!account.proxy_url.contains("proxy-pass"));
}
