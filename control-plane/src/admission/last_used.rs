//! When each account was last leased: kept in memory for the LRU tie-break of selection
//! and written to storage in batches by the background task, so ordering survives a
//! restart without a write on the hot path.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::Admission;
use crate::model::Account;

#[derive(Debug, Default)]
pub(super) struct LastUsed(Mutex<Times>);

#[derive(Debug, Default)]
struct Times {
    /// Latest use per account, unix ms (LRU ordering).
    at: HashMap<i64, i64>,
    /// Not yet written to storage.
    dirty: HashMap<i64, i64>,
}

impl LastUsed {
    fn lock(&self) -> MutexGuard<'_, Times> {
        // Each critical section is a single map update: a panic cannot leave it torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, account_id: i64) -> Option<i64> {
        self.lock().at.get(&account_id).copied()
    }

    fn set(&self, account_id: i64, at_ms: i64) {
        let mut t = self.lock();
        t.at.insert(account_id, at_ms);
        t.dirty.insert(account_id, at_ms);
    }

    fn take_dirty(&self) -> Vec<(i64, i64)> {
        self.lock().dirty.drain().collect()
    }
}

impl Admission {
    /// The later of the in-memory and the stored last use.
    pub(super) fn last_used(&self, a: &Account) -> Option<i64> {
        self.inner.last_used.get(a.id).max(a.last_used_at_ms)
    }

    pub(super) fn touch(&self, account_id: i64, at_ms: i64) {
        self.inner.last_used.set(account_id, at_ms);
    }

    /// Writes the batched last-used times.
    pub async fn flush_last_used(&self) {
        let touches = self.inner.last_used.take_dirty();
        if let Err(e) = self.inner.store.touch_accounts_last_used(&touches).await {
            // Only LRU ordering across restarts suffers; the in-memory times stand.
            tracing::warn!(error = %e, "could not persist account last-used times");
        }
    }
}
