//! Response-id affinity: which account created an upstream response id, for which user.
//! Written once per response (a replay keeps the first owner: a response id never moves
//! to another account), read at Admit, pruned past the TTL.

use sqlx::Row;

use super::Store;
use crate::error::Result;
use crate::model::ResponseOwner;

impl Store {
    /// Remembers `owner`; an id already recorded keeps its first owner. True = inserted.
    pub async fn record_response(&self, owner: &ResponseOwner) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO response_owners (response_id, account_id, user_id, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (response_id) DO NOTHING",
        )
        .bind(owner.response_id.clone())
        .bind(owner.account_id)
        .bind(owner.user_id)
        .bind(owner.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Remembers a batch of owners in one transaction (each keeps a first owner already
    /// stored). Returns how many were inserted.
    pub async fn record_responses(&self, owners: &[ResponseOwner]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for owner in owners {
            inserted += sqlx::query(
                "INSERT INTO response_owners (response_id, account_id, user_id, created_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (response_id) DO NOTHING",
            )
            .bind(owner.response_id.clone())
            .bind(owner.account_id)
            .bind(owner.user_id)
            .bind(owner.created_at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The owner of a response id recorded at or after `since_ms` (older rows are past
    /// the TTL even if not pruned yet).
    pub async fn response_owner(
        &self,
        response_id: &str,
        since_ms: i64,
    ) -> Result<Option<ResponseOwner>> {
        let row = sqlx::query(
            "SELECT response_id, account_id, user_id, created_at_ms FROM response_owners \
             WHERE response_id = $1 AND created_at_ms >= $2",
        )
        .bind(response_id.to_owned())
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ResponseOwner {
                response_id: row.try_get("response_id")?,
                account_id: row.try_get("account_id")?,
                user_id: row.try_get("user_id")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        })
        .transpose()
    }

    /// Deletes the owners recorded before `before_ms`; returns how many.
    pub async fn prune_responses(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM response_owners WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
