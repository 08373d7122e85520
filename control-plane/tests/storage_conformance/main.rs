//! Storage conformance suite: every case runs against SQLite and Postgres, so the one
//! `Store` implementation is proven on both dialects. Each `case_x` is generated as
//! `sqlite_case_x` and `postgres_case_x` by `conformance!` at the bottom.
//!
//! The cases live in one module per concern (`users`, `groups`, `keys`, …) with shared
//! fixtures in `fixtures`; the `conformance!` tables stay here, at the crate root, so the
//! generated test names do not depend on which module a case lives in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod admin_tokens;
mod charge;
mod fixtures;
mod groups;
mod health;
mod keys;
mod prices;
mod subscriptions;
mod usage;
mod users;

use accounts::*;
use admin_tokens::*;
use charge::*;
use common::{Backend, TestDb};
use groups::*;
use health::*;
use keys::*;
use prices::*;
use subscriptions::*;
use tollgate_control_plane::storage::Store;
use usage::*;
use users::*;

// ---------------------------------------------------------------- both backends

/// `case => sqlite_name, postgres_name;` generates one test per backend. Cases marked
/// `raw` also get the database URL for setups and checks outside the API.
macro_rules! conformance {
    ($($case:ident $(($raw:ident))? => $sqlite:ident, $postgres:ident;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                run(Backend::Sqlite, |store, _url| Box::pin(async move {
                    conformance!(@call $case $(($raw))?, store, _url)
                })).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                run(Backend::Postgres, |store, _url| Box::pin(async move {
                    conformance!(@call $case $(($raw))?, store, _url)
                })).await;
            }
        )+
    };
    (@call $case:ident (raw), $store:ident, $url:ident) => { $case(&$store, &$url).await };
    (@call $case:ident, $store:ident, $url:ident) => { $case(&$store).await };
}

type CaseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run(backend: Backend, case: impl FnOnce(Store, String) -> CaseFuture) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    case(store.clone(), db.url.clone()).await;
    store.close().await;
    db.cleanup().await;
}

conformance! {
    case_user_create_get_and_email_unique => sqlite_user_create_get_and_email_unique, postgres_user_create_get_and_email_unique;
    case_user_initial_balance_is_ledgered => sqlite_user_initial_balance_is_ledgered, postgres_user_initial_balance_is_ledgered;
    case_user_list_pagination_and_status => sqlite_user_list_pagination_and_status, postgres_user_list_pagination_and_status;
    case_user_update_patch => sqlite_user_update_patch, postgres_user_update_patch;
    case_balance_ops_and_ledger => sqlite_balance_ops_and_ledger, postgres_balance_ops_and_ledger;
    case_balance_concurrent_adds => sqlite_balance_concurrent_adds, postgres_balance_concurrent_adds;
    case_group_crud_and_name_unique => sqlite_group_crud_and_name_unique, postgres_group_crud_and_name_unique;
    case_group_list_pagination => sqlite_group_list_pagination, postgres_group_list_pagination;
    case_key_create_lookup_and_hash_unique => sqlite_key_create_lookup_and_hash_unique, postgres_key_create_lookup_and_hash_unique;
    case_key_list_filters_and_pagination => sqlite_key_list_filters_and_pagination, postgres_key_list_filters_and_pagination;
    case_key_patch_leaves_unspecified_fields => sqlite_key_patch_leaves_unspecified_fields, postgres_key_patch_leaves_unspecified_fields;
    case_key_reset_quota_and_clear_expiration(raw) => sqlite_key_reset_quota_and_clear_expiration, postgres_key_reset_quota_and_clear_expiration;
    case_key_quota_and_expiry_updates_reactivate(raw) => sqlite_key_quota_and_expiry_updates_reactivate, postgres_key_quota_and_expiry_updates_reactivate;
    case_key_status_and_touch => sqlite_key_status_and_touch, postgres_key_status_and_touch;
    case_account_create_get_list => sqlite_account_create_get_list, postgres_account_create_get_list;
    case_account_credentials_encrypted_at_rest(raw) => sqlite_account_credentials_encrypted_at_rest, postgres_account_credentials_encrypted_at_rest;
    case_account_update_patch => sqlite_account_update_patch, postgres_account_update_patch;
    case_account_groups_replace => sqlite_account_groups_replace, postgres_account_groups_replace;
    case_account_clear_error_and_rate_limit(raw) => sqlite_account_clear_error_and_rate_limit, postgres_account_clear_error_and_rate_limit;
    case_subscription_lifecycle(raw) => sqlite_subscription_lifecycle, postgres_subscription_lifecycle;
    case_subscription_expired_does_not_block => sqlite_subscription_expired_does_not_block, postgres_subscription_expired_does_not_block;
    case_prices_seeded_defaults => sqlite_prices_seeded_defaults, postgres_prices_seeded_defaults;
    case_prices_upsert_get_delete => sqlite_prices_upsert_get_delete, postgres_prices_upsert_get_delete;
    case_usage_insert_idempotent => sqlite_usage_insert_idempotent, postgres_usage_insert_idempotent;
    case_usage_query_pagination_and_totals => sqlite_usage_query_pagination_and_totals, postgres_usage_query_pagination_and_totals;
    case_usage_series_by_utc_day => sqlite_usage_series_by_utc_day, postgres_usage_series_by_utc_day;
    case_usage_filters => sqlite_usage_filters, postgres_usage_filters;
}

// ---------------------------------------------------------------- charging

conformance! {
    case_charge_balance_debit => sqlite_charge_balance_debit, postgres_charge_balance_debit;
    case_charge_replay_changes_nothing => sqlite_charge_replay_changes_nothing, postgres_charge_replay_changes_nothing;
    case_charge_subscription_windows => sqlite_charge_subscription_windows, postgres_charge_subscription_windows;
    case_charge_quota_flips_at_exactly_the_quota => sqlite_charge_quota_flips_at_exactly_the_quota, postgres_charge_quota_flips_at_exactly_the_quota;
    case_charge_concurrent_on_one_key => sqlite_charge_concurrent_on_one_key, postgres_charge_concurrent_on_one_key;
}

// ---------------------------------------------------------------- account health, OAuth tokens

conformance! {
    case_account_cooldowns_only_extend => sqlite_account_cooldowns_only_extend, postgres_account_cooldowns_only_extend;
    case_account_error_snapshot_and_last_used => sqlite_account_error_snapshot_and_last_used, postgres_account_error_snapshot_and_last_used;
    case_oauth_tokens_due_and_stored => sqlite_oauth_tokens_due_and_stored, postgres_oauth_tokens_due_and_stored;
}

// ---------------------------------------------------------------- admin tokens, audit log

conformance! {
    case_admin_token_lifecycle => sqlite_admin_token_lifecycle, postgres_admin_token_lifecycle;
    case_audit_filters_and_order => sqlite_audit_filters_and_order, postgres_audit_filters_and_order;
}
