//! Charging a whole `ReportUsage` batch in ONE transaction, with a SAVEPOINT per record.
//!
//! A commit is what costs (on SQLite with `synchronous = FULL` an fsync of the WAL, on
//! Postgres a WAL flush): one per batch instead of one per record. Each record still
//! runs the steps of `charge.rs` (idempotent by request id, superseding an estimate),
//! inside its own savepoint, so a record that fails rolls back only its own writes and
//! the batch goes on. A dead letter is stored in the same transaction, in a savepoint of
//! its own, so it is durable exactly when the batch's charges are.
//!
//! Nothing of the batch is durable before [`ChargeBatch::commit`] returned `Ok`: the
//! caller acknowledges only then, and a failed (or never reached) commit leaves every
//! record of the batch to be sent again, which idempotency by request id makes safe.
//!
//! Postgres aborts the whole transaction at a failed statement until it is rolled back
//! to a savepoint, and then answers `COMMIT` with a silent `ROLLBACK`, no error: every
//! failure here is rolled back to its savepoint before anything else runs. When that
//! rollback (or the savepoint itself) fails, the batch is broken: no further statement
//! runs in it, [`ChargeBatch::commit`] refuses, and dropping it rolls it back.

use sqlx::{Any, Connection, Transaction};

use super::Store;
use super::charge::{ChargeOutcome, charge_in, check_amounts};
use crate::error::{Error, Result};
use crate::model::UsageRecord;

/// One open batch transaction (see the module doc). Dropped without a commit, it is
/// rolled back (the pool closes a connection whose rollback did not finish).
pub struct ChargeBatch {
    tx: Transaction<'static, Any>,
    broken: bool,
}

impl Store {
    /// Opens the transaction of one usage batch.
    pub async fn begin_charge_batch(&self) -> Result<ChargeBatch> {
        Ok(ChargeBatch {
            tx: self.pool.begin().await?,
            broken: false,
        })
    }
}

impl ChargeBatch {
    /// [`Store::charge_usage`] for one record inside the batch, in its own savepoint:
    /// the same outcome and the same errors; an error rolls back only this record.
    pub async fn charge(&mut self, r: &UsageRecord, now_ms: i64) -> Result<ChargeOutcome> {
        check_amounts(r)?;
        self.usable()?;
        let mut sp = match Connection::begin(&mut *self.tx).await {
            Ok(sp) => sp,
            Err(e) => {
                self.broken = true;
                return Err(e.into());
            }
        };
        let result = charge_in(&mut sp, r, now_ms).await;
        let ended = match &result {
            Ok(Some(_)) => sp.commit().await,
            // A replay changed nothing; an error's writes are undone.
            Ok(None) | Err(_) => sp.rollback().await,
        };
        if let Err(e) = ended {
            self.broken = true;
            return Err(e.into());
        }
        Ok(result?.unwrap_or_default())
    }

    /// [`Store::insert_dead_letter`] inside the batch, in its own savepoint.
    pub async fn insert_dead_letter(
        &mut self,
        request_id: &str,
        reason: &str,
        record: &str,
        now_ms: i64,
    ) -> Result<bool> {
        self.usable()?;
        let mut sp = match Connection::begin(&mut *self.tx).await {
            Ok(sp) => sp,
            Err(e) => {
                self.broken = true;
                return Err(e.into());
            }
        };
        let result =
            super::dead_letters::insert_dead_letter_query(request_id, reason, record, now_ms)
                .execute(&mut *sp)
                .await;
        let ended = match &result {
            Ok(_) => sp.commit().await,
            Err(_) => sp.rollback().await,
        };
        if let Err(e) = ended {
            self.broken = true;
            return Err(e.into());
        }
        Ok(result?.rows_affected() == 1)
    }

    /// A savepoint could not be rolled back (or opened): the transaction is unusable and
    /// the batch must stop; nothing of it will commit.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Commits every record charged and dead letter stored. On `Err` nothing of the
    /// batch may be acknowledged.
    pub async fn commit(self) -> Result<()> {
        self.usable()?;
        self.tx.commit().await?;
        Ok(())
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Internal(
                "the usage batch's transaction is broken (a savepoint could not be rolled back)"
                    .into(),
            ));
        }
        Ok(())
    }
}
