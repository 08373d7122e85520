//! Charging one usage record: the usage row, the balance or subscription windows, and
//! the key's quota, in ONE transaction, idempotent by request id (architecture.md
//! "Usage is exactly-once"). `ReportUsage` runs the same steps for each record of a
//! batch inside one transaction, a savepoint per record (`charge_batch.rs`).
//!
//! Order inside the transaction:
//! 1. insert the usage row, `ON CONFLICT (request_id) DO NOTHING`; nothing inserted is a
//!    replay: roll back, change nothing, report `inserted: false` — unless the row there
//!    is the control plane's estimate (`recovered`) and this record is real: then the
//!    estimate's charges are undone and the row overwritten (`supersede.rs`), and the
//!    steps below charge this record, so the request is charged once in total;
//! 2. balance mode: `balance_nanos = balance_nanos - actual_cost`; subscription mode: the
//!    three windows grow by `total_cost` (one UPDATE, CASE per window);
//! 3. the key: lock the row with a write (`last_used_at_ms`) that also returns the
//!    status before the charge, then, when `quota > 0`, `quota_used += actual_cost` and
//!    `status = 'quota_exhausted'` (from `active` only) in the same statement.
//!
//! Every step starts with a write, so the first statement takes the SQLite write lock
//! and each row is locked (Postgres) before anything of it is read: concurrent charges
//! serialise per row and the increments are exact. Additions are guarded against i64
//! overflow in the WHERE clause (SQLite would silently switch to floating point); a
//! guard that fails rolls everything back.

use super::to_end::ToTheEnd;
use sqlx::{AnyConnection, Row};
use tollgate_shared::domain::{BillingMode, KeyStatus};
use tollgate_shared::refusal::Window;

use super::{Store, not_found};
use crate::error::{Error, Result};
use crate::model::UsageRecord;

const DAY_MS: i64 = Window::Daily.len_ms();
const WEEK_MS: i64 = Window::Weekly.len_ms();
const MONTH_MS: i64 = Window::Monthly.len_ms();

/// What one charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChargeOutcome {
    /// `false`: the request id was already recorded; nothing changed.
    pub inserted: bool,
    /// The record replaced the control plane's estimate for its request (`recovered`):
    /// the estimate's charge was undone and this record's charged instead.
    pub superseded: bool,
    /// The key went `active` → `quota_exhausted` with this charge.
    pub key_exhausted: bool,
    /// Balance mode: the user's balance after the charge.
    pub balance_after_nanos: Option<i64>,
    /// Keys with a quota: `quota_used` after the charge.
    pub key_quota_used_nanos: Option<i64>,
}

/// The SET clause of one window: reset to this cost when the window has never started
/// or has passed (`now - start >= length`), otherwise grow.
fn window_sets(usage: &str, start: &str, length: i64) -> String {
    let passed = format!("({start} IS NULL OR $2 - {start} >= {length})");
    format!(
        "{usage} = CASE WHEN {passed} THEN $1 ELSE {usage} + $1 END, \
         {start} = CASE WHEN {passed} THEN $2 ELSE {start} END"
    )
}

impl Store {
    /// Records and charges one request (see the module doc). `now_ms` is the charging
    /// time (subscription windows, last use); `r.created_at_ms` is stored as given.
    ///
    /// Errors roll everything back: NotFound when the key is not the user's (or does not
    /// exist), the user does not exist, or a subscription-mode record names no
    /// subscription of the user; InvalidArgument("actual_cost_nanos") when an amount
    /// would overflow.
    pub async fn charge_usage(&self, r: &UsageRecord, now_ms: i64) -> Result<ChargeOutcome> {
        check_amounts(r)?;
        let mut tx = self.pool.begin().await?;
        match charge_in(&mut tx, r, now_ms).await {
            Ok(Some(outcome)) => {
                tx.commit().await?;
                Ok(outcome)
            }
            // A replay: nothing to change.
            Ok(None) => {
                tx.rollback().await?;
                Ok(ChargeOutcome::default())
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back a failed charge");
                }
                Err(e)
            }
        }
    }
}

/// Amounts are never negative (checked before any statement runs).
pub(super) fn check_amounts(r: &UsageRecord) -> Result<()> {
    if r.total_cost_nanos < 0 || r.actual_cost_nanos < 0 {
        return Err(Error::invalid("actual_cost_nanos", "must not be negative"));
    }
    Ok(())
}

/// The steps of one charge inside its transaction (or a batch's savepoint,
/// `charge_batch.rs`); `None` when the request id was already recorded. Any error
/// leaves the transaction for the caller to roll back.
pub(super) async fn charge_in(
    tx: &mut AnyConnection,
    r: &UsageRecord,
    now_ms: i64,
) -> Result<Option<ChargeOutcome>> {
    let mut superseded = false;
    if !insert_usage_row(tx, r).await? {
        // A real record for a request the control plane had recorded an estimate for
        // (`recovered`): the estimate's charge is undone and this one is charged.
        if r.recovered || !super::supersede::undo_recovered(tx, r).await? {
            return Ok(None);
        }
        superseded = true;
    }
    let mut outcome = ChargeOutcome {
        inserted: true,
        superseded,
        ..ChargeOutcome::default()
    };
    match r.billing_mode {
        BillingMode::Balance => outcome.balance_after_nanos = Some(charge_balance(tx, r).await?),
        BillingMode::Subscription => charge_subscription_windows(tx, r, now_ms).await?,
    }
    let key = touch_key(tx, r, now_ms).await?;
    if key.quota_nanos > 0 {
        let (quota_used, exhausted) = charge_key_quota(tx, r, now_ms, &key.status_before).await?;
        outcome.key_quota_used_nanos = Some(quota_used);
        outcome.key_exhausted = exhausted;
    }
    Ok(Some(outcome))
}

/// Step 1: the usage row, unless the request id is already there (`false`).
async fn insert_usage_row(tx: &mut AnyConnection, r: &UsageRecord) -> Result<bool> {
    let inserted = super::usage::insert_usage_query(r)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Step 2, balance mode: the user's balance goes down by the actual cost. Soft-deleted
/// users are charged too: the request ran. Returns the balance after.
async fn charge_balance(tx: &mut AnyConnection, r: &UsageRecord) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE users SET balance_nanos = balance_nanos - $1 \
         WHERE id = $2 AND balance_nanos >= $3 RETURNING balance_nanos",
    )
    .bind(r.actual_cost_nanos)
    .bind(r.user_id)
    .bind(i64::MIN + r.actual_cost_nanos)
    .optional_row(&mut *tx)
    .await?;
    if let Some(row) = row {
        return Ok(row.try_get("balance_nanos")?);
    }
    let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
        .bind(r.user_id)
        .optional_row(&mut *tx)
        .await?
        .is_some();
    Err(if exists {
        Error::invalid("actual_cost_nanos", "balance would overflow")
    } else {
        not_found("user", r.user_id)
    })
}

/// Step 2, subscription mode: the three windows grow by the total cost (one UPDATE).
async fn charge_subscription_windows(
    tx: &mut AnyConnection,
    r: &UsageRecord,
    now_ms: i64,
) -> Result<()> {
    let Some(sub_id) = r.subscription_id else {
        return Err(Error::invalid(
            "subscription_id",
            "required in subscription mode",
        ));
    };
    let sql = format!(
        "UPDATE subscriptions SET {}, {}, {}, updated_at_ms = $2 \
         WHERE id = $3 AND user_id = $4 AND daily_usage_nanos <= $5 \
         AND weekly_usage_nanos <= $5 AND monthly_usage_nanos <= $5 \
         RETURNING id",
        window_sets("daily_usage_nanos", "daily_window_start_ms", DAY_MS),
        window_sets("weekly_usage_nanos", "weekly_window_start_ms", WEEK_MS),
        window_sets("monthly_usage_nanos", "monthly_window_start_ms", MONTH_MS),
    );
    let row = sqlx::query(&sql)
        .bind(r.total_cost_nanos)
        .bind(now_ms)
        .bind(sub_id)
        .bind(r.user_id)
        .bind(i64::MAX - r.total_cost_nanos)
        .optional_row(&mut *tx)
        .await?;
    if row.is_some() {
        return Ok(());
    }
    let exists = sqlx::query("SELECT 1 FROM subscriptions WHERE id = $1 AND user_id = $2")
        .bind(sub_id)
        .bind(r.user_id)
        .optional_row(&mut *tx)
        .await?
        .is_some();
    Err(if exists {
        Error::invalid("total_cost_nanos", "subscription usage would overflow")
    } else {
        Error::NotFound(format!("subscription {sub_id} of user {}", r.user_id))
    })
}

/// The key as it was before the charge.
struct KeyBefore {
    status_before: String,
    quota_nanos: i64,
}

/// Step 3a: lock the key row with a write (its last use) and learn its status before
/// the charge. Deleted keys are charged too (the request ran before the delete).
async fn touch_key(tx: &mut AnyConnection, r: &UsageRecord, now_ms: i64) -> Result<KeyBefore> {
    let before = sqlx::query(
        "UPDATE api_keys SET last_used_at_ms = CASE \
         WHEN last_used_at_ms IS NULL OR last_used_at_ms < $1 THEN $1 \
         ELSE last_used_at_ms END \
         WHERE id = $2 AND user_id = $3 RETURNING status, quota_nanos",
    )
    .bind(now_ms)
    .bind(r.key_id)
    .bind(r.user_id)
    .optional_row(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Err(Error::NotFound(format!(
            "api key {} of user {}",
            r.key_id, r.user_id
        )));
    };
    Ok(KeyBefore {
        status_before: before.try_get("status")?,
        quota_nanos: before.try_get("quota_nanos")?,
    })
}

/// Step 3b, keys with a quota: `quota_used` grows by the actual cost and an active key
/// that reaches its quota becomes `quota_exhausted`, in one statement. Returns
/// `quota_used` after and whether this charge exhausted the key.
async fn charge_key_quota(
    tx: &mut AnyConnection,
    r: &UsageRecord,
    now_ms: i64,
    status_before: &str,
) -> Result<(i64, bool)> {
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET quota_used_nanos = quota_used_nanos + $1, \
         status = CASE WHEN status = 'active' AND quota_used_nanos + $1 >= quota_nanos \
                  THEN '{exhausted}' ELSE status END, \
         updated_at_ms = CASE WHEN status = 'active' \
                         AND quota_used_nanos + $1 >= quota_nanos \
                         THEN $2 ELSE updated_at_ms END \
         WHERE id = $3 AND quota_nanos > 0 AND quota_used_nanos <= $4 \
         RETURNING status, quota_used_nanos",
        exhausted = KeyStatus::QuotaExhausted.as_str()
    ))
    .bind(r.actual_cost_nanos)
    .bind(now_ms)
    .bind(r.key_id)
    .bind(i64::MAX - r.actual_cost_nanos)
    .optional_row(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(Error::invalid(
            "actual_cost_nanos",
            "key quota_used would overflow",
        ));
    };
    let status_after: String = row.try_get("status")?;
    let exhausted = status_before == KeyStatus::Active.as_str()
        && status_after == KeyStatus::QuotaExhausted.as_str();
    Ok((row.try_get("quota_used_nanos")?, exhausted))
}
