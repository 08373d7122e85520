//! Secrets stay out of the logs: both planes run in this process at `trace` level for
//! every crate, every log line is captured, and a session through every kind of account
//! (API key, subscription with a token refresh), a bad client key, Admin calls and mutual
//! TLS must leave none of the secrets it used in them.
//!
//! One test per binary: the capturing subscriber is process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Mutex;

use serde_json::json;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::cluster::{ADMIN_TOKEN, test_pki};
use tollgate_tests::fake_upstream::{OAuthScript, Script};
use tollgate_tests::fixture::{Gateway, Options};

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// The base64 body lines of a PEM private key (any one of them in a log is a leak).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_session_through_both_planes_logs_no_secret() {
    // Every crate at trace, `log` records included (rustls, sqlx).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(|| Capture)
        .init();

    let unique = uuid::Uuid::new_v4().simple().to_string();
    let encryption_key = tollgate_control_plane::crypto::SecretBox::generate_key_b64();
    let ek = encryption_key.clone();
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(move |c| {
            c.encryption_key = Some(ek.into());
            c.oauth_refresh_retries = 1;
            c.oauth_refresh_backoff_ms = 20;
        }),
        ..Options::default()
    })
    .await;

    let upstream_key = format!("sk-upstream-{unique}");
    let access_token = format!("at-old-{unique}");
    let refresh_token = format!("rt-old-{unique}");
    let new_access_token = format!("at-new-{unique}");
    let new_refresh_token = format!("rt-new-{unique}");
    let wrong_client_key = format!("sk-wrong-{unique}");

    // An API-key account and a subscription login whose token expires within the use
    // margin, so that admission refreshes it at the fake token endpoint first.
    let user = gw.user(10, 10).await;
    let api_group = gw.group("1").await;
    gw.api_key_account(&upstream_key, api_group, 1, 5).await;
    let (_, api_client_key) = gw.key(user, Some(api_group)).await;
    let sub_group = gw.group("1").await;
    gw.account(admin::CreateAccountRequest {
        name: format!("login-{unique}"),
        credential: Some(admin::create_account_request::Credential::Oauth(
            admin::OAuthCredential {
                access_token: access_token.clone(),
                refresh_token: refresh_token.clone(),
                expires_at_ms: Some(now_ms() + 30_000),
                chatgpt_account_id: format!("chatgpt-{unique}"),
                id_token: String::new(),
            },
        )),
        concurrency: Some(5),
        priority: 1,
        groups: vec![admin::AccountGroup {
            group_id: sub_group,
            priority: 1,
        }],
        ..Default::default()
    })
    .await;
    let (_, sub_client_key) = gw.key(user, Some(sub_group)).await;
    gw.up.push_oauth(
        OAuthScript::grant()
            .access_token(&new_access_token)
            .refresh_token(&new_refresh_token)
            .expires_in(3600),
    );

    for stream in [false, true] {
        let body = json!({"model": "gpt-5.1", "input": "hi", "stream": stream});
        let r = gw.post(0, &api_client_key, body).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
        let body = json!({"model": "gpt-5.1-codex", "input": "hi", "stream": stream});
        let r = gw.post(0, &sub_client_key, body).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    assert_eq!(gw.up.oauth_count(), 1, "the login was refreshed");
    assert_eq!(
        gw.up.count_for(&new_access_token),
        2,
        "the refreshed token reached the upstream"
    );
    // An upstream 401 is reported as an outcome; a wrong client key is refused.
    gw.up.push_for(&upstream_key, Script::error(401));
    let r = gw
        .post(
            0,
            &api_client_key,
            json!({"model": "gpt-5.1", "input": "hi"}),
        )
        .await;
    assert!(r.status().is_client_error() || r.status().is_server_error());
    let r = gw
        .post(
            0,
            &wrong_client_key,
            json!({"model": "gpt-5.1", "input": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 401);

    let Gateway { cp, dps, .. } = gw;
    for dp in dps {
        dp.stop().await;
    }
    cp.stop().await;

    let log = captured();
    // The capture saw both planes, at trace level.
    assert!(
        log.contains("control plane serving"),
        "control-plane lines captured"
    );
    assert!(
        log.contains("attached to control plane"),
        "data-plane lines captured"
    );
    assert!(log.contains("TRACE"), "trace lines captured");

    let pki = test_pki();
    let mut secrets = vec![
        ("client API key", api_client_key),
        ("subscription client API key", sub_client_key),
        ("wrong client API key", wrong_client_key),
        ("upstream API key", upstream_key),
        ("OAuth access token", access_token),
        ("OAuth refresh token", refresh_token),
        ("refreshed OAuth access token", new_access_token),
        ("refreshed OAuth refresh token", new_refresh_token),
        ("admin token", ADMIN_TOKEN.to_owned()),
        ("encryption key", encryption_key),
    ];
    for line in pem_body_lines(&pki.server_key) {
        secrets.push(("control plane TLS key", line));
    }
    for line in pem_body_lines(&pki.data_plane_key) {
        secrets.push(("data plane TLS key", line));
    }
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for line in log.lines().filter(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{what}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} of {} log lines leak secrets:\n{}",
        leaks.len(),
        log.lines().count(),
        leaks
            .iter()
            .take(20)
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
