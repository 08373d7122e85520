//! Usage records that could never be charged as they were (`usage_dead_letters`): kept
//! with their reason and the raw record (JSON text, so any byte the data plane sent is
//! stored escaped), listed for operators and marked once re-charged.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::Query;

use super::{Store, not_found};
use crate::error::Result;
use crate::model::DeadLetter;

const DEAD_LETTER_COLS: &str =
    "id, request_id, reason, record, created_at_ms, recharged_at_ms, recharged_model";

fn row_to_dead_letter(row: &AnyRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        reason: row.try_get("reason")?,
        record: row.try_get("record")?,
        created_at_ms: row.try_get("created_at_ms")?,
        recharged_at_ms: row.try_get("recharged_at_ms")?,
        recharged_model: row.try_get("recharged_model")?,
    })
}

/// Counts of the dead-letter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadLetterCounts {
    pub total: i64,
    /// Not re-charged yet.
    pub pending: i64,
    /// Creation time of the oldest pending one.
    pub oldest_pending_ms: Option<i64>,
}

/// The insert of one dead letter (also run inside a usage batch, `charge_batch.rs`).
pub(super) fn insert_dead_letter_query<'q>(
    request_id: &str,
    reason: &str,
    record: &str,
    now_ms: i64,
) -> Query<'q, Any, AnyArguments<'q>> {
    sqlx::query(
        "INSERT INTO usage_dead_letters (request_id, reason, record, created_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request_id.to_owned())
    .bind(reason.to_owned())
    .bind(record.to_owned())
    .bind(now_ms)
}

impl Store {
    /// Stores one dead letter; `false` when one with this request id is already there
    /// (a replay of the same record changes nothing).
    pub async fn insert_dead_letter(
        &self,
        request_id: &str,
        reason: &str,
        record: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let done = insert_dead_letter_query(request_id, reason, record, now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_dead_letter(&self, id: i64) -> Result<DeadLetter> {
        let row = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLS} FROM usage_dead_letters WHERE id = $1"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?;
        match row {
            Some(row) => row_to_dead_letter(&row),
            None => Err(not_found("dead letter", id)),
        }
    }

    /// Newest first, `limit` rows with an id below `before_id` (0 = from the newest);
    /// only pending ones unless `include_recharged`.
    pub async fn list_dead_letters(
        &self,
        include_recharged: bool,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetter>> {
        let pending = if include_recharged {
            ""
        } else {
            "AND recharged_at_ms IS NULL"
        };
        let rows = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLS} FROM usage_dead_letters \
             WHERE ($1 = 0 OR id < $1) {pending} ORDER BY id DESC LIMIT $2"
        ))
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_dead_letter).collect()
    }

    /// Marks a dead letter re-charged (with the model it was charged under); `false` when
    /// it already was.
    pub async fn mark_dead_letter_recharged(
        &self,
        id: i64,
        model: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE usage_dead_letters SET recharged_at_ms = $1, recharged_model = $2 \
             WHERE id = $3 AND recharged_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(model.to_owned())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn count_dead_letters(&self) -> Result<DeadLetterCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, \
             COALESCE(SUM(CASE WHEN recharged_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS pending, \
             MIN(CASE WHEN recharged_at_ms IS NULL THEN created_at_ms END) AS oldest \
             FROM usage_dead_letters",
        )
        .one_row(&self.pool)
        .await?;
        Ok(DeadLetterCounts {
            total: row.try_get("total")?,
            pending: row.try_get("pending")?,
            oldest_pending_ms: row.try_get("oldest")?,
        })
    }
}
