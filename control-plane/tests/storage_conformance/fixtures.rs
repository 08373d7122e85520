//! Fixtures and assertions shared by the conformance cases.

use std::collections::BTreeMap;

use sqlx::Connection;
use tollgate_control_plane::Error;
use tollgate_control_plane::model::{
    AccountGroup, Credential, NewAccount, NewApiKey, NewGroup, NewUser, Page, UsageRecord,
};
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{BillingMode, GroupKind, Platform, UserRole};

pub(crate) use tollgate_shared::DAY_MS;

pub(crate) fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        name: format!("name of {email}"),
        role: UserRole::User,
        concurrency: 5,
        notes: String::new(),
        initial_balance_nanos: 0,
    }
}

pub(crate) fn new_group(name: &str, kind: GroupKind) -> NewGroup {
    NewGroup {
        name: name.to_owned(),
        platform: Platform::OpenAi,
        rate_multiplier: Multiplier::from_ppm(1_500_000).unwrap(),
        kind,
        daily_limit_nanos: 1,
        weekly_limit_nanos: 2,
        monthly_limit_nanos: 3,
        exclusive: true,
        description: "desc".to_owned(),
    }
}

pub(crate) fn new_key(user_id: i64, hash: &str) -> NewApiKey {
    NewApiKey {
        user_id,
        name: format!("key {hash}"),
        group_id: None,
        key_hash: hash.to_owned(),
        key_hint: "sk-...abcd".to_owned(),
        ip_allow: vec![],
        ip_deny: vec![],
        quota_nanos: 0,
        expires_at_ms: None,
    }
}

pub(crate) fn new_account(name: &str, groups: Vec<AccountGroup>) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        platform: Platform::OpenAi,
        base_url: "https://api.openai.com".to_owned(),
        credential: Credential::ApiKey {
            api_key: format!("sk-plaintext-secret-{name}"),
        },
        concurrency: 3,
        priority: 50,
        model_mapping: BTreeMap::from([("gpt-5".to_owned(), "gpt-5.1".to_owned())]),
        proxy_url: "http://proxyuser:proxypass@proxy.local:3128".to_owned(),
        user_agent: "ua/1".to_owned(),
        expires_at_ms: Some(4_000_000_000_000),
        chatgpt_account_id: "acct-1".to_owned(),
        cost_multiplier: Multiplier::from_ppm(800_000).unwrap(),
        notes: "n".to_owned(),
        groups,
    }
}

pub(crate) fn member(group_id: i64, priority: i32) -> AccountGroup {
    AccountGroup { group_id, priority }
}

pub(crate) fn usage(request_id: &str, created_at_ms: i64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        key_id: 1,
        user_id: 1,
        group_id: Some(1),
        subscription_id: None,
        account_id: 1,
        model: "gpt-5".to_owned(),
        upstream_model: "gpt-5-2025-08-07".to_owned(),
        input_tokens: 1000,
        output_tokens: 200,
        cached_tokens: 100,
        reasoning_tokens: 50,
        input_cost_nanos: 1_125_000,
        output_cost_nanos: 2_000_000,
        cached_cost_nanos: 12_500,
        total_cost_nanos: 3_137_500,
        actual_cost_nanos: 4_706_250,
        rate_multiplier: Multiplier::from_ppm(1_500_000).unwrap(),
        account_cost_multiplier: Multiplier::ONE,
        billing_mode: BillingMode::Balance,
        stream: true,
        duration_ms: 1234,
        first_token_ms: Some(321),
        user_agent: "codex".to_owned(),
        client_ip: "10.0.0.1".to_owned(),
        reasoning_effort: "high".to_owned(),
        estimated: false,
        recovered: false,
        created_at_ms,
        client_request_id: "client-req-1".to_owned(),
        upstream_request_id: "req_upstream_1".to_owned(),
    }
}

pub(crate) fn page(after_id: i64, limit: u32) -> Page {
    Page { after_id, limit }
}

pub(crate) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::NotFound(m)) => assert_eq!(m, what),
        other => panic!("expected NotFound({what}), got {other:?}"),
    }
}

pub(crate) fn assert_already_exists<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::AlreadyExists(_))),
        "expected AlreadyExists, got {r:?}"
    );
}

pub(crate) fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>, field: &str) {
    match r {
        Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidArgument({field}), got {other:?}"),
    }
}

/// Walks every page; asserts no page is over the limit and the cursor only moves on.
pub(crate) async fn walk<T, F, Fut>(limit: u32, mut fetch: F) -> (Vec<T>, usize)
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = tollgate_control_plane::model::Paged<T>>,
{
    let mut all = Vec::new();
    let mut pages = 0;
    let mut after = 0;
    loop {
        let p = fetch(page(after, limit)).await;
        pages += 1;
        assert!(p.items.len() <= limit as usize);
        all.extend(p.items);
        match p.next_after_id {
            Some(next) => {
                assert!(next > after, "cursor must advance");
                after = next;
            }
            None => break,
        }
        assert!(pages < 100, "pagination does not terminate");
    }
    (all, pages)
}

/// A raw connection for checks and setups the API deliberately does not offer.
pub(crate) async fn raw_exec(url: &str, sql: &str) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}
