//! Account state that admission writes (not operators): the `error` status, cool-downs,
//! the latest `x-codex-*` usage, and last-used times.
//! Cool-downs only ever extend: `SET x = CASE WHEN x IS NULL OR x < $1 THEN $1 ELSE x END`.
//! Each method returns whether a live account was updated.

use std::collections::BTreeMap;

use tollgate_shared::domain::AccountStatus;
use tollgate_shared::now_ms;

use super::{Store, to_json};
use crate::error::Result;

impl Store {
    /// Status `error` with `message` (a `disabled` account stays disabled; the message
    /// is recorded either way).
    pub async fn set_account_error(&self, id: i64, message: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET error_message = $1, updated_at_ms = $2, \
             status = CASE WHEN status = $3 THEN status ELSE $4 END \
             WHERE id = $5 AND deleted_at_ms IS NULL",
        )
        .bind(message.to_owned())
        .bind(now_ms())
        .bind(AccountStatus::Disabled.as_str())
        .bind(AccountStatus::Error.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `rate_limited_until_ms` moved to `until_ms` unless it is already later.
    pub async fn extend_account_rate_limit(&self, id: i64, until_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET updated_at_ms = $2, rate_limited_until_ms = CASE \
             WHEN rate_limited_until_ms IS NULL OR rate_limited_until_ms < $1 THEN $1 \
             ELSE rate_limited_until_ms END \
             WHERE id = $3 AND deleted_at_ms IS NULL",
        )
        .bind(until_ms)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `overloaded_until_ms` moved to `until_ms` unless it is already later.
    pub async fn extend_account_overload(&self, id: i64, until_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET updated_at_ms = $2, overloaded_until_ms = CASE \
             WHEN overloaded_until_ms IS NULL OR overloaded_until_ms < $1 THEN $1 \
             ELSE overloaded_until_ms END \
             WHERE id = $3 AND deleted_at_ms IS NULL",
        )
        .bind(until_ms)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `temp_unschedulable_until_ms` moved to `until_ms` with `reason`, unless it is
    /// already later (then both stay).
    pub async fn extend_account_temp_unschedulable(
        &self,
        id: i64,
        until_ms: i64,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET updated_at_ms = $3, temp_unschedulable_reason = CASE \
             WHEN temp_unschedulable_until_ms IS NULL OR temp_unschedulable_until_ms < $1 \
             THEN $2 ELSE temp_unschedulable_reason END, \
             temp_unschedulable_until_ms = CASE \
             WHEN temp_unschedulable_until_ms IS NULL OR temp_unschedulable_until_ms < $1 \
             THEN $1 ELSE temp_unschedulable_until_ms END \
             WHERE id = $4 AND deleted_at_ms IS NULL",
        )
        .bind(until_ms)
        .bind(reason.to_owned())
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The latest `x-codex-*` usage snapshot of a subscription account.
    pub async fn set_account_codex_usage(
        &self,
        id: i64,
        snapshot: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET codex_usage = $1 WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(to_json("codex_usage", snapshot)?)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Batched last-used times (never moved backwards). One transaction.
    pub async fn touch_accounts_last_used(&self, touches: &[(i64, i64)]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, at_ms) in touches {
            sqlx::query(
                "UPDATE accounts SET last_used_at_ms = CASE \
                 WHEN last_used_at_ms IS NULL OR last_used_at_ms < $1 THEN $1 \
                 ELSE last_used_at_ms END WHERE id = $2",
            )
            .bind(*at_ms)
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
