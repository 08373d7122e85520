//! Cache invalidations pushed to every attached data plane. Admin changes and billing
//! publish here; each Gateway session forwards them down its stream.

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

/// Fan-out of invalidations. A slow subscriber that lags behind loses messages and must
/// drop its whole cache (`Lagged` → treat as `Scope::All`).
#[derive(Debug, Clone)]
pub struct Invalidations {
    tx: broadcast::Sender<Invalidation>,
}

impl Default for Invalidations {
    fn default() -> Self {
        Self::new()
    }
}

impl Invalidations {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { tx }
    }

    pub fn publish(&self, inv: Invalidation) {
        // No subscriber (no data plane attached) is fine: nothing is cached anywhere.
        let _ = self.tx.send(inv);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}
