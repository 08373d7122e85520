//! Leases that end without a usage record (ARCHITECTURE.md "Every lease ends in one
//! usage record"). Admit keeps, with each lease, what an estimate of the request's usage
//! needs ([`UsageFacts`]: the request's size and model, who pays and how). Billing
//! (`billing/recovered.rs`) takes the queued estimates, prices them and records them
//! flagged `estimated` and `recovered`, unless the request already has a usage record;
//! a real record arriving later supersedes the estimate (`storage/supersede.rs`).
//!
//! When an estimate is queued — at reap, once a session has been gone past the grace
//! period (its process died, was killed, or lost its connection):
//! - for every lease of that session still held (the request was in flight);
//! - for every request whose lease that session released but whose usage record has
//!   not arrived ("settling" below): the record was in the dead process's memory.
//!
//! A released request leaves the settling table when its usage record is stored (or
//! dead-lettered), when the data plane says it ends without one (`unbilled`: every
//! attempt failed, or an upstream error was passed through), when it was abandoned
//! during admission, or after [`SETTLE_TTL`] (a live data plane's queue owns it; this
//! bounds memory). A data plane that reconnected (new session) while records of the old
//! session were still queued gets estimates for them at the old session's expiry, which
//! its real records then supersede: the books end right either way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::{MutexGuard, PoisonError};

use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;

use super::Admission;
use super::leases::Lease;

/// Estimates waiting for billing, at most this many (a dead data plane holds at most
/// its in-flight requests; past this the oldest are dropped, loudly).
const MAX_QUEUED: usize = 100_000;

/// How long a released request waits for its usage record before it is forgotten.
pub const SETTLE_TTL: Duration = Duration::from_secs(600);

/// Released requests waiting for their usage record, by request id.
#[derive(Debug, Default)]
pub struct Settling(HashMap<String, Waiting>);

#[derive(Debug)]
struct Waiting {
    /// The session that released it.
    session_id: String,
    since: Instant,
    facts: UsageFacts,
}

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
        self.push_estimates(facts);
    }

    fn push_estimates(&self, facts: Vec<UsageFacts>) {
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

    fn settling(&self) -> MutexGuard<'_, Settling> {
        // Inserts and removes only: a poisoned map is still consistent.
        self.inner
            .settling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Released leases: their requests wait for their usage record (a later lease of
    /// the same request, after a failover, replaces the earlier one's facts).
    pub(super) fn settle(&self, session_id: &str, released: Vec<Lease>) {
        let now = Instant::now();
        let mut settling = self.settling();
        for mut l in released {
            if let Some(facts) = l.facts.take() {
                settling.0.insert(
                    facts.request_id.clone(),
                    Waiting {
                        session_id: session_id.to_owned(),
                        since: now,
                        facts: *facts,
                    },
                );
            }
        }
    }

    /// These requests need no estimate: their usage record is stored, or they end
    /// without one.
    pub fn settled<'a>(&self, request_ids: impl IntoIterator<Item = &'a str>) {
        let mut settling = self.settling();
        for id in request_ids {
            settling.0.remove(id);
        }
    }

    /// The session is gone past the grace period: the records of the requests it
    /// released are lost with it, unless they arrive after all. Also forgets requests
    /// settling longer than [`SETTLE_TTL`].
    pub(super) fn settle_expired(&self, expired_sessions: &[String], now: Instant) {
        let lost: Vec<UsageFacts> = {
            let mut settling = self.settling();
            settling
                .0
                .retain(|_, w| now.saturating_duration_since(w.since) < SETTLE_TTL);
            let ids: Vec<String> = settling
                .0
                .iter()
                .filter(|(_, w)| expired_sessions.contains(&w.session_id))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| settling.0.remove(id))
                .map(|w| w.facts)
                .collect()
        };
        if lost.is_empty() {
            return;
        }
        tracing::info!(
            count = lost.len(),
            "released requests of an expired session have no usage record; estimates queued"
        );
        self.push_estimates(lost);
    }

    /// How many released requests wait for their usage record (tests, diagnostics).
    pub fn settling_len(&self) -> usize {
        self.settling().0.len()
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
