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

    /// Puts back times whose write failed, unless a later use replaced them meanwhile.
    fn restore_dirty(&self, touches: Vec<(i64, i64)>) {
        let mut t = self.lock();
        for (id, at) in touches {
            let newest = t.dirty.get(&id).map_or(at, |&later| later.max(at));
            t.dirty.insert(id, newest);
        }
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

    /// Writes the batched last-used times. A batch that fails to commit is kept for the
    /// next flush (the database may be back by then); meanwhile only LRU ordering
    /// across a restart would suffer, the in-memory times stand.
    pub async fn flush_last_used(&self) -> crate::error::Result<()> {
        let touches = self.inner.last_used.take_dirty();
        if touches.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.inner.store.touch_accounts_last_used(&touches).await {
            tracing::warn!(error = %e, "could not persist account last-used times; kept for the next flush");
            self.inner.last_used.restore_dirty(touches);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_is_kept_without_undoing_later_uses() {
        let t = LastUsed::default();
        t.set(1, 100);
        t.set(2, 200);
        let batch = t.take_dirty();
        // Account 2 is used again while the batch is being written, which then fails.
        t.set(2, 300);
        t.restore_dirty(batch);
        let mut again = t.take_dirty();
        again.sort_unstable();
        assert_eq!(again, vec![(1, 100), (2, 300)]);
        assert!(t.take_dirty().is_empty());
    }
}
