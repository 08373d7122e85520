//! Reported upstream outcomes applied to their account: the decision of
//! `outcome_policy.rs` (or an operator's unschedulable rule) is written to storage, the
//! truth Admit reads, and announced to every data plane; outcomes that change nothing
//! are counted.

use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_shared::now_ms;

use super::outcome_policy::{self, AccountChange, Counted, Outcome, OutcomeKind};
use super::{Admission, unschedulable_rules};
use crate::error::{Error, Result};
use crate::events::Invalidation;

/// Counts of outcomes that change no state (ready for a metrics exporter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub server_errors: u64,
    pub stream_timeouts: u64,
    pub connect_errors: u64,
    pub rate_limited: u64,
    pub overloaded: u64,
    pub errored: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    server_errors: AtomicU64,
    stream_timeouts: AtomicU64,
    connect_errors: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    errored: AtomicU64,
}

impl Admission {
    /// Applies a reported upstream outcome to the account's health. A change is written
    /// to storage (the truth Admit reads) and announced to every data plane.
    pub async fn report_outcome(&self, o: Outcome) -> Result<()> {
        let inner = &*self.inner;
        if o.account_id <= 0 {
            return Err(Error::invalid("account_id", "must be positive"));
        }
        let decision = outcome_policy::decide(&o, now_ms(), &inner.settings.cooldowns);
        if o.kind == OutcomeKind::Success {
            self.token_worked(o.account_id);
        }
        let changed = match &decision.change {
            // A 401 forces a token refresh first: a subscription login whose token was
            // renewed stays in service (the refresh published its invalidation).
            AccountChange::Error(_)
                if decision.wants_token_refresh
                    && self.recovered_by_refresh(o.account_id).await =>
            {
                tracing::info!(
                    account_id = o.account_id,
                    "401: token refreshed, account kept"
                );
                false
            }
            change => self.apply_change(&o, change).await?,
        };
        if let Some(snapshot) = &decision.codex_usage {
            inner
                .store
                .set_account_codex_usage(o.account_id, snapshot)
                .await?;
        }
        if changed {
            inner
                .invalidations
                .publish(Invalidation::account(o.account_id));
        }
        Ok(())
    }

    /// Writes `change` for the outcome's account; `true` if the account changed.
    async fn apply_change(&self, o: &Outcome, change: &AccountChange) -> Result<bool> {
        let inner = &*self.inner;
        let c = &inner.counters;
        let store = &inner.store;
        Ok(match change {
            AccountChange::Error(message) => {
                c.errored.fetch_add(1, Ordering::Relaxed);
                let changed = store.set_account_error(o.account_id, message).await?;
                tracing::warn!(
                    account_id = o.account_id,
                    status = o.status,
                    "account set to error"
                );
                changed
            }
            AccountChange::RateLimitedUntil(until) => {
                c.rate_limited.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    account_id = o.account_id,
                    until_ms = until,
                    "account rate-limited"
                );
                store
                    .extend_account_rate_limit(o.account_id, *until)
                    .await?
            }
            AccountChange::OverloadedUntil(until) => {
                c.overloaded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    account_id = o.account_id,
                    until_ms = until,
                    "account overloaded"
                );
                store.extend_account_overload(o.account_id, *until).await?
            }
            AccountChange::Counted(kind) => {
                let counter = match kind {
                    Counted::ServerError => &c.server_errors,
                    Counted::StreamTimeout => &c.stream_timeouts,
                    Counted::ConnectError => &c.connect_errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(account_id = o.account_id, status = o.status, kind = ?kind, "upstream failure counted");
                unschedulable_rules::apply(store, &inner.settings.unschedulable_rules, o, now_ms())
                    .await?
            }
            AccountChange::None => false,
        })
    }

    pub fn outcome_counts(&self) -> OutcomeCounts {
        let c = &self.inner.counters;
        OutcomeCounts {
            server_errors: c.server_errors.load(Ordering::Relaxed),
            stream_timeouts: c.stream_timeouts.load(Ordering::Relaxed),
            connect_errors: c.connect_errors.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            overloaded: c.overloaded.load(Ordering::Relaxed),
            errored: c.errored.load(Ordering::Relaxed),
        }
    }
}
