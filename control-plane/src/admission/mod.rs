//! Admission: the one call on the data plane's hot path that turns an authorized request
//! into a lease — user wait queue and slot, billing re-check, account selection (sticky,
//! load-aware, wait) and the account slot (responses-flow.md §3) — plus lease release,
//! the reaper that frees the leases of vanished sessions, lease re-adoption on Attach,
//! and account health from reported upstream outcomes (accounts.md).
//!
//! One file per concern: `admit.rs` (the Admit call), `choose_account.rs` (selection and
//! the account slot), `lease_lifecycle.rs` (release, re-adoption, reaping, the background
//! task), `report_outcome.rs` (outcomes applied to accounts), `last_used.rs` (LRU times),
//! `tokens.rs` (subscription tokens at admission), `refusals.rs` (what a refusal says),
//! `response_owners.rs` (response-id affinity: the account a response id belongs to).
//! Pure rules live beside them: `select.rs` (ranking), `outcome_policy.rs`,
//! `unschedulable_rules.rs`, `billing_check.rs`, `lease_url.rs`.
//!
//! Live state (slots, queues, leases, sticky bindings, last-used times) is in memory;
//! durable state (keys, users, groups, accounts and their health, prices) is read through
//! the [`snapshot::Snapshot`], which every write invalidates before its call returns, so a
//! health change written by `report_outcome` or by an operator takes effect on the very
//! next Admit. Subscriptions, and the user after a wait (the billing re-check), are read
//! from storage.
//!
//! Architecture invariant: a slot is counted exactly while a `SlotPermit` is alive, and
//! permits live only in local variables of an in-progress Admit or in the lease table.
//! A cancelled Admit drops its permits; a released or reaped lease drops its own.
//!
//! Architecture invariant: `admission/` does not import `gateway/` (nor the wire types):
//! the service above converts messages and hands the engine what it needs, such as a
//! [`SessionLiveness`] view of the data-plane sessions.

mod admit;
pub mod billing_check;
mod choose_account;
mod last_used;
mod lease_lifecycle;
pub mod lease_url;
pub mod leases;
pub mod outcome_policy;
mod pricing;
pub mod queue_time;
pub mod recovery;
mod refusals;
mod report_outcome;
pub mod response_owners;
pub mod select;
mod settings;
pub mod slots;
pub mod snapshot;
pub mod sticky;
mod tokens;
pub mod unschedulable_rules;

use std::sync::Arc;

use crate::events::Invalidations;
use crate::oauth::TokenRefresher;
use crate::storage::Store;
use last_used::LastUsed;
use leases::LeaseTable;
use report_outcome::Counters;
use response_owners::ResponseOwners;
use slots::SlotTable;
use snapshot::Snapshot;
use sticky::StickyTable;

pub use admit::{AdmitError, AdmitRequest, Granted};
pub use lease_lifecycle::{Adoption, HeldLease};
pub use recovery::UsageFacts;
pub use refusals::Rejection;
pub use report_outcome::OutcomeCounts;
pub use settings::AdmissionSettings;

/// What admission needs to know of the data-plane sessions (the service layer owns the
/// session table and implements this).
pub trait SessionLiveness: std::fmt::Debug + Send + Sync {
    /// The session is attached and its stream is open.
    fn is_connected(&self, session_id: &str) -> bool;
    /// Sessions gone longer than `grace`, removed from the table and returned.
    fn take_expired(&self, grace: std::time::Duration) -> Vec<String>;
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// What Admit reads of storage, cached (`snapshot.rs`).
    snapshot: Snapshot,
    invalidations: Invalidations,
    sessions: Arc<dyn SessionLiveness>,
    settings: AdmissionSettings,
    user_slots: SlotTable,
    user_pending: SlotTable,
    account_slots: SlotTable,
    leases: LeaseTable,
    sticky: StickyTable,
    last_used: LastUsed,
    counters: Counters,
    /// Leases freed by the reaper, ever (the metrics).
    leases_reaped: prometheus_client::metrics::counter::Counter,
    /// Subscription token refresher (`tokens.rs`).
    tokens: TokenRefresher,
    /// Which account created each response id (`response_owners.rs`).
    responses: ResponseOwners,
    /// Estimates of reaped leases, waiting for billing (`recovery.rs`).
    recovered: std::sync::Mutex<Vec<recovery::UsageFacts>>,
    /// Released requests waiting for their usage record (`recovery.rs`).
    settling: std::sync::Mutex<recovery::Settling>,
}

/// The admission engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl Admission {
    /// The engine over `store`, told about sessions by `sessions` and keeping subscription
    /// tokens fresh through `tokens`. Its background tasks (`run_background` and the
    /// snapshot's `follow`) are the caller's to spawn.
    pub fn new(
        store: Store,
        invalidations: Invalidations,
        sessions: Arc<dyn SessionLiveness>,
        tokens: TokenRefresher,
        settings: AdmissionSettings,
    ) -> Self {
        let sticky = StickyTable::new(settings.sticky_ttl);
        let snapshot = Snapshot::new(store.clone(), invalidations.clone(), snapshot::DEFAULT_TTL);
        let responses = ResponseOwners::new(
            store.clone(),
            settings.response_ttl,
            settings.response_cache_capacity,
        );
        Self {
            inner: Arc::new(Inner {
                store,
                snapshot,
                invalidations,
                sessions,
                settings,
                user_slots: SlotTable::new("user"),
                user_pending: SlotTable::new("user_pending"),
                account_slots: SlotTable::new("account"),
                leases: LeaseTable::default(),
                sticky,
                last_used: LastUsed::default(),
                counters: Counters::default(),
                leases_reaped: Default::default(),
                tokens,
                responses,
                recovered: std::sync::Mutex::default(),
                settling: std::sync::Mutex::default(),
            }),
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.inner.settings
    }

    /// The cache Admit reads through; its `follow` task belongs on the service's tracker.
    pub fn snapshot(&self) -> &Snapshot {
        &self.inner.snapshot
    }

    /// Live leases (for tests and diagnostics).
    pub fn lease_count(&self) -> usize {
        self.inner.leases.len()
    }

    pub fn has_lease(&self, lease_id: &str) -> bool {
        self.inner.leases.contains(lease_id)
    }

    pub fn lease_owner(&self, lease_id: &str) -> Option<String> {
        self.inner.leases.owner_of(lease_id)
    }

    /// Slots in use and waiters of a user / an account.
    pub fn user_usage(&self, user_id: i64) -> slots::Usage {
        self.inner.user_slots.usage(user_id)
    }

    pub fn account_usage(&self, account_id: i64) -> slots::Usage {
        self.inner.account_slots.usage(account_id)
    }

    /// Slots in use and waiters of every busy account, and of all users together (users
    /// are too many to label by).
    pub fn slot_usage(&self) -> SlotUsage {
        let users = self.inner.user_slots.all_usage();
        SlotUsage {
            accounts: self.inner.account_slots.all_usage(),
            users_in_use: users.iter().map(|(_, u)| u64::from(u.in_use)).sum(),
            users_waiting: users.iter().map(|(_, u)| u64::from(u.waiting)).sum(),
        }
    }

    /// Leases freed by the reaper because their session was gone past the grace.
    pub fn leases_reaped(&self) -> prometheus_client::metrics::counter::Counter {
        self.inner.leases_reaped.clone()
    }
}

/// A point-in-time view of the slot tables.
#[derive(Debug, Clone, Default)]
pub struct SlotUsage {
    pub accounts: Vec<(i64, slots::Usage)>,
    pub users_in_use: u64,
    pub users_waiting: u64,
}

#[cfg(test)]
mod tests {
    /// The invariant in the module doc: no file of `admission/` names the gRPC layer.
    #[test]
    fn admission_does_not_import_the_service_layer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admission");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Spelled in pieces so that this file does not match itself.
            let forbidden_paths = [
                concat!("crate::", "gateway"),
                concat!("tollgate_shared::", "proto"),
                concat!("tonic", "::"),
            ];
            for forbidden in forbidden_paths {
                let found = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .any(|l| l.contains(forbidden));
                assert!(!found, "{} names `{forbidden}`", path.display());
            }
            checked += 1;
        }
        assert!(
            checked >= 10,
            "only {checked} files found in {}",
            dir.display()
        );
    }
}
