//! Cache invalidations pushed to every attached data plane. Admin changes and billing
//! publish here; each Gateway session forwards them down its stream.
//!
//! The control plane's own admission snapshot (`admission/snapshot.rs`) hears the same
//! invalidations on a second channel, numbered, plus changes only it caches
//! ([`Invalidations::publish_local`]). The number — the generation — is bumped inside
//! the publishing call, so a reader can tell synchronously that a change is not yet
//! applied to the snapshot and go to storage instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Key,
    User,
    Group,
    Account,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub scope: Scope,
    pub ids: Vec<i64>,
}

impl Invalidation {
    pub fn key(id: i64) -> Self {
        Self {
            scope: Scope::Key,
            ids: vec![id],
        }
    }
    pub fn user(id: i64) -> Self {
        Self {
            scope: Scope::User,
            ids: vec![id],
        }
    }
    pub fn group(id: i64) -> Self {
        Self {
            scope: Scope::Group,
            ids: vec![id],
        }
    }
    pub fn account(id: i64) -> Self {
        Self {
            scope: Scope::Account,
            ids: vec![id],
        }
    }
    pub fn all() -> Self {
        Self {
            scope: Scope::All,
            ids: Vec::new(),
        }
    }
}

/// What the admission snapshot drops: every published invalidation, and changes that
/// only the control plane's snapshot caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Invalidated(Invalidation),
    /// `SetPrice` / `DeletePrice` (data planes cache no prices).
    Prices,
}

/// A [`Change`] with its generation: 1, 2, 3… in the order they were published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub generation: u64,
    pub change: Change,
}

/// Fan-out of invalidations. A slow subscriber that lags behind loses messages and must
/// drop its whole cache (`Lagged` → treat as `Scope::All`).
#[derive(Debug, Clone)]
pub struct Invalidations {
    tx: broadcast::Sender<Invalidation>,
    local: broadcast::Sender<Numbered>,
    generation: Arc<Generation>,
}

#[derive(Debug, Default)]
struct Generation {
    /// Held while numbering and sending, so that the channel carries the generations in
    /// order (a subscriber's "applied up to n" must mean every change ≤ n).
    order: Mutex<()>,
    last: AtomicU64,
}

impl Default for Invalidations {
    fn default() -> Self {
        Self::new()
    }
}

impl Invalidations {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        let (local, _) = broadcast::channel(4096);
        Self {
            tx,
            local,
            generation: Arc::default(),
        }
    }

    /// Tells the data planes and the control plane's snapshot. Call it after the change
    /// committed and before the call that made it returns.
    pub fn publish(&self, inv: Invalidation) {
        // The snapshot first: it must never be behind what a data plane was told.
        self.publish_local(Change::Invalidated(inv.clone()));
        // No subscriber (no data plane attached) is fine: nothing is cached anywhere.
        let _ = self.tx.send(inv);
    }

    /// Tells only the control plane's snapshot: for changes data planes do not cache, or
    /// hear about later (a charge's invalidations go out once per batch).
    pub fn publish_local(&self, change: Change) {
        let _order = self
            .generation
            .order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = self.generation.last.fetch_add(1, Ordering::SeqCst) + 1;
        // No subscriber (an engine built without its snapshot task) is fine: its readers
        // see the generation move and go to storage.
        let _ = self.local.send(Numbered { generation, change });
    }

    /// The generation of the latest change published (0 before any).
    pub fn generation(&self) -> u64 {
        self.generation.last.load(Ordering::SeqCst)
    }

    /// The numbered channel the admission snapshot follows.
    pub fn subscribe_numbered(&self) -> broadcast::Receiver<Numbered> {
        self.local.subscribe()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}
