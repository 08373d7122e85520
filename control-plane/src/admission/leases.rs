//! The lease table: every slot Admit grants is a lease owned by a data-plane session.
//!
//! A lease holds its account slot and a share of its request's user hold (the user slot
//! plus the user's pending count). A failover re-admission of the same request shares
//! the first lease's user hold, so the user slot is freed when the *last* lease of the
//! request goes. All slot bookkeeping is RAII: removing a lease from the table drops
//! its permits, which is the one and only way slots are returned — so a lease released
//! twice, released and reaped, or adopted twice cannot return a slot twice.
//!
//! Owners: a lease is owned by a session id. Leases re-adopted at Attach are first held
//! by a provisional owner (the session id is chosen when the session starts) and moved
//! to the real session by [`LeaseTable::rebind_owner`]. Any owner not connected is
//! watched; once it has been away for the grace period its leases are freed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::recovery::UsageFacts;
use super::slots::SlotPermit;

/// The user's share of a request: one user slot and one pending-request count.
#[derive(Debug)]
pub struct UserHold {
    pub user_id: i64,
    _slot: SlotPermit,
    _pending: SlotPermit,
}

impl UserHold {
    pub fn new(user_id: i64, slot: SlotPermit, pending: SlotPermit) -> Self {
        Self {
            user_id,
            _slot: slot,
            _pending: pending,
        }
    }
}

#[derive(Debug)]
pub struct Lease {
    pub owner: String,
    pub user_id: i64,
    pub account_id: i64,
    /// The request it was granted for; empty for leases re-created at re-adoption.
    pub request_id: String,
    /// What an estimate of its usage needs, if it is reaped without a usage record
    /// (`recovery.rs`); none for leases re-created at re-adoption.
    pub facts: Option<Box<UsageFacts>>,
    user: Arc<UserHold>,
    _account: SlotPermit,
}

impl Lease {
    pub fn new(owner: String, account_id: i64, user: Arc<UserHold>, account: SlotPermit) -> Self {
        Self {
            owner,
            user_id: user.user_id,
            account_id,
            request_id: String::new(),
            facts: None,
            user,
            _account: account,
        }
    }

    pub fn for_request(mut self, request_id: &str) -> Self {
        self.request_id = request_id.to_owned();
        self
    }

    pub fn with_facts(mut self, facts: UsageFacts) -> Self {
        self.facts = Some(Box::new(facts));
        self
    }
}

/// How long a request abandoned by its data plane is remembered, so that a grant racing
/// with the abandonment is freed instead of leaking.
const ABANDONED_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<String, Lease>,
    /// Owners seen disconnected, and since when.
    away_since: HashMap<String, Instant>,
    /// Requests whose data plane gave up on admission (client gone while waiting), and
    /// when: a lease granted for one of them is freed at once.
    abandoned: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    inner: Mutex<Inner>,
}

impl LeaseTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Critical sections are map inserts/removes; permits are dropped outside.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a lease; `false` (and the lease's slots returned) when its request was
    /// abandoned meanwhile — the grant lost the race with the data plane giving up.
    pub fn insert(&self, id: String, lease: Lease) -> bool {
        let mut inner = self.lock();
        if !lease.request_id.is_empty() && inner.abandoned.contains_key(&lease.request_id) {
            drop(inner);
            drop(lease);
            return false;
        }
        let replaced = inner.leases.insert(id, lease);
        drop(inner);
        // Ids are fresh UUIDs, so this does not happen; if it did, the old lease's
        // slots are returned here, outside the lock.
        drop(replaced);
        true
    }

    /// Releases every lease granted for these requests and remembers them as abandoned,
    /// so that a grant still in flight for one of them is freed when it is recorded.
    pub fn release_requests<'a>(
        &self,
        request_ids: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> usize {
        let removed: Vec<Lease> = {
            let mut inner = self.lock();
            inner
                .abandoned
                .retain(|_, at| now.duration_since(*at) < ABANDONED_TTL);
            let ids: HashSet<&str> = request_ids.into_iter().filter(|r| !r.is_empty()).collect();
            for r in &ids {
                inner.abandoned.insert((*r).to_owned(), now);
            }
            let lease_ids: Vec<String> = inner
                .leases
                .iter()
                .filter(|(_, l)| ids.contains(l.request_id.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            lease_ids
                .iter()
                .filter_map(|id| inner.leases.remove(id))
                .collect()
        };
        removed.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().leases.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The owner of a lease (for tests and diagnostics).
    pub fn owner_of(&self, id: &str) -> Option<String> {
        self.lock().leases.get(id).map(|l| l.owner.clone())
    }

    /// The user hold of `id` when it belongs to `user_id` (failover re-admission).
    pub fn user_hold(&self, id: &str, user_id: i64) -> Option<Arc<UserHold>> {
        self.lock()
            .leases
            .get(id)
            .filter(|l| l.user_id == user_id)
            .map(|l| l.user.clone())
    }

    /// Releases the given leases; unknown or already released ids are ignored.
    /// Returns the released leases (their slots go back when they are dropped).
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<Lease> {
        let mut inner = self.lock();
        ids.into_iter()
            .filter_map(|id| inner.leases.remove(id))
            .collect()
    }

    /// Releases every lease of `owner`; returns them (their slots go back when they are
    /// dropped).
    pub fn release_owner(&self, owner: &str) -> Vec<Lease> {
        let removed: Vec<Lease> = {
            let mut inner = self.lock();
            inner.away_since.remove(owner);
            let ids: Vec<String> = inner
                .leases
                .iter()
                .filter(|(_, l)| l.owner == owner)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| inner.leases.remove(id))
                .collect()
        };
        removed
    }

    /// Moves every lease of `from` to `to`.
    pub fn rebind_owner(&self, from: &str, to: &str) -> usize {
        let mut inner = self.lock();
        inner.away_since.remove(from);
        let mut n = 0;
        for l in inner.leases.values_mut().filter(|l| l.owner == from) {
            l.owner = to.to_owned();
            n += 1;
        }
        n
    }

    /// Re-adoption of a declared lease, atomically: an existing one moves to `owner` if
    /// it matches the declared user and account (`false` on a mismatch); an unknown one
    /// is created by `make`.
    pub fn adopt_or_create(
        &self,
        id: &str,
        owner: &str,
        user_id: i64,
        account_id: i64,
        make: impl FnOnce() -> Lease,
    ) -> bool {
        let mut inner = self.lock();
        match inner.leases.get_mut(id) {
            Some(lease) if lease.user_id != user_id || lease.account_id != account_id => false,
            Some(lease) => {
                lease.owner = owner.to_owned();
                true
            }
            None => {
                // Taking slot locks under the lease lock is fine: slot code never takes
                // the lease lock.
                inner.leases.insert(id.to_owned(), make());
                true
            }
        }
    }

    /// Frees the leases of owners that have been disconnected for at least `grace`, and
    /// returns them. `is_connected` is asked once per distinct owner, outside the lock.
    pub fn reap_away(
        &self,
        is_connected: impl Fn(&str) -> bool,
        grace: Duration,
        now: Instant,
    ) -> Vec<Lease> {
        let owners: HashSet<String> = self
            .lock()
            .leases
            .values()
            .map(|l| l.owner.clone())
            .collect();
        let away: HashSet<String> = owners.into_iter().filter(|o| !is_connected(o)).collect();
        let removed: Vec<Lease> = {
            let mut inner = self.lock();
            inner.away_since.retain(|o, _| away.contains(o));
            for o in &away {
                inner.away_since.entry(o.clone()).or_insert(now);
            }
            let expired: HashSet<String> = inner
                .away_since
                .iter()
                .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
                .map(|(o, _)| o.clone())
                .collect();
            for o in &expired {
                inner.away_since.remove(o);
            }
            let ids: Vec<String> = inner
                .leases
                .iter()
                .filter(|(_, l)| expired.contains(&l.owner))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| inner.leases.remove(id))
                .collect()
        };
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::super::slots::{Limit, SlotTable};
    use super::*;

    struct Fixture {
        users: SlotTable,
        pending: SlotTable,
        accounts: SlotTable,
        table: LeaseTable,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                users: SlotTable::new("users"),
                pending: SlotTable::new("pending"),
                accounts: SlotTable::new("accounts"),
                table: LeaseTable::default(),
            }
        }

        fn hold(&self, user: i64) -> Arc<UserHold> {
            Arc::new(UserHold::new(
                user,
                self.users.try_acquire(user, Limit::Max(10)).unwrap(),
                self.pending.try_acquire(user, Limit::Max(30)).unwrap(),
            ))
        }

        fn lease(&self, id: &str, owner: &str, hold: Arc<UserHold>, account: i64) {
            let permit = self.accounts.try_acquire(account, Limit::Max(10)).unwrap();
            assert!(
                self.table
                    .insert(id.into(), Lease::new(owner.into(), account, hold, permit))
            );
        }
    }

    #[test]
    fn a_grant_for_an_abandoned_request_is_freed_not_leaked() {
        let f = Fixture::new();
        let lease = |account: i64, request: &str| {
            let permit = f.accounts.try_acquire(account, Limit::Max(10)).unwrap();
            Lease::new("s1".into(), account, f.hold(1), permit).for_request(request)
        };
        // The data plane gives up first; the grant racing with it is refused and its
        // user and account slots come straight back.
        assert_eq!(f.table.release_requests(["req-1"], Instant::now()), 0);
        assert!(!f.table.insert("l1".into(), lease(100, "req-1")));
        assert!(f.table.is_empty());
        assert_eq!(f.users.usage(1).in_use, 0);
        assert_eq!(f.accounts.usage(100).in_use, 0);
        // A lease recorded before the abandonment is released by it.
        assert!(f.table.insert("l2".into(), lease(100, "req-2")));
        assert_eq!(f.table.release_requests(["req-2"], Instant::now()), 1);
        assert_eq!(f.accounts.usage(100).in_use, 0);
        // Other requests are unaffected.
        assert!(f.table.insert("l3".into(), lease(100, "req-3")));
        assert_eq!(f.table.len(), 1);
    }

    #[test]
    fn release_is_exactly_once() {
        let f = Fixture::new();
        f.lease("l1", "s1", f.hold(1), 100);
        assert_eq!(f.users.usage(1).in_use, 1);
        assert_eq!(f.accounts.usage(100).in_use, 1);
        assert_eq!(f.table.release(["l1", "l1", "nope"]).len(), 1);
        assert_eq!(f.table.release(["l1"]).len(), 0);
        assert_eq!(f.users.usage(1).in_use, 0);
        assert_eq!(f.pending.usage(1).in_use, 0);
        assert_eq!(f.accounts.usage(100).in_use, 0);
    }

    #[test]
    fn failover_shares_the_user_slot() {
        let f = Fixture::new();
        f.lease("l1", "s1", f.hold(1), 100);
        let shared = f.table.user_hold("l1", 1).unwrap();
        assert!(f.table.user_hold("l1", 2).is_none(), "another user's lease");
        f.lease("l2", "s1", shared, 200);
        assert_eq!(f.users.usage(1).in_use, 1);
        f.table.release(["l1"]);
        assert_eq!(f.users.usage(1).in_use, 1, "l2 still runs the request");
        assert_eq!(f.accounts.usage(100).in_use, 0);
        f.table.release(["l2"]);
        assert_eq!(f.users.usage(1).in_use, 0);
    }

    #[test]
    fn owners_release_and_rebind() {
        let f = Fixture::new();
        f.lease("a", "s1", f.hold(1), 100);
        f.lease("b", "s1", f.hold(1), 100);
        f.lease("c", "s2", f.hold(2), 100);
        assert_eq!(f.table.rebind_owner("s1", "s3"), 2);
        assert_eq!(f.table.owner_of("a").as_deref(), Some("s3"));
        assert_eq!(f.table.release_owner("s3").len(), 2);
        assert_eq!(f.table.len(), 1);
        assert_eq!(f.accounts.usage(100).in_use, 1);
    }

    #[test]
    fn adoption_moves_or_creates() {
        let f = Fixture::new();
        f.lease("a", "s1", f.hold(1), 100);
        let make = || -> Lease { unreachable!("must not create an existing lease") };
        assert!(!f.table.adopt_or_create("a", "s2", 1, 999, make));
        assert_eq!(f.table.owner_of("a").as_deref(), Some("s1"));
        assert!(f.table.adopt_or_create("a", "s2", 1, 100, make));
        assert_eq!(f.table.owner_of("a").as_deref(), Some("s2"));
        assert_eq!(f.users.usage(1).in_use, 1, "moved, not counted again");
        let created = f.table.adopt_or_create("z", "s2", 2, 100, || {
            let hold = UserHold::new(2, f.users.force_acquire(2), f.pending.force_acquire(2));
            Lease::new(
                "s2".into(),
                100,
                Arc::new(hold),
                f.accounts.force_acquire(100),
            )
        });
        assert!(created);
        assert_eq!(f.users.usage(2).in_use, 1);
        assert_eq!(f.accounts.usage(100).in_use, 2);
    }

    #[test]
    fn away_owners_are_reaped_after_the_grace() {
        let f = Fixture::new();
        f.lease("a", "gone", f.hold(1), 100);
        f.lease("b", "here", f.hold(2), 100);
        let grace = Duration::from_secs(10);
        let t0 = Instant::now();
        let connected = |o: &str| o == "here";
        assert_eq!(f.table.reap_away(connected, grace, t0).len(), 0);
        assert_eq!(
            f.table
                .reap_away(connected, grace, t0 + Duration::from_secs(9))
                .len(),
            0
        );
        assert_eq!(
            f.table
                .reap_away(connected, grace, t0 + Duration::from_secs(10))
                .len(),
            1
        );
        assert!(!f.table.contains("a"));
        assert!(f.table.contains("b"));
        assert_eq!(f.users.usage(1).in_use, 0);
    }

    #[test]
    fn an_owner_that_comes_back_is_not_reaped() {
        let f = Fixture::new();
        f.lease("a", "s", f.hold(1), 100);
        let grace = Duration::from_secs(10);
        let t0 = Instant::now();
        f.table.reap_away(|_| false, grace, t0);
        // Back before the grace ran out: the clock resets.
        f.table
            .reap_away(|_| true, grace, t0 + Duration::from_secs(5));
        assert_eq!(
            f.table
                .reap_away(|_| false, grace, t0 + Duration::from_secs(12))
                .len(),
            0
        );
        assert!(f.table.contains("a"));
    }
}
