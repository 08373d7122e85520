//! Sticky sessions: a conversation (its session hash) keeps going to the account that
//! served it, so the upstream's prompt cache keeps working. Bindings are per group (the
//! same conversation through keys of two groups may use different accounts), live for a
//! TTL that each use refreshes, and are pruned by the admission background task.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

type BindingKey = (Option<i64>, String);

#[derive(Debug)]
struct Binding {
    account_id: i64,
    expires: Instant,
}

#[derive(Debug)]
pub struct StickyTable {
    ttl: Duration,
    map: Mutex<HashMap<BindingKey, Binding>>,
}

impl StickyTable {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BindingKey, Binding>> {
        // Single-statement critical sections: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The account bound to this session, if the binding is still alive.
    pub fn get(&self, group_id: Option<i64>, hash: &str, now: Instant) -> Option<i64> {
        let mut map = self.lock();
        let key = (group_id, hash.to_owned());
        match map.get(&key) {
            Some(b) if b.expires > now => Some(b.account_id),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Binds (or re-binds) the session and refreshes its TTL.
    pub fn bind(&self, group_id: Option<i64>, hash: &str, account_id: i64, now: Instant) {
        self.lock().insert(
            (group_id, hash.to_owned()),
            Binding {
                account_id,
                expires: now + self.ttl,
            },
        );
    }

    /// Drops the binding if it still points at `account_id` (a concurrent re-bind wins).
    pub fn unbind(&self, group_id: Option<i64>, hash: &str, account_id: i64) {
        let mut map = self.lock();
        let key = (group_id, hash.to_owned());
        if map.get(&key).is_some_and(|b| b.account_id == account_id) {
            map.remove(&key);
        }
    }

    /// Removes expired bindings; returns how many.
    pub fn prune(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, b| b.expires > now);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_get_refresh_expire() {
        let t = StickyTable::new(Duration::from_secs(3600));
        let now = Instant::now();
        assert_eq!(t.get(Some(1), "h", now), None);
        t.bind(Some(1), "h", 42, now);
        assert_eq!(t.get(Some(1), "h", now), Some(42));
        // Per group.
        assert_eq!(t.get(Some(2), "h", now), None);
        assert_eq!(t.get(None, "h", now), None);
        // Refreshed on use: a re-bind at +50 min lives until +110 min.
        let later = now + Duration::from_secs(50 * 60);
        t.bind(Some(1), "h", 42, later);
        assert_eq!(
            t.get(Some(1), "h", now + Duration::from_secs(100 * 60)),
            Some(42)
        );
        assert_eq!(
            t.get(Some(1), "h", now + Duration::from_secs(111 * 60)),
            None
        );
        assert!(t.is_empty(), "an expired binding is dropped when seen");
    }

    #[test]
    fn unbind_only_the_named_account() {
        let t = StickyTable::new(Duration::from_secs(60));
        let now = Instant::now();
        t.bind(None, "h", 1, now);
        t.unbind(None, "h", 2);
        assert_eq!(t.get(None, "h", now), Some(1));
        t.unbind(None, "h", 1);
        assert_eq!(t.get(None, "h", now), None);
    }

    #[test]
    fn prune_removes_expired() {
        let t = StickyTable::new(Duration::from_secs(60));
        let now = Instant::now();
        t.bind(None, "a", 1, now);
        t.bind(None, "b", 2, now + Duration::from_secs(30));
        assert_eq!(t.prune(now + Duration::from_secs(61)), 1);
        assert_eq!(t.len(), 1);
    }
}
