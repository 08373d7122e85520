//! One request's clock for the added-latency metric: the gateway's own time is the
//! time until the upstream answered, less what was spent waiting on upstreams (every
//! attempt, failed ones included) and in the control plane's slot queues.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Timing {
    started: Instant,
    /// Microseconds spent waiting (upstreams, slot queues).
    waited_us: AtomicU64,
    /// When the last upstream request was sent, in microseconds since `started`.
    sent_us: AtomicU64,
}

impl Timing {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            waited_us: AtomicU64::new(0),
            sent_us: AtomicU64::new(0),
        }
    }

    /// An upstream request is being sent now.
    pub fn mark_sent(&self) {
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.sent_us.store(us, Ordering::Relaxed);
    }

    /// Time since the last upstream request was sent.
    pub fn since_sent(&self) -> Duration {
        let sent = Duration::from_micros(self.sent_us.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(sent)
    }

    pub fn add_wait(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.waited_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Time since the request arrived, less the waits.
    pub fn added(&self) -> Duration {
        let waited = Duration::from_micros(self.waited_us.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_left_out() {
        let t = Timing::new(Instant::now() - Duration::from_millis(100));
        t.add_wait(Duration::from_millis(60));
        t.add_wait(Duration::from_millis(30));
        let added = t.added();
        assert!(added >= Duration::from_millis(10), "{added:?}");
        assert!(added < Duration::from_millis(100), "{added:?}");
    }
}
