//! Storage conformance suite: every case runs against SQLite and Postgres, so the one
//! `Store` implementation is proven on both dialects. Each `case_x` is generated as the
//! tests `case_x::sqlite` and `case_x::postgres` by the test kit's `on_both_backends!`
//! below.
//!
//! The cases live in one module per concern (`users`, `groups`, `keys`, …) with shared
//! fixtures in `fixtures`; the lists stay here, at the crate root, so the generated test
//! names do not depend on which module a case lives in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod admin_tokens;
mod books;
mod charge;
mod fixtures;
mod groups;
mod health;
mod keys;
mod prices;
mod response_owners;
mod subscriptions;
mod usage;
mod users;

use accounts::*;
use admin_tokens::*;
use books::*;
use charge::*;
use groups::*;
use health::*;
use keys::*;
use prices::*;
use response_owners::*;
use subscriptions::*;
use tollgate_control_plane::storage::Store;
use tollgate_tests::{Backend, TestDb, on_both_backends};
use usage::*;
use users::*;

/// Runs a case on a store over a fresh database of `backend`.
async fn with_store(backend: Backend, case: impl AsyncFnOnce(&Store)) {
    with_store_and_url(backend, async |store: &Store, _url: &str| case(store).await).await;
}

/// Runs a case that also gets the database URL, for setups and checks outside the API.
async fn with_store_and_url(backend: Backend, case: impl AsyncFnOnce(&Store, &str)) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    case(&store, &db.url).await;
    store.close().await;
}

on_both_backends!(crate::with_store =>
    case_user_create_get_and_email_unique,
    case_response_owner_first_wins_ttl_and_prune,
    case_user_initial_balance_is_ledgered,
    case_user_list_pagination_and_status,
    case_user_update_patch,
    case_balance_ops_and_ledger,
    case_balance_concurrent_adds,
    case_group_crud_and_name_unique,
    case_group_list_pagination,
    case_key_create_lookup_and_hash_unique,
    case_key_list_filters_and_pagination,
    case_key_owner_delete_guards,
    case_key_patch_leaves_unspecified_fields,
    case_key_status_and_touch,
    case_account_create_get_list,
    case_account_update_patch,
    case_account_groups_replace,
    case_subscription_expired_does_not_block,
    case_prices_seeded_defaults,
    case_prices_upsert_get_delete,
    case_usage_insert_idempotent,
    case_usage_query_pagination_and_totals,
    case_usage_series_by_utc_day,
    case_usage_filters,
    case_charge_balance_debit,
    case_charge_replay_changes_nothing,
    case_charge_subscription_windows,
    case_charge_quota_flips_at_exactly_the_quota,
    case_charge_concurrent_on_one_key,
    case_charge_estimate_superseded_once,
    case_charge_estimate_superseded_in_windows,
    case_account_cooldowns_only_extend,
    case_account_error_snapshot_and_last_used,
    case_oauth_tokens_due_and_stored,
    case_dead_letters_stored_once_listed_and_marked,
    case_admin_token_lifecycle,
    case_audit_filters_and_order,
);

on_both_backends!(crate::with_store_and_url =>
    case_key_reset_quota_and_clear_expiration,
    case_key_quota_and_expiry_updates_reactivate,
    case_account_credentials_encrypted_at_rest,
    case_account_clear_error_and_rate_limit,
    case_subscription_lifecycle,
    case_audit_queries,
);
