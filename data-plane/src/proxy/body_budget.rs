//! The memory budget for request bodies: how many body bytes the data plane holds at once,
//! in all and per API key. A request charges its body's (decoded) bytes as it reads them
//! and keeps the charge while the body is held (until the upstream has answered, when no
//! further attempt can need it); a charge that does not fit waits briefly for others to
//! finish, then the request is refused — 429 when the key's own share is full, 503 when
//! the whole budget is. So a flood of large bodies from one key waits or is refused
//! instead of taking the process's memory, and other keys keep their room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_shared::ErrorCode;

use super::errors::ClientError;

/// Which limit a charge did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The key's share.
    Key,
    /// The whole budget.
    Global,
}

impl Full {
    /// The refusal, with `Retry-After`.
    pub fn client_error(self, retry_after: Duration) -> ClientError {
        let mut e = ClientError::of(match self {
            Self::Key => ErrorCode::KeyBodyBudgetFull,
            Self::Global => ErrorCode::BodyBudgetFull,
        });
        e.retry_after_secs = Some(retry_after.as_secs().max(1));
        e
    }
}

#[derive(Default)]
struct Used {
    total: usize,
    by_key: HashMap<i64, usize>,
}

pub struct BodyBudget {
    total: usize,
    per_key: usize,
    /// How long a charge may wait for room.
    wait: Duration,
    used: Mutex<Used>,
    /// Signalled whenever bytes are given back.
    freed: Notify,
    /// Bytes held, for `/metrics` (`request_body_bytes_held`).
    held: Gauge,
}

impl BodyBudget {
    /// `held` follows the bytes held (a metric).
    pub fn new(total: usize, per_key: usize, wait: Duration, held: Gauge) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_key,
            wait,
            used: Mutex::default(),
            freed: Notify::new(),
            held,
        })
    }

    /// An empty charge for `key_id`, grown with [`Charge::grow`].
    pub fn charge(self: &Arc<Self>, key_id: i64) -> Charge {
        Charge {
            budget: self.clone(),
            key_id,
            bytes: 0,
        }
    }

    /// Bytes held right now (all keys).
    pub fn in_use(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_take(&self, key_id: i64, n: usize) -> Result<(), Full> {
        let mut used = self.lock();
        let key_used = used.by_key.get(&key_id).copied().unwrap_or(0);
        if key_used.saturating_add(n) > self.per_key {
            return Err(Full::Key);
        }
        if used.total.saturating_add(n) > self.total {
            return Err(Full::Global);
        }
        used.total += n;
        *used.by_key.entry(key_id).or_insert(0) += n;
        self.held.set(i64::try_from(used.total).unwrap_or(i64::MAX));
        Ok(())
    }

    fn give_back(&self, key_id: i64, n: usize) {
        if n == 0 {
            return;
        }
        {
            let mut used = self.lock();
            used.total = used.total.saturating_sub(n);
            self.held.set(i64::try_from(used.total).unwrap_or(i64::MAX));
            if let Some(k) = used.by_key.get_mut(&key_id) {
                *k = k.saturating_sub(n);
                if *k == 0 {
                    used.by_key.remove(&key_id);
                }
            }
        }
        self.freed.notify_waiters();
    }
}

/// Bytes charged to the budget by one request; given back on drop.
pub struct Charge {
    budget: Arc<BodyBudget>,
    key_id: i64,
    bytes: usize,
}

impl Charge {
    /// Adds `n` bytes, waiting up to the budget's wait for room.
    pub async fn grow(&mut self, n: usize) -> Result<(), Full> {
        let deadline = Instant::now() + self.budget.wait;
        loop {
            // Registered before trying, so a release between the try and the wait is
            // not missed.
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.budget.try_take(self.key_id, n) {
                Ok(()) => {
                    self.bytes += n;
                    return Ok(());
                }
                Err(full) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(full);
                    }
                }
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How long a charge waits for room (the `Retry-After` of a refusal).
    pub fn wait(&self) -> Duration {
        self.budget.wait
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.key_id, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_and_total_are_enforced_and_given_back() {
        let b = BodyBudget::new(100, 60, Duration::from_millis(50), Gauge::default());
        let mut a = b.charge(1);
        a.grow(60).await.unwrap();
        assert_eq!(a.grow(1).await, Err(Full::Key), "key 1's share");
        let mut other = b.charge(2);
        other.grow(40).await.unwrap();
        assert_eq!(
            b.charge(3).grow(1).await,
            Err(Full::Global),
            "the whole budget"
        );
        drop(a);
        assert_eq!(b.in_use(), 40);
        assert_eq!(b.held.get(), 40, "the metric follows");
        b.charge(3).grow(60).await.unwrap();
        drop(other);
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn a_charge_waits_for_room() {
        let b = BodyBudget::new(100, 100, Duration::from_secs(5), Gauge::default());
        let mut first = b.charge(1);
        first.grow(100).await.unwrap();
        let b2 = b.clone();
        #[allow(clippy::disallowed_methods)] // awaited below
        let waiter = tokio::spawn(async move {
            let mut c = b2.charge(1);
            c.grow(70).await.map(|()| c.bytes())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room yet");
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(70));
    }
}
