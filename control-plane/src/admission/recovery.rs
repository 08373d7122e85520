//! Leases that end without a usage record (ARCHITECTURE.md "Every lease ends in one
//! usage record"). Admit keeps, with each lease, what an estimate of the request's usage
//! needs ([`UsageFacts`]: the request's size and model, who pays and how). When the
//! reaper frees a lease — its data plane's session has been gone past the grace period,
//! so the process died, was killed or lost its connection — the lease's facts are queued
//! here; billing (`billing/recovered.rs`) takes them, prices the estimate and records it
//! flagged `estimated` and `recovered`, unless the request already has a usage record.
//! A real record arriving later supersedes the estimate (`storage/supersede.rs`).
//!
//! A lease the data plane released itself carries no estimate: the data plane is alive
//! and its usage queue owns the record (it never drops one, and spills to a file at
//! shutdown).

use std::sync::{MutexGuard, PoisonError};

use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;

use super::Admission;
use super::leases::Lease;

/// Estimates waiting for billing, at most this many (a dead data plane holds at most
/// its in-flight requests; past this the oldest are dropped, loudly).
const MAX_QUEUED: usize = 100_000;

/// What Admit knew of a request, enough to price an estimate of its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFacts {
    pub request_id: String,
    pub key_id: i64,
    pub user_id: i64,
    pub group_id: Option<i64>,
    pub subscription_id: Option<i64>,
    pub account_id: i64,
    pub billing_mode: BillingMode,
    pub rate_multiplier: Multiplier,
    pub account_cost_multiplier: Multiplier,
    /// As the client asked for it, and as the account is asked for it.
    pub model: String,
    pub upstream_model: String,
    /// The request body's size as the data plane received it.
    pub request_bytes: u64,
    pub stream: bool,
    pub admitted_at_ms: i64,
}

impl Admission {
    fn recovered(&self) -> MutexGuard<'_, Vec<UsageFacts>> {
        // Pushes and drains only: a poisoned queue is still consistent.
        self.inner
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the estimates of reaped leases that carry facts.
    pub(super) fn queue_estimates(&self, reaped: Vec<Lease>) {
        let facts: Vec<UsageFacts> = reaped
            .into_iter()
            .filter_map(|mut l| l.facts.take())
            .map(|f| *f)
            .collect();
        if facts.is_empty() {
            return;
        }
        tracing::info!(
            count = facts.len(),
            "leases reaped without a usage record; estimates queued"
        );
        let mut queue = self.recovered();
        queue.extend(facts);
        if queue.len() > MAX_QUEUED {
            let excess = queue.len() - MAX_QUEUED;
            tracing::error!(
                dropped = excess,
                "too many estimates waiting; oldest dropped"
            );
            queue.drain(..excess);
        }
    }

    /// Takes the estimates waiting to be recorded (billing's recovery task).
    pub fn take_estimates(&self) -> Vec<UsageFacts> {
        std::mem::take(&mut *self.recovered())
    }

    /// Puts back estimates that could not be recorded yet (storage away), first in line.
    pub fn requeue_estimates(&self, mut facts: Vec<UsageFacts>) {
        let mut queue = self.recovered();
        facts.append(&mut queue);
        *queue = facts;
    }
}
