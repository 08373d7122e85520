//! FIFO slot queues: per key (a user id, an account id) a counting limit with a fair wait
//! queue, a cap on the number of waiters, a timeout, and RAII permits.
//!
//! Invariants:
//! - a slot is counted exactly while a [`SlotPermit`] for it is alive (armed);
//! - waiters are served strictly in arrival order, and a newcomer never takes a slot
//!   while someone is queued;
//! - a waiter that goes away (its future is dropped: timeout, gRPC cancellation) leaves
//!   the queue at once, and a slot granted to it in the meantime comes straight back.
//!
//! Nothing is ever dropped or sent while the table's mutex is held: grants are collected
//! under the lock and delivered after it is released, so a permit's `Drop` (which takes
//! the lock) can never run inside a critical section.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::queue_time;

/// How many slots a key may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Max(u32),
}

impl Limit {
    /// The configuration convention: 0 or less means unlimited.
    pub fn from_concurrency(c: i32) -> Self {
        match u32::try_from(c) {
            Ok(n) if n > 0 => Self::Max(n),
            _ => Self::Unlimited,
        }
    }

    fn has_room(self, in_use: u32) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Max(n) => in_use < n,
        }
    }
}

/// Why a wait ended without a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// Too many callers already wait for this key.
    QueueFull,
    /// No slot became free within the timeout.
    Timeout,
}

/// Current use of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub in_use: u32,
    pub waiting: u32,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<SlotPermit>,
}

struct Entry {
    in_use: u32,
    limit: Limit,
    waiters: VecDeque<Waiter>,
}

impl Entry {
    fn new(limit: Limit) -> Self {
        Self {
            in_use: 0,
            limit,
            waiters: VecDeque::new(),
        }
    }

    fn idle(&self) -> bool {
        self.in_use == 0 && self.waiters.is_empty()
    }
}

struct Shared {
    name: &'static str,
    map: Mutex<HashMap<i64, Entry>>,
    next_waiter: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        // Every critical section leaves the map consistent (counters and queues are
        // updated before anything that could panic), so a poisoned lock is still sound.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Slots of one kind (user slots, account slots, pending-request counts). Cheap to clone.
#[derive(Clone)]
pub struct SlotTable {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotTable")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// One counted slot. Dropping it gives the slot back (and hands it to the next waiter).
pub struct SlotPermit {
    shared: Arc<Shared>,
    key: i64,
    armed: bool,
}

impl std::fmt::Debug for SlotPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPermit")
            .field("table", &self.shared.name)
            .field("key", &self.key)
            .finish()
    }
}

impl SlotPermit {
    pub fn key(&self) -> i64 {
        self.key
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if self.armed {
            release(&self.shared, self.key);
        }
    }
}

/// Returns one slot of `key` and delivers freed slots to waiters, outside the lock.
fn release(shared: &Arc<Shared>, key: i64) {
    let mut to_return = 1u32;
    while to_return > 0 {
        let grants = {
            let mut map = shared.lock();
            let Some(entry) = map.get_mut(&key) else {
                return;
            };
            entry.in_use = entry.in_use.saturating_sub(to_return);
            to_return = 0;
            let grants = collect_grants(shared, key, entry);
            if entry.idle() {
                map.remove(&key);
            }
            grants
        };
        for (tx, permit) in grants {
            if let Err(mut permit) = tx.send(permit) {
                // The waiter went away between being queued and now: the slot was
                // counted for it, so give it back by hand (its Drop must not run the
                // release recursively) and serve the next waiter in the next round.
                permit.armed = false;
                to_return += 1;
            }
        }
    }
}

/// Pops waiters while there is room, counting a slot for each.
fn collect_grants(
    shared: &Arc<Shared>,
    key: i64,
    entry: &mut Entry,
) -> Vec<(oneshot::Sender<SlotPermit>, SlotPermit)> {
    let mut grants = Vec::new();
    while entry.limit.has_room(entry.in_use) {
        let Some(w) = entry.waiters.pop_front() else {
            break;
        };
        entry.in_use += 1;
        let permit = SlotPermit {
            shared: shared.clone(),
            key,
            armed: true,
        };
        grants.push((w.tx, permit));
    }
    grants
}

/// Delivers grants collected under the lock; undeliverable ones are returned (which may
/// serve further waiters).
fn deliver(grants: Vec<(oneshot::Sender<SlotPermit>, SlotPermit)>) {
    for (tx, permit) in grants {
        // A failed send hands the permit back; dropping it (outside any lock) releases it.
        drop(tx.send(permit));
    }
}

/// Removes a queued waiter when its wait ends for any reason (including the future being
/// dropped). A slot already granted to it sits in its receiver and is handled there.
struct QueueGuard {
    shared: Arc<Shared>,
    key: i64,
    id: u64,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let mut map = self.shared.lock();
        if let Some(entry) = map.get_mut(&self.key) {
            entry.waiters.retain(|w| w.id != self.id);
            if entry.idle() {
                map.remove(&self.key);
            }
        }
    }
}

impl SlotTable {
    pub fn new(name: &'static str) -> Self {
        Self {
            shared: Arc::new(Shared {
                name,
                map: Mutex::new(HashMap::new()),
                next_waiter: AtomicU64::new(1),
            }),
        }
    }

    fn permit(&self, key: i64) -> SlotPermit {
        SlotPermit {
            shared: self.shared.clone(),
            key,
            armed: true,
        }
    }

    /// A slot now, if one is free and nobody is queued ahead; never waits.
    pub fn try_acquire(&self, key: i64, limit: Limit) -> Option<SlotPermit> {
        let (permit, grants) = {
            let mut map = self.shared.lock();
            let entry = map.entry(key).or_insert_with(|| Entry::new(limit));
            entry.limit = limit;
            // A raised limit may let queued callers in first.
            let grants = collect_grants(&self.shared, key, entry);
            let permit = if entry.waiters.is_empty() && limit.has_room(entry.in_use) {
                entry.in_use += 1;
                Some(self.permit(key))
            } else {
                None
            };
            if entry.idle() {
                map.remove(&key);
            }
            (permit, grants)
        };
        deliver(grants);
        permit
    }

    /// Every key with slots in use or waiters, and its use (for the metrics).
    pub fn all_usage(&self) -> Vec<(i64, Usage)> {
        let map = self.shared.lock();
        map.iter()
            .map(|(k, e)| {
                let waiting = u32::try_from(e.waiters.len()).unwrap_or(u32::MAX);
                (
                    *k,
                    Usage {
                        in_use: e.in_use,
                        waiting,
                    },
                )
            })
            .collect()
    }

    /// Counts a slot whatever the limit: for re-adopted leases that are already running.
    pub fn force_acquire(&self, key: i64) -> SlotPermit {
        let mut map = self.shared.lock();
        let entry = map
            .entry(key)
            .or_insert_with(|| Entry::new(Limit::Unlimited));
        entry.in_use += 1;
        drop(map);
        self.permit(key)
    }

    /// A slot, waiting in FIFO order up to `timeout` behind at most `max_waiters - 1`
    /// others. Dropping the returned future ends the wait cleanly.
    pub async fn acquire(
        &self,
        key: i64,
        limit: Limit,
        max_waiters: usize,
        timeout: Duration,
    ) -> Result<SlotPermit, SlotError> {
        let (mut rx, guard) = {
            let mut map = self.shared.lock();
            let entry = map.entry(key).or_insert_with(|| Entry::new(limit));
            entry.limit = limit;
            let grants = collect_grants(&self.shared, key, entry);
            if entry.waiters.is_empty() && limit.has_room(entry.in_use) {
                entry.in_use += 1;
                drop(map);
                deliver(grants);
                return Ok(self.permit(key));
            }
            if entry.waiters.len() >= max_waiters {
                let idle = entry.idle();
                if idle {
                    map.remove(&key);
                }
                drop(map);
                deliver(grants);
                return Err(SlotError::QueueFull);
            }
            let id = self.shared.next_waiter.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            entry.waiters.push_back(Waiter { id, tx });
            drop(map);
            deliver(grants);
            let guard = QueueGuard {
                shared: self.shared.clone(),
                key,
                id,
            };
            (rx, guard)
        };
        let queued_at = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, &mut rx).await;
        queue_time::add(queued_at.elapsed());
        // Leave the queue first, so that nothing can be granted after the check below.
        drop(guard);
        match result {
            Ok(Ok(permit)) => Ok(permit),
            // The sender is only dropped after a successful send or when we were removed.
            Ok(Err(_)) => Err(SlotError::Timeout),
            // Granted at the very last moment: keep it rather than bounce it.
            Err(_) => rx.try_recv().map_err(|_| SlotError::Timeout),
        }
    }

    pub fn usage(&self, key: i64) -> Usage {
        let map = self.shared.lock();
        map.get(&key)
            .map(|e| Usage {
                in_use: e.in_use,
                waiting: u32::try_from(e.waiters.len()).unwrap_or(u32::MAX),
            })
            .unwrap_or_default()
    }

    /// Keys with any slot in use or any waiter (for tests and diagnostics).
    pub fn active_keys(&self) -> usize {
        self.shared.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn limit_is_enforced_and_release_frees() {
        let t = SlotTable::new("test");
        let a = t.try_acquire(1, Limit::Max(2)).unwrap();
        let _b = t.try_acquire(1, Limit::Max(2)).unwrap();
        assert!(t.try_acquire(1, Limit::Max(2)).is_none());
        assert_eq!(
            t.usage(1),
            Usage {
                in_use: 2,
                waiting: 0
            }
        );
        drop(a);
        assert!(t.try_acquire(1, Limit::Max(2)).is_some());
        // Other keys are independent.
        assert!(t.try_acquire(2, Limit::Max(1)).is_some());
    }

    #[tokio::test]
    async fn unlimited_never_waits_but_counts() {
        let t = SlotTable::new("test");
        let permits: Vec<_> = (0..50)
            .map(|_| t.try_acquire(7, Limit::Unlimited).unwrap())
            .collect();
        assert_eq!(t.usage(7).in_use, 50);
        drop(permits);
        assert_eq!(t.usage(7), Usage::default());
        assert_eq!(t.active_keys(), 0);
    }

    #[tokio::test]
    async fn waiters_are_served_in_fifo_order() {
        let t = SlotTable::new("test");
        let held = t.try_acquire(1, Limit::Max(1)).unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..5u32 {
            let t2 = t.clone();
            let done_tx = done_tx.clone();
            tasks.spawn(async move {
                let p = t2.acquire(1, Limit::Max(1), 100, LONG).await.unwrap();
                done_tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            });
            // Make the arrival order deterministic: each one queued before the next.
            while t.usage(1).waiting <= i {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(t.usage(1).waiting, 5);
        // A newcomer must not jump the queue.
        assert!(t.try_acquire(1, Limit::Max(1)).is_none());
        drop(held);
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let order: Vec<u32> = std::iter::from_fn(|| done_rx.try_recv().ok()).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert_eq!(t.active_keys(), 0);
    }

    #[tokio::test]
    async fn wait_times_out_and_leaves_the_queue() {
        let t = SlotTable::new("test");
        let _held = t.try_acquire(1, Limit::Max(1)).unwrap();
        let r = t
            .acquire(1, Limit::Max(1), 10, Duration::from_millis(50))
            .await;
        assert_eq!(r.err(), Some(SlotError::Timeout));
        assert_eq!(t.usage(1).waiting, 0);
    }

    #[tokio::test]
    async fn queue_cap_rejects() {
        let t = SlotTable::new("test");
        let _held = t.try_acquire(1, Limit::Max(1)).unwrap();
        let mut first = Box::pin(t.acquire(1, Limit::Max(1), 1, LONG));
        assert!(futures::poll!(&mut first).is_pending());
        let r = t.acquire(1, Limit::Max(1), 1, LONG).await;
        assert_eq!(r.err(), Some(SlotError::QueueFull));
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_no_trace() {
        let t = SlotTable::new("test");
        let held = t.try_acquire(1, Limit::Max(1)).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let t2 = t.clone();
        tasks.spawn(async move { t2.acquire(1, Limit::Max(1), 10, LONG).await });
        while t.usage(1).waiting < 1 {
            tokio::task::yield_now().await;
        }
        // Like a gRPC call dropped by its client: the future is dropped mid-wait.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        assert_eq!(t.usage(1).waiting, 0);
        drop(held);
        assert_eq!(t.active_keys(), 0);
    }

    #[tokio::test]
    async fn slot_granted_to_a_gone_waiter_comes_back() {
        let t = SlotTable::new("test");
        let held = t.try_acquire(1, Limit::Max(1)).unwrap();
        // Poll the wait once so it is queued, then keep the future without polling it.
        let mut fut = Box::pin(t.acquire(1, Limit::Max(1), 10, LONG));
        assert!(futures::poll!(&mut fut).is_pending());
        assert_eq!(t.usage(1).waiting, 1);
        // The slot is handed to the queued waiter...
        drop(held);
        assert_eq!(
            t.usage(1),
            Usage {
                in_use: 1,
                waiting: 0
            }
        );
        // ...which goes away before it ever looks: the slot must come back.
        drop(fut);
        assert_eq!(t.usage(1), Usage::default());
        assert!(t.try_acquire(1, Limit::Max(1)).is_some());
    }

    #[tokio::test]
    async fn raising_the_limit_serves_waiters() {
        let t = SlotTable::new("test");
        let _held = t.try_acquire(1, Limit::Max(1)).unwrap();
        let mut waiting = Box::pin(t.acquire(1, Limit::Max(1), 10, LONG));
        assert!(futures::poll!(&mut waiting).is_pending());
        // A caller that sees the new limit of 3 lets the queued one in, then itself.
        let p = t.try_acquire(1, Limit::Max(3));
        assert!(p.is_some());
        let _granted = waiting.await.unwrap();
        assert_eq!(t.usage(1).in_use, 3);
    }

    #[tokio::test]
    async fn forced_slots_count_past_the_limit() {
        let t = SlotTable::new("test");
        let _a = t.force_acquire(1);
        let _b = t.force_acquire(1);
        assert!(t.try_acquire(1, Limit::Max(1)).is_none());
        assert_eq!(t.usage(1).in_use, 2);
    }

    #[test]
    fn limit_from_concurrency() {
        assert_eq!(Limit::from_concurrency(0), Limit::Unlimited);
        assert_eq!(Limit::from_concurrency(-3), Limit::Unlimited);
        assert_eq!(Limit::from_concurrency(4), Limit::Max(4));
    }
}
