//! Throttling of invalid API keys per client IP: a burst of bad keys from one address
//! gets 429 with `Retry-After` before its keys are looked up, so key guessing cannot
//! load the control plane. One GCRA cell per IP (a theoretical arrival time), in a
//! bounded map whose entries expire once they have fully recovered.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// IPs remembered at most; the least recently seen are forgotten first.
const CAPACITY: u64 = 100_000;

#[derive(Clone)]
pub struct InvalidKeyThrottle {
    /// Time between invalid keys at the sustained rate.
    interval: Duration,
    /// How far ahead of now the arrival time may run before the IP is throttled.
    tolerance: Duration,
    cells: Cache<IpAddr, Arc<Mutex<Instant>>>,
}

impl InvalidKeyThrottle {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        let tolerance = interval * burst.max(1).saturating_sub(1);
        Self {
            interval,
            tolerance,
            cells: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(tolerance + interval)
                .build(),
        }
    }

    /// `Some(seconds to wait)` when `ip` has used up its invalid keys.
    pub fn throttled(&self, ip: IpAddr) -> Option<u64> {
        self.throttled_at(ip, Instant::now())
    }

    fn throttled_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let cell = self.cells.get(&ip)?;
        let tat = *cell.lock().unwrap_or_else(PoisonError::into_inner);
        let allowed_from = tat.checked_sub(self.tolerance)?;
        let wait = allowed_from.checked_duration_since(now)?;
        if wait.is_zero() {
            return None;
        }
        Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// Records one invalid key sent from `ip`.
    pub fn record_invalid(&self, ip: IpAddr) {
        self.record_invalid_at(ip, Instant::now());
    }

    fn record_invalid_at(&self, ip: IpAddr, now: Instant) {
        let cell = self.cells.get_with(ip, || Arc::new(Mutex::new(now)));
        let mut tat = cell.lock().unwrap_or_else(PoisonError::into_inner);
        *tat = (*tat).max(now) + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_throttled_and_other_ips_unaffected() {
        let t = InvalidKeyThrottle::new(3, 60);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.throttled(a), None);
            t.record_invalid(a);
        }
        let wait = t.throttled(a).expect("the fourth invalid key waits");
        assert!((1..=1).contains(&wait), "one key per second: {wait}");
        assert_eq!(t.throttled(b), None);
    }

    #[test]
    fn recovers_at_the_sustained_rate() {
        // 6 per minute: one every 10 s, two at once.
        let t = InvalidKeyThrottle::new(2, 6);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let now = Instant::now();
        t.record_invalid_at(a, now);
        t.record_invalid_at(a, now);
        assert_eq!(t.throttled_at(a, now), Some(10));
        assert_eq!(t.throttled_at(a, now + Duration::from_secs(4)), Some(6));
        assert_eq!(t.throttled_at(a, now + Duration::from_secs(10)), None);
        // One more is allowed then; a second right after waits again.
        let later = now + Duration::from_secs(10);
        t.record_invalid_at(a, later);
        assert_eq!(t.throttled_at(a, later), Some(10));
    }
}
