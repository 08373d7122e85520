//! The Admin gRPC API end to end: a real control plane on `127.0.0.1:0`, the generated
//! client over TCP with the bearer token, and direct database reads to check what was (and
//! was not) stored. The important tests run on both SQLite and Postgres (`on_both_backends!`).
//!
//! The tests live in one module per concern (`keys`, `validation`, `auth`, …) with shared
//! helpers in `helpers`; the `on_both_backends!` list and the two single-backend tests stay here, at
//! the crate root, so every test keeps the name it had before the split.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../admin_support/mod.rs"]
mod admin_support;

mod accounts;
mod auth;
mod helpers;
mod keys;
mod scoped_tokens;
mod subscriptions;
mod usage;
mod users;
mod validation;

use accounts::*;
use admin_support::Harness;
use auth::*;
use helpers::{api_key_account, new_key, new_user, refused};
use keys::*;
use scoped_tokens::*;
use subscriptions::*;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_tests::{Backend, on_both_backends};
use usage::*;
use users::*;
use validation::*;

on_both_backends!(
    key_secret_is_shown_once_and_only_its_hash_is_stored,
    reset_quota_reactivates_an_exhausted_key,
    clear_expiration_reactivates_an_expired_key,
    partial_updates_leave_other_fields_alone,
    bad_key_requests_are_refused_and_write_nothing,
    bad_user_and_balance_requests_are_refused_and_write_nothing,
    bad_group_requests_are_refused_and_write_nothing,
    bad_account_requests_are_refused_and_write_nothing,
    bad_subscription_price_and_usage_requests_are_refused_and_write_nothing,
    missing_token_or_wrong_token_is_unauthenticated,
    missing_rows_are_not_found_and_duplicates_already_exist,
    account_credentials_are_encrypted_at_rest_and_never_returned,
    users_balance_and_pagination,
    delete_with_keys_needs_cascade,
    key_status_changes_and_delete,
    subscriptions_lifecycle,
    prices_and_usage_queries,
    read_token_can_query_but_not_write,
    keys_token_manages_keys_but_not_accounts,
    revoked_and_expired_tokens_are_unauthenticated,
    bad_token_requests_are_refused,
    every_admin_write_is_audited_with_its_actor,
);

// ------------------------------------------------------------------ single backend

#[tokio::test]
async fn generated_keys_use_the_configured_prefix() {
    let h = Harness::start_with(Backend::Sqlite, |c| c.key_prefix = "tg_live_".into()).await;
    let mut c = h.client();
    let user = new_user(&mut c, "p@example.com").await;
    let (key, secret) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    assert!(secret.starts_with("tg_live_"), "{secret}");
    assert_eq!(secret.len(), "tg_live_".len() + 64);
    assert!(key.key_hint.starts_with("tg_liv…"));
    h.stop().await;
}

#[tokio::test]
async fn base_url_policy_follows_configuration() {
    // Permissive: http and private hosts allowed (a local fake upstream in tests).
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.allow_insecure_upstreams = true;
        c.allow_private_upstreams = true;
    })
    .await;
    let mut c = h.client();
    let a = c
        .create_account(pb::CreateAccountRequest {
            base_url: "http://127.0.0.1:18080/v1/".into(),
            ..api_key_account("local", "sk-local-0001")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.base_url, "http://127.0.0.1:18080/v1");
    h.stop().await;

    // Allow-list: only listed hosts.
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.upstream_host_allowlist = vec!["api.openai.com".into(), "gw.example.com".into()];
    })
    .await;
    let mut c = h.client();
    for ok in ["https://api.openai.com", "https://gw.example.com/v1"] {
        c.create_account(pb::CreateAccountRequest {
            base_url: ok.into(),
            ..api_key_account(ok, "sk-x-0001")
        })
        .await
        .unwrap();
    }
    let before = h.snapshot().await;
    let r = c
        .create_account(pb::CreateAccountRequest {
            base_url: "https://evil.example.net/v1".into(),
            ..api_key_account("evil", "sk-x-0002")
        })
        .await;
    refused(&h, &before, "base_url", r).await;
    h.stop().await;
}
