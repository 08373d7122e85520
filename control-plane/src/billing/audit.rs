//! `AuditBooks`: checks the invariants of the books (billing.md "audit") and lists every
//! breach. Read-only; cheap enough to run from a cron job (a few aggregate queries).
//!
//! - per key with a quota: Σ `actual_cost` of its usage rows since the quota was last
//!   reset or turned on = `quota_used`;
//! - per user: the ledger's sum − the balance-mode charges = the balance;
//! - no usage row without its charge: no subscription-mode row without its subscription,
//!   and no row with tokens stored at zero cost while its model has a non-zero price
//!   (uncharged estimates excepted);
//! - no dead letter waiting longer than the threshold.

use super::Rates;
use super::price_lookup::PriceTable;
use crate::error::Result;
use crate::storage::Store;

/// Rows looked at one by one, at most this many per check.
const ROW_LIMIT: i64 = 1000;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// `key_quota`, `user_balance`, `usage_without_subscription`, `usage_not_charged`,
    /// `dead_letter_waiting`.
    pub invariant: &'static str,
    /// What it is about (`key 3`, `user 7`, `request r-1`, `dead letters`).
    pub subject: String,
    pub detail: String,
    /// The value the invariant expects and the one found, when amounts.
    pub expected_nanos: i64,
    pub actual_nanos: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub breaches: Vec<Breach>,
    pub keys_checked: i64,
    pub users_checked: i64,
    pub usage_rows: i64,
}

/// Runs every check; `now_ms` and `max_dead_letter_age_ms` for the dead-letter one.
pub async fn audit(store: &Store, now_ms: i64, max_dead_letter_age_ms: i64) -> Result<Report> {
    let mut report = Report::default();
    let keys = store.audit_keys().await?;
    report.keys_checked = i64::try_from(keys.len()).unwrap_or(i64::MAX);
    for k in keys {
        if k.charged_since_reset_nanos != k.quota_used_nanos {
            report.breaches.push(Breach {
                invariant: "key_quota",
                subject: format!("key {}", k.key_id),
                detail: "quota_used differs from the sum of actual_cost since the last reset"
                    .into(),
                expected_nanos: k.charged_since_reset_nanos,
                actual_nanos: k.quota_used_nanos,
            });
        }
    }
    let users = store.audit_users().await?;
    report.users_checked = i64::try_from(users.len()).unwrap_or(i64::MAX);
    for u in users {
        let expected = i128::from(u.ledger_sum_nanos) - i128::from(u.balance_charges_nanos);
        if expected != i128::from(u.balance_nanos) {
            report.breaches.push(Breach {
                invariant: "user_balance",
                subject: format!("user {}", u.user_id),
                detail: format!(
                    "balance differs from the ledger's sum ({}) minus balance-mode charges ({})",
                    u.ledger_sum_nanos, u.balance_charges_nanos
                ),
                expected_nanos: i64::try_from(expected).unwrap_or(i64::MIN),
                actual_nanos: u.balance_nanos,
            });
        }
    }
    for r in store.audit_orphan_subscription_rows(ROW_LIMIT).await? {
        report.breaches.push(Breach {
            invariant: "usage_without_subscription",
            subject: format!("request {}", r.request_id),
            detail: "subscription-mode usage row whose subscription does not exist".into(),
            expected_nanos: 0,
            actual_nanos: 0,
        });
    }
    let prices = PriceTable::load(store).await?;
    for r in store.audit_zero_cost_rows(ROW_LIMIT).await? {
        let served = if r.upstream_model.is_empty() {
            &r.model
        } else {
            &r.upstream_model
        };
        // Judged by today's table (a price that was zero then shows too; the operator
        // decides). An operator alias priced at zero is free deliberately.
        let is_zero = |m: &str| {
            prices
                .lookup_table(m)
                .map(|(rates, _)| rates == Rates::ZERO)
        };
        let served_priced = is_zero(served) == Some(false);
        let free_alias = prices.has_exact(&r.model) && is_zero(&r.model) == Some(true);
        if served_priced && !free_alias {
            report.breaches.push(Breach {
                invariant: "usage_not_charged",
                subject: format!("request {}", r.request_id),
                detail: format!("stored at zero cost although {served:?} has a price"),
                expected_nanos: 0,
                actual_nanos: 0,
            });
        }
    }
    let dl = store.count_dead_letters().await?;
    if let Some(oldest) = dl.oldest_pending_ms
        && now_ms.saturating_sub(oldest) > max_dead_letter_age_ms
    {
        report.breaches.push(Breach {
            invariant: "dead_letter_waiting",
            subject: "dead letters".into(),
            detail: format!(
                "{} dead letter(s) pending, the oldest for {} s (threshold {} s)",
                dl.pending,
                now_ms.saturating_sub(oldest) / 1000,
                max_dead_letter_age_ms / 1000
            ),
            expected_nanos: 0,
            actual_nanos: 0,
        });
    }
    report.usage_rows = store.count_usage_rows().await?;
    Ok(report)
}
