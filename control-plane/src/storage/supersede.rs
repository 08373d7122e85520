//! A real usage record superseding the control plane's estimate for the same request
//! (ARCHITECTURE.md "Every lease ends in one usage record"), inside the charging
//! transaction of `charge.rs`: the estimate's row is claimed, its charges are undone,
//! and the row is overwritten with the real record; `charge.rs` then charges the real
//! record as if it were new. The request is charged once in total, by the real amount.
//!
//! Undoing: balance mode gives the estimate's actual cost back; subscription mode takes
//! its total cost off each window that was already running when the estimate was
//! charged (a window that restarted since never held it), never below zero; a key's
//! `quota_used` goes down by the actual cost (never below zero) and a key the estimate
//! exhausted is active again until the real charge decides.

use sqlx::{AnyConnection, Row};
use tollgate_shared::domain::{BillingMode, KeyStatus};

use crate::error::{Error, Result};
use crate::model::UsageRecord;

/// What the estimate charged.
struct Estimate {
    user_id: i64,
    key_id: i64,
    subscription_id: Option<i64>,
    billing_mode: String,
    total_cost_nanos: i64,
    actual_cost_nanos: i64,
    /// When it was charged: its start plus its duration (an estimate lasts from Admit
    /// to the charge, `billing/recovered.rs`).
    charged_at_ms: i64,
}

/// `true` when an estimate was there and has been undone and overwritten by `r`;
/// `false` when the row is a real record (a replay: nothing changed).
pub(super) async fn undo_recovered(tx: &mut AnyConnection, r: &UsageRecord) -> Result<bool> {
    // Claim the row with a write (locks it on Postgres; a concurrent supersede waits
    // and then finds it no longer `recovered = 1`).
    let row = sqlx::query(
        "UPDATE usage_logs SET recovered = 2 WHERE request_id = $1 AND recovered = 1 \
         RETURNING user_id, key_id, subscription_id, billing_mode, total_cost_nanos, \
         actual_cost_nanos, created_at_ms, duration_ms",
    )
    .bind(r.request_id.clone())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let old = Estimate {
        user_id: row.try_get("user_id")?,
        key_id: row.try_get("key_id")?,
        subscription_id: row.try_get("subscription_id")?,
        billing_mode: row.try_get("billing_mode")?,
        total_cost_nanos: row.try_get("total_cost_nanos")?,
        actual_cost_nanos: row.try_get("actual_cost_nanos")?,
        charged_at_ms: row
            .try_get::<i64, _>("created_at_ms")?
            .saturating_add(row.try_get("duration_ms")?),
    };
    if old.billing_mode == BillingMode::Subscription.as_str() {
        undo_windows(tx, &old).await?;
    } else {
        undo_balance(tx, &old).await?;
    }
    undo_key_quota(tx, &old).await?;
    let done = super::usage::supersede_usage_query(r)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if done != 1 {
        return Err(Error::Internal(format!(
            "superseding the estimate of {} changed {done} rows",
            r.request_id
        )));
    }
    Ok(true)
}

async fn undo_balance(tx: &mut AnyConnection, old: &Estimate) -> Result<()> {
    let done = sqlx::query(
        "UPDATE users SET balance_nanos = balance_nanos + $1 \
         WHERE id = $2 AND balance_nanos <= $3",
    )
    .bind(old.actual_cost_nanos)
    .bind(old.user_id)
    .bind(i64::MAX - old.actual_cost_nanos)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 1 {
        Ok(())
    } else {
        Err(Error::invalid(
            "actual_cost_nanos",
            "balance would overflow (or the user is gone) undoing an estimate",
        ))
    }
}

/// The SET clause taking the estimate off one window that already ran when the estimate
/// was charged (`$2`), never below zero.
fn window_undo(usage: &str, start: &str) -> String {
    format!(
        "{usage} = CASE WHEN {start} IS NOT NULL AND {start} <= $2 \
         THEN (CASE WHEN {usage} >= $1 THEN {usage} - $1 ELSE 0 END) ELSE {usage} END"
    )
}

async fn undo_windows(tx: &mut AnyConnection, old: &Estimate) -> Result<()> {
    let Some(sub_id) = old.subscription_id else {
        return Ok(());
    };
    let sql = format!(
        "UPDATE subscriptions SET {}, {}, {} WHERE id = $3",
        window_undo("daily_usage_nanos", "daily_window_start_ms"),
        window_undo("weekly_usage_nanos", "weekly_window_start_ms"),
        window_undo("monthly_usage_nanos", "monthly_window_start_ms"),
    );
    sqlx::query(&sql)
        .bind(old.total_cost_nanos)
        .bind(old.charged_at_ms)
        .bind(sub_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn undo_key_quota(tx: &mut AnyConnection, old: &Estimate) -> Result<()> {
    let sql = format!(
        "UPDATE api_keys SET \
         status = CASE WHEN status = '{exhausted}' AND quota_used_nanos - $1 < quota_nanos \
                  THEN '{active}' ELSE status END, \
         quota_used_nanos = CASE WHEN quota_used_nanos >= $1 \
                            THEN quota_used_nanos - $1 ELSE 0 END \
         WHERE id = $2 AND quota_nanos > 0",
        exhausted = KeyStatus::QuotaExhausted.as_str(),
        active = KeyStatus::Active.as_str(),
    );
    sqlx::query(&sql)
        .bind(old.actual_cost_nanos)
        .bind(old.key_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
