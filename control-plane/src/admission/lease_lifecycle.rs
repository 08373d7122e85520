//! A lease after Admit: release by the data plane, re-adoption when a data plane
//! re-attaches, and reaping when its session is gone past the grace period; plus the
//! background task that reaps, prunes sticky bindings and persists last-used times.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Admission;
use super::leases::{Lease, UserHold};

/// Longest lease id accepted from a data plane (ours are 36-character UUIDs).
const MAX_LEASE_ID: usize = 128;

/// A lease a reconnecting data plane still holds (`Attach.held_leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub lease_id: String,
    pub user_id: i64,
    pub account_id: i64,
}

/// Leases declared at Attach, held by a provisional owner until the session id is known.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub provisional_owner: String,
    pub adopted_lease_ids: Vec<String>,
}

impl Admission {
    /// Releases leases; unknown or already released ids are ignored. Ownership is not
    /// checked: lease ids are unguessable, and a data plane may release a lease it got
    /// under an earlier session of its own.
    pub fn release<'a>(
        &self,
        session_id: &str,
        lease_ids: impl IntoIterator<Item = &'a str>,
    ) -> usize {
        let released = self.inner.leases.release(lease_ids);
        let n = released.len();
        tracing::trace!(session_id, released = n, "leases released");
        // Their usage records are on the way; until they arrive, an estimate stands by.
        self.settle(session_id, released);
        n
    }

    /// Releases whatever was granted for requests the data plane gave up during
    /// admission (it cancelled the Admit call, so it may never have seen a lease id), and
    /// makes a grant still racing with that cancellation free its slots at once.
    pub fn release_requests<'a>(
        &self,
        request_ids: impl IntoIterator<Item = &'a str> + Clone,
    ) -> usize {
        // Never served: nothing to estimate.
        self.settled(request_ids.clone());
        self.inner
            .leases
            .release_requests(request_ids, Instant::now())
    }

    /// Re-adopts the leases a reconnecting data plane declares. Each one known here moves
    /// to the new session; an unknown one (the control plane restarted, or a new leader)
    /// is re-created with its user and account slot counted once, even past the limits:
    /// the request is already running. The leases are held by a provisional owner until
    /// [`Admission::bind_adopted`] names the session; if that never happens they are
    /// freed after the grace period like any other orphan.
    pub fn adopt(&self, held: &[HeldLease]) -> Adoption {
        let provisional_owner = format!("adopting-{}", uuid::Uuid::new_v4());
        let mut seen = HashSet::new();
        let mut adopted_lease_ids = Vec::new();
        for h in held {
            if !well_formed(h) || !seen.insert(h.lease_id.as_str()) {
                continue;
            }
            if self.adopt_one(h, &provisional_owner) {
                adopted_lease_ids.push(h.lease_id.clone());
            } else {
                tracing::warn!(
                    lease_id = h.lease_id,
                    "declared lease does not match the one known here; not adopted"
                );
            }
        }
        if !adopted_lease_ids.is_empty() {
            tracing::info!(adopted = adopted_lease_ids.len(), "leases re-adopted");
        }
        Adoption {
            provisional_owner,
            adopted_lease_ids,
        }
    }

    /// Moves a known lease to `owner`, or re-creates an unknown one with its slots
    /// counted. `false` when the lease known here is for another user or account.
    fn adopt_one(&self, h: &HeldLease, owner: &str) -> bool {
        let inner = &*self.inner;
        inner
            .leases
            .adopt_or_create(&h.lease_id, owner, h.user_id, h.account_id, || {
                let hold = UserHold::new(
                    h.user_id,
                    inner.user_slots.force_acquire(h.user_id),
                    inner.user_pending.force_acquire(h.user_id),
                );
                Lease::new(
                    owner.to_owned(),
                    h.account_id,
                    Arc::new(hold),
                    inner.account_slots.force_acquire(h.account_id),
                )
            })
    }

    /// Hands the leases adopted under `provisional_owner` to the new session.
    pub fn bind_adopted(&self, provisional_owner: &str, session_id: &str) -> usize {
        self.inner
            .leases
            .rebind_owner(provisional_owner, session_id)
    }

    /// Frees the leases of sessions gone longer than the grace period. Returns how many.
    pub fn reap(&self) -> usize {
        let inner = &*self.inner;
        let grace = inner.settings.lease_grace;
        let mut freed = 0;
        let expired = inner.sessions.take_expired(grace);
        self.settle_expired(&expired, Instant::now());
        for session_id in expired {
            let reaped = inner.leases.release_owner(&session_id);
            let n = reaped.len();
            if n > 0 {
                tracing::info!(
                    session_id,
                    freed = n,
                    "freed the leases of an expired session"
                );
            }
            // Their requests may never get a usage record: estimate them.
            self.queue_estimates(reaped);
            freed += n;
        }
        // Owners the session table no longer knows (provisional adopters never bound, or
        // a lease granted just as its session went away) are timed here.
        let sessions = &inner.sessions;
        let reaped = inner
            .leases
            .reap_away(|o| sessions.is_connected(o), grace, Instant::now());
        let n = reaped.len();
        if n > 0 {
            tracing::info!(freed = n, "freed orphaned leases");
        }
        self.queue_estimates(reaped);
        inner
            .leases_reaped
            .inc_by(u64::try_from(freed + n).unwrap_or(u64::MAX));
        freed + n
    }

    /// The background task: reaps expired sessions' leases, prunes sticky bindings and
    /// persists last-used times, until `shutdown`. Spawn it on the service's tracker.
    pub async fn run_background(self, shutdown: CancellationToken) {
        let grace = self.inner.settings.lease_grace;
        // Frequent enough that a lease outlives its session by at most the grace plus a
        // small fraction of it.
        let tick = (grace / 10).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let flush_every = Duration::from_secs(2);
        // Expired response owners go in the first minute, then every ten.
        let prune_every = Duration::from_secs(600);
        let mut next_prune = Instant::now() + Duration::from_secs(60);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.reap();
            let now = Instant::now();
            self.inner.sticky.prune(now);
            if now.duration_since(last_flush) >= flush_every {
                // A failure is logged and the batch kept for the next flush.
                let _ = self.flush_last_used().await;
                last_flush = now;
            }
            self.flush_responses().await;
            if now >= next_prune {
                self.prune_responses().await;
                next_prune = now + prune_every;
            }
        }
        let _ = self.flush_last_used().await;
        self.flush_responses().await;
    }
}

/// A declared lease worth looking at: a bounded id and positive user and account ids.
fn well_formed(h: &HeldLease) -> bool {
    !h.lease_id.is_empty() && h.lease_id.len() <= MAX_LEASE_ID && h.user_id > 0 && h.account_id > 0
}
