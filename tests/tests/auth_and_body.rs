//! Every authentication rejection and body error of responses-flow.md §1–2, through a
//! real data plane, with the spec's status, type and code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::fixture::Gateway;

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].clone())
}

fn assert_error(got: &(u16, Value), status: u16, ty: &str, code: Option<&str>) {
    assert_eq!(got.0, status, "{got:?}");
    assert_eq!(got.1["type"], ty, "{got:?}");
    match code {
        Some(c) => assert_eq!(got.1["code"], c, "{got:?}"),
        None => assert!(got.1.get("code").is_none(), "{got:?}"),
    }
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{got:?}"
    );
}

async fn sqlite(gw: &Gateway) -> sqlx::SqlitePool {
    let path = gw.cp.home.data_dir().join("tollgate.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

const BODY: fn() -> Value = || json!({"model": "gpt-5.1", "input": "hi"});

#[tokio::test]
async fn key_extraction() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let url = gw.responses_url(0);

    let r = gw.http.post(&url).json(&BODY()).send().await.unwrap();
    assert_error(
        &error_of(r).await,
        401,
        "authentication_error",
        Some("API_KEY_REQUIRED"),
    );

    let r = gw
        .http
        .post(format!("{url}?api_key={}", b.key))
        .json(&BODY())
        .send()
        .await
        .unwrap();
    assert_error(
        &error_of(r).await,
        400,
        "invalid_request_error",
        Some("api_key_in_query_deprecated"),
    );

    // Scheme case-insensitive, value trimmed; x-api-key and x-goog-api-key work too.
    for (name, value) in [
        ("authorization", format!("bEaReR   {}  ", b.key)),
        ("x-api-key", b.key.clone()),
        ("x-goog-api-key", b.key.clone()),
    ] {
        let r = gw
            .http
            .post(&url)
            .header(name, value)
            .json(&BODY())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }

    let r = gw.post(0, "sk-0000000000000000000000000000", BODY()).await;
    assert_error(
        &error_of(r).await,
        401,
        "authentication_error",
        Some("INVALID_API_KEY"),
    );
}

#[tokio::test]
async fn key_checks_in_order() {
    let gw = Gateway::start(1).await;
    let mut admin = gw.admin.clone();
    let b = gw.basic().await;

    // Disabled.
    admin
        .disable_key(admin::KeyIdRequest { id: b.key_id })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        401,
        "authentication_error",
        Some("API_KEY_DISABLED"),
    );
    admin
        .enable_key(admin::KeyIdRequest { id: b.key_id })
        .await
        .unwrap();
    assert_eq!(
        gw.post(0, &b.key, BODY()).await.status(),
        200,
        "enable takes effect on the next request"
    );

    // Quota exhausted (quota_used >= quota), then reset.
    let db = sqlite(&gw).await;
    sqlx::query("UPDATE api_keys SET quota_nanos = 5, quota_used_nanos = 5, status = 'quota_exhausted' WHERE id = $1")
        .bind(b.key_id)
        .execute(&db)
        .await
        .unwrap();
    // The direct write bypasses invalidation; an admin call on the key drops the cache.
    admin
        .update_key(admin::UpdateKeyRequest {
            id: b.key_id,
            name: Some("renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        429,
        "rate_limit_error",
        Some("API_KEY_QUOTA_EXHAUSTED"),
    );
    admin
        .reset_key_quota(admin::KeyIdRequest { id: b.key_id })
        .await
        .unwrap();
    assert_eq!(gw.post(0, &b.key, BODY()).await.status(), 200);

    // Expired, then cleared.
    sqlx::query("UPDATE api_keys SET quota_nanos = 0, expires_at_ms = 1000, status = 'expired' WHERE id = $1")
        .bind(b.key_id)
        .execute(&db)
        .await
        .unwrap();
    admin
        .update_key(admin::UpdateKeyRequest {
            id: b.key_id,
            name: Some("again".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        403,
        "permission_error",
        Some("API_KEY_EXPIRED"),
    );
    admin
        .clear_key_expiration(admin::KeyIdRequest { id: b.key_id })
        .await
        .unwrap();
    assert_eq!(gw.post(0, &b.key, BODY()).await.status(), 200);

    // IP rules: the test client is 127.0.0.1.
    admin
        .update_key(admin::UpdateKeyRequest {
            id: b.key_id,
            ip_deny: Some(admin::StringList {
                values: vec!["127.0.0.0/8".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        403,
        "permission_error",
        Some("ACCESS_DENIED"),
    );
    admin
        .update_key(admin::UpdateKeyRequest {
            id: b.key_id,
            ip_deny: Some(admin::StringList { values: vec![] }),
            ip_allow: Some(admin::StringList {
                values: vec!["10.0.0.1".into(), "2001:db8::/32".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        403,
        "permission_error",
        Some("ACCESS_DENIED"),
    );
    admin
        .update_key(admin::UpdateKeyRequest {
            id: b.key_id,
            ip_allow: Some(admin::StringList {
                values: vec!["127.0.0.1".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gw.post(0, &b.key, BODY()).await.status(), 200);
}

#[tokio::test]
async fn user_group_and_billing_checks() {
    let gw = Gateway::start(1).await;
    let mut admin = gw.admin.clone();
    let b = gw.basic().await;

    admin
        .update_user(admin::UpdateUserRequest {
            id: b.user,
            status: Some("disabled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        401,
        "authentication_error",
        Some("USER_INACTIVE"),
    );
    admin
        .update_user(admin::UpdateUserRequest {
            id: b.user,
            status: Some("active".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    admin
        .update_group(admin::UpdateGroupRequest {
            id: b.group,
            status: Some("disabled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        403,
        "permission_error",
        Some("GROUP_DISABLED"),
    );
    admin
        .update_group(admin::UpdateGroupRequest {
            id: b.group,
            status: Some("active".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    admin
        .adjust_balance(admin::AdjustBalanceRequest {
            user_id: b.user,
            op: admin::BalanceOp::Set as i32,
            amount_nanos: 0,
            reason: "test".into(),
            allow_negative: false,
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        403,
        "billing_error",
        Some("INSUFFICIENT_BALANCE"),
    );

    admin
        .delete_user(admin::DeleteUserRequest {
            id: b.user,
            cascade: true,
        })
        .await
        .unwrap();
    // The cascade disabled the key; enabled again, it belongs to a deleted user.
    admin
        .enable_key(admin::KeyIdRequest { id: b.key_id })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &b.key, BODY()).await).await,
        401,
        "authentication_error",
        Some("USER_NOT_FOUND"),
    );
}

#[tokio::test]
async fn subscription_checks() {
    let gw = Gateway::start(1).await;
    let mut admin = gw.admin.clone();
    let user = gw.user(5, 0).await;
    let group = admin
        .create_group(admin::CreateGroupRequest {
            name: "sub".into(),
            kind: "subscription".into(),
            daily_limit_nanos: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    gw.api_key_account("upstream-s", group, 10, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    assert_error(
        &error_of(gw.post(0, &key, BODY()).await).await,
        403,
        "permission_error",
        Some("SUBSCRIPTION_NOT_FOUND"),
    );

    let sub = admin
        .assign_subscription(admin::AssignSubscriptionRequest {
            user_id: user,
            group_id: group,
            expiry: Some(admin::assign_subscription_request::Expiry::DurationDays(30)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Balance 0 does not matter in subscription mode.
    assert_eq!(gw.post(0, &key, BODY()).await.status(), 200);

    let db = sqlite(&gw).await;
    sqlx::query("UPDATE subscriptions SET daily_usage_nanos = 1000, daily_window_start_ms = $1 WHERE id = $2")
        .bind(tollgate_shared::now_ms())
        .bind(sub.id)
        .execute(&db)
        .await
        .unwrap();
    admin
        .update_user(admin::UpdateUserRequest {
            id: user,
            notes: Some("drop cache".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_error(
        &error_of(gw.post(0, &key, BODY()).await).await,
        429,
        "rate_limit_error",
        Some("USAGE_LIMIT_EXCEEDED"),
    );
}

#[tokio::test]
async fn body_errors() {
    let gw = Gateway::start_with(tollgate_tests::fixture::Options {
        data_plane: |c| c.flow.body_limit_bytes = 2 << 20,
        ..Default::default()
    })
    .await;
    let b = gw.basic().await;
    let url = gw.responses_url(0);
    let send = |body: Vec<u8>| {
        gw.http
            .post(&url)
            .bearer_auth(&b.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (vec![b' '; 3 << 20], 413, "Request body too large, limit is 2MB"),
        (vec![], 400, "Request body is empty"),
        (b"not json".to_vec(), 400, "Failed to parse request body"),
        (b"[1,2]".to_vec(), 400, "Failed to parse request body"),
        (br#"{"input":"x"}"#.to_vec(), 400, "model is required"),
        (br#"{"model":""}"#.to_vec(), 400, "model is required"),
        (br#"{"model":"gpt-5.1","stream":"true"}"#.to_vec(), 400, "invalid stream field type"),
        (
            br#"{"model":"gpt-5.1","input":[{"type":"function_call_output","output":"x"}]}"#.to_vec(),
            400,
            "function_call_output requires call_id or previous_response_id; if relying on history, ensure store=true and reuse previous_response_id",
        ),
        (
            br#"{"model":"gpt-5.1","input":[{"type":"function_call_output","call_id":"c1","output":"x"}]}"#.to_vec(),
            400,
            "function_call_output requires item_reference ids matching each call_id, or previous_response_id/tool_call context; if relying on history, ensure store=true and reuse previous_response_id",
        ),
    ];
    for (body, status, message) in cases {
        let (got_status, err) = error_of(send(body).await.unwrap()).await;
        assert_eq!(got_status, status, "{message}");
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["message"], message);
    }
    assert_eq!(gw.up.count(), 0, "no invalid request reached the upstream");
}
