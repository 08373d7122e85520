//! The queries behind `AuditBooks` (billing.md "audit"): each returns the figures one
//! invariant compares, or the rows that break it; the comparison is `billing::audit`'s.

use super::to_end::ToTheEnd;
use sqlx::Row;

use super::Store;
use crate::error::Result;

/// A key with a quota: `quota_used` and the sum it must equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBooks {
    pub key_id: i64,
    pub quota_used_nanos: i64,
    /// Σ `actual_cost` of its usage rows after `quota_baseline_usage_id`.
    pub charged_since_reset_nanos: i64,
}

/// A user: the balance, the ledger's sum and the balance-mode charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBooks {
    pub user_id: i64,
    pub balance_nanos: i64,
    pub ledger_sum_nanos: i64,
    pub balance_charges_nanos: i64,
}

/// A usage row the audit looks at individually.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRowRef {
    pub request_id: String,
    pub model: String,
    pub upstream_model: String,
}

fn usage_ref(row: &sqlx::any::AnyRow) -> Result<UsageRowRef> {
    Ok(UsageRowRef {
        request_id: row.try_get("request_id")?,
        model: row.try_get("model")?,
        upstream_model: row.try_get("upstream_model")?,
    })
}

impl Store {
    /// Every key with a quota (deleted ones included: they were charged).
    pub async fn audit_keys(&self) -> Result<Vec<KeyBooks>> {
        let rows = sqlx::query(
            "SELECT k.id, k.quota_used_nanos, \
             CAST(COALESCE((SELECT SUM(u.actual_cost_nanos) FROM usage_logs u \
                WHERE u.key_id = k.id AND u.id > k.quota_baseline_usage_id), 0) AS BIGINT) \
                AS charged \
             FROM api_keys k WHERE k.quota_nanos > 0 ORDER BY k.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyBooks {
                    key_id: r.try_get("id")?,
                    quota_used_nanos: r.try_get("quota_used_nanos")?,
                    charged_since_reset_nanos: r.try_get("charged")?,
                })
            })
            .collect()
    }

    /// Every user (deleted ones included).
    pub async fn audit_users(&self) -> Result<Vec<UserBooks>> {
        let rows = sqlx::query(
            "SELECT s.id, s.balance_nanos, \
             CAST(COALESCE((SELECT SUM(l.delta_nanos) FROM balance_ledger l \
                WHERE l.user_id = s.id), 0) AS BIGINT) AS ledger, \
             CAST(COALESCE((SELECT SUM(u.actual_cost_nanos) FROM usage_logs u \
                WHERE u.user_id = s.id AND u.billing_mode = 'balance'), 0) AS BIGINT) AS charged \
             FROM users s ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserBooks {
                    user_id: r.try_get("id")?,
                    balance_nanos: r.try_get("balance_nanos")?,
                    ledger_sum_nanos: r.try_get("ledger")?,
                    balance_charges_nanos: r.try_get("charged")?,
                })
            })
            .collect()
    }

    /// Subscription-mode rows whose subscription (of that user) does not exist: charged
    /// to nothing. At most `limit`.
    pub async fn audit_orphan_subscription_rows(&self, limit: i64) -> Result<Vec<UsageRowRef>> {
        let rows = sqlx::query(
            "SELECT u.request_id, u.model, u.upstream_model FROM usage_logs u \
             WHERE u.billing_mode = 'subscription' AND (u.subscription_id IS NULL OR NOT EXISTS \
               (SELECT 1 FROM subscriptions s WHERE s.id = u.subscription_id AND s.user_id = u.user_id)) \
             ORDER BY u.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_ref).collect()
    }

    /// Rows with tokens, not an uncharged estimate, stored at zero total cost (before
    /// the multiplier). At most `limit`; the audit keeps those of a priced model.
    pub async fn audit_zero_cost_rows(&self, limit: i64) -> Result<Vec<UsageRowRef>> {
        let rows = sqlx::query(
            "SELECT request_id, model, upstream_model FROM usage_logs \
             WHERE total_cost_nanos = 0 AND estimated = 0 \
             AND (input_tokens > 0 OR output_tokens > 0) ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_ref).collect()
    }

    /// Number of usage rows (for the report).
    pub async fn count_usage_rows(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_logs")
            .one_row(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
