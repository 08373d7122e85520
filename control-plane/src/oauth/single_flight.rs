//! Per-key single flight: while work for a key runs, later callers for the same key join
//! it instead of starting their own, and all of them get its result.
//!
//! The work runs as its own task on the service's `TaskTracker`, not inside any caller:
//! a caller that goes away (a cancelled Admit) cannot abort a token refresh halfway, after
//! the endpoint rotated the refresh token but before the new one was stored.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio_util::task::TaskTracker;

/// The result every caller of one flight gets; `None` if its task never finished (the
/// runtime shut down under it).
pub type FlightResult<V> = Shared<BoxFuture<'static, Option<V>>>;

/// Whether the caller started the flight or joined one already running (with its tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined<T> {
    Started,
    Running(T),
}

struct Flight<T, V: Clone> {
    id: u64,
    tag: T,
    result: FlightResult<V>,
}

pub struct SingleFlight<K, T, V: Clone> {
    flights: Mutex<HashMap<K, Flight<T, V>>>,
    next_id: AtomicU64,
}

impl<K, T, V: Clone> std::fmt::Debug for SingleFlight<K, T, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("running", &self.running())
            .finish()
    }
}

impl<K, T, V: Clone> Default for SingleFlight<K, T, V> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl<K, T, V: Clone> SingleFlight<K, T, V> {
    /// Flights running now.
    pub fn running(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K, T, V> SingleFlight<K, T, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Copy + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the flight running for `key`, or spawns `work()` on `tasks` as a new one
    /// tagged `tag`. The flight is forgotten as soon as its work finishes, before its
    /// result is handed out, so a caller that sees a result and calls again starts anew.
    pub fn join_or_spawn<F, Fut>(
        self: &Arc<Self>,
        key: K,
        tag: T,
        tasks: &TaskTracker,
        work: F,
    ) -> (Joined<T>, FlightResult<V>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = flights.get(&key) {
            return (Joined::Running(f.tag), f.result.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = Arc::clone(self);
        let fut = work();
        let task_key = key.clone();
        // The task cannot remove its entry before it is inserted: it needs this lock.
        tasks.spawn(async move {
            let value = fut.await;
            {
                let mut flights = this.flights.lock().unwrap_or_else(PoisonError::into_inner);
                if flights.get(&task_key).is_some_and(|f| f.id == id) {
                    flights.remove(&task_key);
                }
            }
            let _ = tx.send(value);
        });
        let result = async move { rx.await.ok() }.boxed().shared();
        flights.insert(
            key,
            Flight {
                id,
                tag,
                result: result.clone(),
            },
        );
        (Joined::Started, result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    type Flights = Arc<SingleFlight<i64, u8, usize>>;

    fn slow_work(calls: &Arc<AtomicUsize>) -> impl FnOnce() -> BoxFuture<'static, usize> {
        let calls = calls.clone();
        move || {
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                n
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_flight() {
        let flights: Flights = Arc::default();
        let tasks = TaskTracker::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut joined = Vec::new();
        let mut results = Vec::new();
        for _ in 0..10 {
            let (j, r) = flights.join_or_spawn(7, 1, &tasks, slow_work(&calls));
            joined.push(j);
            results.push(r);
        }
        assert_eq!(joined[0], Joined::Started);
        assert!(joined[1..].iter().all(|j| *j == Joined::Running(1)));
        assert_eq!(flights.running(), 1);
        let values = futures::future::join_all(results).await;
        assert_eq!(values, vec![Some(1); 10]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.running(), 0, "a finished flight is forgotten");

        // The next call after a finished flight starts a new one.
        let (j, r) = flights.join_or_spawn(7, 2, &tasks, slow_work(&calls));
        assert_eq!(j, Joined::Started);
        assert_eq!(r.await, Some(2));
    }

    #[tokio::test]
    async fn keys_fly_separately() {
        let flights: Flights = Arc::default();
        let tasks = TaskTracker::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (_, a) = flights.join_or_spawn(1, 0, &tasks, slow_work(&calls));
        let (_, b) = flights.join_or_spawn(2, 0, &tasks, slow_work(&calls));
        assert_eq!(flights.running(), 2);
        let (a, b) = futures::join!(a, b);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn dropped_callers_do_not_cancel_the_work() {
        let flights: Flights = Arc::default();
        let tasks = TaskTracker::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (_, r) = flights.join_or_spawn(1, 0, &tasks, slow_work(&calls));
        drop(r);
        tasks.close();
        tasks.wait().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.running(), 0);
    }
}
