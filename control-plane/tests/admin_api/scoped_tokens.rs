//! Scoped admin credentials and the audit log over a real control plane: named tokens
//! (shown once, stored hashed, revocable, expiring) with `read` / `keys` / `admin` scopes,
//! and one audit entry per successful write naming the caller, with no secret in it.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_control_plane::admin::access;
use tollgate_control_plane::billing::dead_letter;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::gateway::v1 as gateway;
use tonic::Code;

use crate::admin_support::{self, Client, Harness, Snapshot, assert_code};
use crate::helpers::{api_key_account, new_group, new_key, new_user, sha256_hex};
use tollgate_tests::Backend;

/// Creates a named token with the bootstrap client; returns it and its secret.
pub(crate) async fn new_token(h: &Harness, name: &str, scope: &str) -> (pb::AdminToken, String) {
    let r = h
        .client()
        .create_admin_token(pb::CreateAdminTokenRequest {
            name: name.into(),
            scope: scope.into(),
            expiry: None,
        })
        .await
        .unwrap()
        .into_inner();
    (r.token.unwrap(), r.secret)
}

fn bearer(h: &Harness, secret: &str) -> Client {
    h.client_with(Some(&format!("Bearer {secret}")))
}

/// The snapshot without `admin_tokens` (whose `last_used_at_ms` moves on every call).
async fn data(h: &Harness) -> Snapshot {
    let mut s = h.snapshot().await;
    s.remove("admin_tokens");
    s
}

pub(crate) async fn read_token_can_query_but_not_write(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut boot = h.client();
    let user = new_user(&mut boot, "r@example.com").await;
    let (token, secret) = new_token(&h, "reporting", "read").await;
    assert_eq!(token.scope, "read");
    assert!(secret.starts_with(tollgate_control_plane::admin::TOKEN_PREFIX));
    assert_eq!(token.created_by, "bootstrap");

    // Shown once: only its hash is stored, the list shows the hint.
    assert!(h.where_stored(&secret).await.is_empty());
    let row = h.row("admin_tokens", token.id).await;
    assert_eq!(row["token_hash"].text(), sha256_hex(&secret));

    let mut c = bearer(&h, &secret);
    let before = data(&h).await;
    c.query_usage(pb::QueryUsageRequest::default())
        .await
        .unwrap();
    c.usage_series(pb::UsageSeriesRequest::default())
        .await
        .unwrap();
    c.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    c.get_user(pb::GetUserRequest { id: user.id })
        .await
        .unwrap();
    c.list_audit_log(pb::ListAuditLogRequest::default())
        .await
        .unwrap();

    let denied = Code::PermissionDenied;
    let st = assert_code(
        c.create_key(pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        })
        .await,
        denied,
        "`keys` scope",
    );
    assert!(st.message().contains("CreateKey"), "{st:?}");
    assert_code(
        c.adjust_balance(pb::AdjustBalanceRequest {
            user_id: user.id,
            op: pb::BalanceOp::Add as i32,
            amount_nanos: 1,
            reason: "x".into(),
            allow_negative: false,
        })
        .await,
        denied,
        "`keys` scope",
    );
    assert_code(
        c.create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            ..Default::default()
        })
        .await,
        denied,
        "`admin` scope",
    );
    assert_code(
        c.list_admin_tokens(pb::ListAdminTokensRequest::default())
            .await,
        denied,
        "`admin` scope",
    );
    assert_code(
        c.create_admin_token(pb::CreateAdminTokenRequest {
            name: "escalate".into(),
            scope: "admin".into(),
            expiry: None,
        })
        .await,
        denied,
        "`admin` scope",
    );
    assert!(data(&h).await == before, "a read token changed data");

    // Its use is recorded.
    let listed = boot
        .list_admin_tokens(pb::ListAdminTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let t = listed.iter().find(|t| t.id == token.id).unwrap();
    assert!(t.last_used_at_ms.unwrap() >= token.created_at_ms);
    assert_eq!(t.token_hint, token.token_hint);
    h.stop().await;
}

pub(crate) async fn keys_token_manages_keys_but_not_accounts(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut boot = h.client();
    let user = new_user(&mut boot, "k@example.com").await;
    let (_, secret) = new_token(&h, "billing-svc", "keys").await;
    let mut c = bearer(&h, &secret);

    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            name: "from billing".into(),
            ..Default::default()
        },
    )
    .await;
    c.disable_key(pb::KeyIdRequest { id: key.id })
        .await
        .unwrap();
    c.adjust_balance(pb::AdjustBalanceRequest {
        user_id: user.id,
        op: pb::BalanceOp::Add as i32,
        amount_nanos: 1_000,
        reason: "top-up".into(),
        allow_negative: false,
    })
    .await
    .unwrap();
    c.get_key(pb::GetKeyRequest { id: key.id }).await.unwrap();

    let before = data(&h).await;
    let denied = Code::PermissionDenied;
    assert_code(
        c.create_account(api_key_account("acct", "sk-upstream-0001"))
            .await,
        denied,
        "`admin` scope",
    );
    assert_code(
        c.create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            ..Default::default()
        })
        .await,
        denied,
        "`admin` scope",
    );
    assert_code(
        c.create_group(pb::CreateGroupRequest {
            name: "g".into(),
            ..Default::default()
        })
        .await,
        denied,
        "`admin` scope",
    );
    assert!(data(&h).await == before, "refused calls changed data");
    h.stop().await;
}

pub(crate) async fn revoked_and_expired_tokens_are_unauthenticated(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut boot = h.client();
    let (revoked, revoked_secret) = new_token(&h, "old-job", "admin").await;
    let (expired, expired_secret) = new_token(&h, "temp", "admin").await;
    for s in [&revoked_secret, &expired_secret] {
        bearer(&h, s)
            .list_users(pb::ListUsersRequest::default())
            .await
            .unwrap();
    }

    let r = boot
        .revoke_admin_token(pb::RevokeAdminTokenRequest { id: revoked.id })
        .await
        .unwrap()
        .into_inner();
    assert!(r.revoked_at_ms.is_some());
    // Expiry passes (as time would) by moving it into the past.
    h.exec(
        "UPDATE admin_tokens SET expires_at_ms = $1 WHERE id = $2",
        &[now_ms() - 1, expired.id],
    )
    .await;

    for s in [&revoked_secret, &expired_secret] {
        let mut c = bearer(&h, s);
        let r = c.list_users(pb::ListUsersRequest::default()).await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
        let r = c
            .create_user(pb::CreateUserRequest {
                email: "late@example.com".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    }

    // Revoking twice, or an unknown token, is refused; the name is free again.
    assert_code(
        boot.revoke_admin_token(pb::RevokeAdminTokenRequest { id: revoked.id })
            .await,
        Code::FailedPrecondition,
        "already revoked",
    );
    assert_code(
        boot.revoke_admin_token(pb::RevokeAdminTokenRequest { id: 999_999 })
            .await,
        Code::NotFound,
        "admin token",
    );
    assert_code(
        boot.create_admin_token(pb::CreateAdminTokenRequest {
            name: "temp".into(),
            scope: "read".into(),
            expiry: None,
        })
        .await,
        Code::AlreadyExists,
        "temp",
    );
    let (again, _) = new_token(&h, "old-job", "read").await;
    assert_ne!(again.id, revoked.id);
    let live: Vec<_> = boot
        .list_admin_tokens(pb::ListAdminTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert!(
        !live.contains(&revoked.id) && live.contains(&again.id),
        "{live:?}"
    );
    let all = boot
        .list_admin_tokens(pb::ListAdminTokensRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(all.len(), 3);
    h.stop().await;
}

pub(crate) async fn bad_token_requests_are_refused(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let before = h.snapshot().await;
    for (req, field) in [
        (("", "read"), "name"),
        (("has space", "read"), "name"),
        (("bootstrap", "admin"), "name"),
        (("ok", ""), "scope"),
        (("ok", "owner"), "scope"),
    ] {
        let r = c
            .create_admin_token(pb::CreateAdminTokenRequest {
                name: req.0.into(),
                scope: req.1.into(),
                expiry: None,
            })
            .await;
        assert_code(r, Code::InvalidArgument, field);
    }
    let r = c
        .create_admin_token(pb::CreateAdminTokenRequest {
            name: "ok".into(),
            scope: "read".into(),
            expiry: Some(pb::create_admin_token_request::Expiry::ExpiresAtMs(1)),
        })
        .await;
    assert_code(r, Code::InvalidArgument, "expires_at_ms");
    let r = c
        .list_audit_log(pb::ListAuditLogRequest {
            limit: 1001,
            ..Default::default()
        })
        .await;
    assert_code(r, Code::InvalidArgument, "limit");
    assert!(h.snapshot().await == before);
    h.stop().await;
}

/// A token endpoint answering every POST with one fixed grant (for ExchangeOAuthCode).
async fn token_endpoint(stop: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    let answer = Arc::new(
        serde_json::json!({
            "access_token": "at-audit-secret",
            "refresh_token": "rt-audit-secret",
            "expires_in": 3600,
        })
        .to_string(),
    );
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a.unwrap(),
            };
            // Read the request head and body (one small form), then answer.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                let done = text.find("\r\n\r\n").is_some_and(|end| {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    buf.len() >= end + 4 + len
                });
                if n == 0 || done {
                    break;
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    url
}

pub(crate) async fn every_admin_write_is_audited_with_its_actor(backend: Backend) {
    let stop = CancellationToken::new();
    let token_url = token_endpoint(stop.clone()).await;
    let h = Harness::start_with(backend, |c| c.oauth_token_url = token_url).await;
    let (ops, ops_secret) = new_token(&h, "ops", "admin").await;
    let mut c = bearer(&h, &ops_secret);
    let started = now_ms();

    // Every write RPC once (deletes on rows made for them), in this order.
    let mut driven: Vec<(&str, String)> = Vec::new();
    let user = new_user(&mut c, "audit@example.com").await;
    driven.push(("CreateUser", user.id.to_string()));
    c.update_user(pb::UpdateUserRequest {
        id: user.id,
        name: Some("Audited".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    driven.push(("UpdateUser", user.id.to_string()));
    c.adjust_balance(pb::AdjustBalanceRequest {
        user_id: user.id,
        op: pb::BalanceOp::Add as i32,
        amount_nanos: 5_000,
        reason: "credit".into(),
        allow_negative: false,
    })
    .await
    .unwrap();
    driven.push(("AdjustBalance", user.id.to_string()));
    let group = new_group(&mut c, "pro", "subscription").await;
    driven.push(("CreateGroup", group.id.to_string()));
    c.update_group(pb::UpdateGroupRequest {
        id: group.id,
        description: Some("paid".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    driven.push(("UpdateGroup", group.id.to_string()));

    let custom_key = "customer-supplied-key-secret-0001";
    let (key, key_secret) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            name: "ci".into(),
            custom_key: custom_key.into(),
            ..Default::default()
        },
    )
    .await;
    let k = key.id.to_string();
    driven.push(("CreateKey", k.clone()));
    c.update_key(pb::UpdateKeyRequest {
        id: key.id,
        quota_nanos: Some(9_000),
        ..Default::default()
    })
    .await
    .unwrap();
    driven.push(("UpdateKey", k.clone()));
    for (action, id) in [
        ("DisableKey", key.id),
        ("EnableKey", key.id),
        ("ResetKeyQuota", key.id),
        ("ClearKeyExpiration", key.id),
    ] {
        let req = pb::KeyIdRequest { id };
        match action {
            "DisableKey" => drop(c.disable_key(req).await.unwrap()),
            "EnableKey" => drop(c.enable_key(req).await.unwrap()),
            "ResetKeyQuota" => drop(c.reset_key_quota(req).await.unwrap()),
            _ => drop(c.clear_key_expiration(req).await.unwrap()),
        }
        driven.push((action, k.clone()));
    }
    // A usage record of this key that could not be charged (an over-long model),
    // re-charged by the operator under a corrected model.
    let poison = gateway::UsageReport {
        request_id: "req-audit-dead-letter".into(),
        key_id: key.id,
        user_id: user.id,
        model: "x".repeat(300),
        input_tokens: 10,
        output_tokens: 5,
        started_at_ms: now_ms(),
        billing_mode: "balance".into(),
        rate_multiplier: "1".into(),
        account_cost_multiplier: "1".into(),
        ..Default::default()
    };
    let json = dead_letter::to_json(&poison).unwrap();
    assert!(
        h.store
            .insert_dead_letter(&poison.request_id, "model too long", &json, now_ms())
            .await
            .unwrap()
    );
    let dl = c
        .list_dead_letters(pb::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters
        .remove(0);
    c.recharge_dead_letter(pb::RechargeDeadLetterRequest {
        id: dl.id,
        model: Some("gpt-5".into()),
    })
    .await
    .unwrap();
    driven.push(("RechargeDeadLetter", dl.id.to_string()));
    c.delete_key(pb::KeyIdRequest { id: key.id }).await.unwrap();
    driven.push(("DeleteKey", k));

    let upstream_key = "sk-upstream-secret-0001";
    let proxy_password = "proxy-password-secret";
    let account = c
        .create_account(pb::CreateAccountRequest {
            proxy_url: format!("http://user:{proxy_password}@proxy.example.com:3128"),
            ..api_key_account("main", upstream_key)
        })
        .await
        .unwrap()
        .into_inner();
    let a = account.id.to_string();
    driven.push(("CreateAccount", a.clone()));
    let new_upstream_key = "sk-upstream-secret-0002";
    c.update_account(pb::UpdateAccountRequest {
        id: account.id,
        priority: Some(10),
        credential: Some(pb::update_account_request::Credential::ApiKey(
            pb::ApiKeyCredential {
                api_key: new_upstream_key.into(),
            },
        )),
        ..Default::default()
    })
    .await
    .unwrap();
    driven.push(("UpdateAccount", a.clone()));
    c.set_account_groups(pb::SetAccountGroupsRequest {
        account_id: account.id,
        groups: vec![pb::AccountGroup {
            group_id: group.id,
            priority: 1,
        }],
    })
    .await
    .unwrap();
    driven.push(("SetAccountGroups", a.clone()));
    c.clear_account_error(pb::AccountIdRequest { id: account.id })
        .await
        .unwrap();
    driven.push(("ClearAccountError", a.clone()));
    c.clear_account_rate_limit(pb::AccountIdRequest { id: account.id })
        .await
        .unwrap();
    driven.push(("ClearAccountRateLimit", a.clone()));

    let onboarding = c
        .generate_o_auth_url(pb::GenerateOAuthUrlRequest::default())
        .await
        .unwrap()
        .into_inner();
    let oauth_code = "oauth-code-secret-0001";
    let login = c
        .exchange_o_auth_code(pb::ExchangeOAuthCodeRequest {
            session_id: onboarding.session_id.clone(),
            code: oauth_code.into(),
            state: onboarding.state.clone(),
            name: "login".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    driven.push(("ExchangeOAuthCode", login.id.to_string()));
    c.delete_account(pb::DeleteAccountRequest { id: account.id })
        .await
        .unwrap();
    driven.push(("DeleteAccount", a));

    let sub = c
        .assign_subscription(pb::AssignSubscriptionRequest {
            user_id: user.id,
            group_id: group.id,
            expiry: Some(pb::assign_subscription_request::Expiry::DurationDays(30)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = sub.id.to_string();
    driven.push(("AssignSubscription", s.clone()));
    c.extend_subscription(pb::ExtendSubscriptionRequest {
        id: sub.id,
        days: 7,
    })
    .await
    .unwrap();
    driven.push(("ExtendSubscription", s.clone()));
    c.revoke_subscription(pb::RevokeSubscriptionRequest { id: sub.id })
        .await
        .unwrap();
    driven.push(("RevokeSubscription", s));

    c.set_price(pb::SetPriceRequest {
        price: Some(pb::Price {
            model: "gpt-audit".into(),
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 2,
            cached_input_per_mtok_nanos: 0,
            updated_at_ms: 0,
        }),
    })
    .await
    .unwrap();
    driven.push(("SetPrice", "gpt-audit".into()));
    c.delete_price(pb::DeletePriceRequest {
        model: "gpt-audit".into(),
    })
    .await
    .unwrap();
    driven.push(("DeletePrice", "gpt-audit".into()));

    let child = c
        .create_admin_token(pb::CreateAdminTokenRequest {
            name: "child".into(),
            scope: "read".into(),
            expiry: Some(pb::create_admin_token_request::Expiry::ExpiresInDays(1)),
        })
        .await
        .unwrap()
        .into_inner();
    let child_token = child.token.unwrap();
    assert_eq!(child_token.created_by, "ops");
    driven.push(("CreateAdminToken", child_token.id.to_string()));
    c.revoke_admin_token(pb::RevokeAdminTokenRequest { id: child_token.id })
        .await
        .unwrap();
    driven.push(("RevokeAdminToken", child_token.id.to_string()));

    let spare_group = new_group(&mut c, "spare", "standard").await;
    driven.push(("CreateGroup", spare_group.id.to_string()));
    c.delete_group(pb::DeleteGroupRequest {
        id: spare_group.id,
        cascade: true,
    })
    .await
    .unwrap();
    driven.push(("DeleteGroup", spare_group.id.to_string()));
    let spare_user = new_user(&mut c, "spare@example.com").await;
    driven.push(("CreateUser", spare_user.id.to_string()));
    c.delete_user(pb::DeleteUserRequest {
        id: spare_user.id,
        cascade: true,
    })
    .await
    .unwrap();
    driven.push(("DeleteUser", spare_user.id.to_string()));

    // Reads and refused writes are not recorded.
    c.list_users(pb::ListUsersRequest::default()).await.unwrap();
    assert!(
        c.delete_user(pb::DeleteUserRequest {
            id: 999_999,
            cascade: true
        })
        .await
        .is_err()
    );

    // The test drives every audited RPC of the table.
    let audited: BTreeSet<&str> = admin_support::admin_methods()
        .into_iter()
        .filter(|m| access(m).is_some_and(|a| a.audited))
        .collect();
    let covered: BTreeSet<&str> = driven.iter().map(|(a, _)| *a).collect();
    assert_eq!(covered, audited, "drive every audited RPC once");

    // One entry per write, newest first, each naming the token.
    let log = c
        .list_audit_log(pb::ListAuditLogRequest {
            actor: "ops".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let got: Vec<(&str, String)> = log
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.target.clone()))
        .collect();
    assert_eq!(got, driven);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    for e in &log {
        assert_eq!((e.actor.as_str(), e.actor_kind.as_str()), ("ops", "token"));
        assert!(e.at_ms >= started, "{e:?}");
        serde_json::from_str::<serde_json::Value>(&e.details_json).unwrap();
    }
    let create_key = log.iter().find(|e| e.action == "CreateKey").unwrap();
    let details: serde_json::Value = serde_json::from_str(&create_key.details_json).unwrap();
    assert_eq!(details["name"], "ci");
    assert_eq!(
        details["custom_key"],
        tollgate_control_plane::admin::REDACTED
    );

    // No secret anywhere in the log: not in the API, not in the table.
    let everything = format!("{log:?}");
    let stored = h.rows("audit_log", "id").await;
    let stored = format!("{stored:?}");
    for secret in [
        custom_key,
        key_secret.as_str(),
        upstream_key,
        new_upstream_key,
        proxy_password,
        oauth_code,
        onboarding.session_id.as_str(),
        onboarding.state.as_str(),
        "at-audit-secret",
        "rt-audit-secret",
        ops_secret.as_str(),
        child.secret.as_str(),
        admin_support::TOKEN,
    ] {
        assert!(!everything.contains(secret), "{secret} in the audit log");
        assert!(!stored.contains(secret), "{secret} stored in audit_log");
    }

    // The bootstrap token's one write (creating `ops`), and the filters.
    let boot_log = c
        .list_audit_log(pb::ListAuditLogRequest {
            actor: "bootstrap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(boot_log.len(), 1);
    assert_eq!(boot_log[0].action, "CreateAdminToken");
    assert_eq!(boot_log[0].actor_kind, "bootstrap");
    assert_eq!(boot_log[0].target, ops.id.to_string());
    let creates = c
        .list_audit_log(pb::ListAuditLogRequest {
            action: "CreateUser".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<_> = creates.iter().map(|e| e.target.clone()).collect();
    assert_eq!(ids, [spare_user.id.to_string(), user.id.to_string()]);
    let page = c
        .list_audit_log(pb::ListAuditLogRequest {
            limit: 2,
            before_id: log[0].id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [log[1].id, log[2].id]
    );
    let future = c
        .list_audit_log(pb::ListAuditLogRequest {
            since_ms: Some(now_ms() + 60_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(future.is_empty());
    stop.cancel();
    h.stop().await;
}
