//! The in-memory part of the usage queue: records in arrival order, each with its own
//! retry state. A record the control plane did not store gets its own backoff and is
//! left out of batches until it is due again, so one record that keeps failing never
//! holds back the records behind it (no head-of-line blocking).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::domain::UsageReport;

/// First per-record retry delay; doubles per failed try.
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest per-record retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Delay before try number `attempts + 1` of a record that failed `attempts` times.
pub fn retry_delay(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << shift).min(RETRY_MAX)
}

#[derive(Debug)]
pub struct Entry {
    pub record: UsageReport,
    /// Tries that did not store it.
    pub attempts: u32,
    pub next_try: Instant,
    /// Read back from the spill file: the file still holds it until it is compacted.
    pub from_file: bool,
}

impl Entry {
    pub fn new(record: UsageReport, attempts: u32, from_file: bool, now: Instant) -> Self {
        Self {
            record,
            attempts,
            next_try: now,
            from_file,
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryQueue {
    entries: VecDeque<Entry>,
    /// `started_at_ms` of the oldest entry, kept as entries come and go so the queue's
    /// age is read without a scan on every intake (records arrive in completion order,
    /// not start order, so it is not simply the front's).
    oldest_started_ms: Option<i64>,
}

impl MemoryQueue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, entry: Entry) {
        let started = entry.record.started_at_ms;
        self.oldest_started_ms = Some(self.oldest_started_ms.map_or(started, |o| o.min(started)));
        self.entries.push_back(entry);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.oldest_started_ms = None;
        self.entries.drain(..)
    }

    pub fn any_from_file(&self) -> bool {
        self.entries.iter().any(|e| e.from_file)
    }

    /// Up to `max` due records, oldest first; records backing off are skipped.
    pub fn due_batch(&self, now: Instant, max: usize) -> Vec<UsageReport> {
        self.entries
            .iter()
            .filter(|e| e.next_try <= now)
            .take(max)
            .map(|e| e.record.clone())
            .collect()
    }

    /// How many of these request ids were tried before (for the retries metric).
    pub fn retried_among(&self, ids: &HashSet<&str>) -> usize {
        self.entries
            .iter()
            .filter(|e| e.attempts > 0 && ids.contains(e.record.request_id.as_str()))
            .count()
    }

    /// The control plane answered a batch: records it stored (or dead-lettered) leave;
    /// the others of the batch back off on their own. Returns how many left.
    pub fn settle(&mut self, sent: &HashSet<&str>, done: &HashSet<&str>, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| !done.contains(e.record.request_id.as_str()));
        self.recompute_oldest();
        for e in &mut self.entries {
            if sent.contains(e.record.request_id.as_str()) {
                e.attempts = e.attempts.saturating_add(1);
                e.next_try = now + retry_delay(e.attempts);
            }
        }
        before - self.entries.len()
    }

    /// A call that failed with this record alone in it: the record backs off on its own
    /// (it may be what breaks the call).
    pub fn back_off(&mut self, request_id: &str, now: Instant) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.record.request_id == request_id)
        {
            e.attempts = e.attempts.saturating_add(1);
            e.next_try = now + retry_delay(e.attempts);
        }
    }

    /// When the next record is due (`None` = empty).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.next_try).min()
    }

    /// Takes out every record that is backing off (to make room for records waiting in
    /// the spill file).
    pub fn take_backing_off(&mut self, now: Instant) -> Vec<Entry> {
        let (waiting, due): (VecDeque<Entry>, VecDeque<Entry>) =
            self.entries.drain(..).partition(|e| e.next_try > now);
        self.entries = due;
        self.recompute_oldest();
        waiting.into()
    }

    /// `started_at_ms` of the oldest record held.
    pub fn oldest_started_ms(&self) -> Option<i64> {
        self.oldest_started_ms
    }

    /// After entries left: a scan, on paths that already walk the whole queue.
    fn recompute_oldest(&mut self) {
        self.oldest_started_ms = self.entries.iter().map(|e| e.record.started_at_ms).min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageReport {
        UsageReport::sample(id)
    }

    #[test]
    fn a_failing_record_backs_off_and_the_ones_behind_it_go_first() {
        let now = Instant::now();
        let mut q = MemoryQueue::default();
        for id in ["poison", "a", "b"] {
            q.push(Entry::new(record(id), 0, false, now));
        }
        let batch = q.due_batch(now, 2);
        assert_eq!(
            batch
                .iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["poison", "a"]
        );
        let sent: HashSet<&str> = ["poison", "a"].into();
        let done: HashSet<&str> = ["a"].into();
        assert_eq!(q.settle(&sent, &done, now), 1);
        // The poison record waits; "b" is sent without it.
        let batch = q.due_batch(now, 2);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].request_id, "b");
        assert_eq!(q.next_due(), Some(now));
        let waiting = q.take_backing_off(now);
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].record.request_id, "poison");
        assert_eq!(waiting[0].attempts, 1);
        assert_eq!(q.len(), 1);
    }

    /// The oldest start kept on the side is the one a scan of the queue finds, whatever
    /// order records arrive in and leave by.
    #[test]
    fn oldest_start_follows_the_records_held() {
        let scan = |q: &MemoryQueue| q.iter().map(|e| e.record.started_at_ms).min();
        let now = Instant::now();
        let mut q = MemoryQueue::default();
        assert_eq!(q.oldest_started_ms(), None);
        // Completion order is not start order.
        for (id, started) in [("c", 30), ("a", 10), ("d", 40), ("b", 20), ("e", 50)] {
            let mut r = record(id);
            r.started_at_ms = started;
            q.push(Entry::new(r, 0, false, now));
            assert_eq!(q.oldest_started_ms(), scan(&q));
        }
        assert_eq!(q.oldest_started_ms(), Some(10));
        // The oldest is acknowledged; "b" fails and backs off.
        let sent: HashSet<&str> = ["a", "b"].into();
        let done: HashSet<&str> = ["a"].into();
        q.settle(&sent, &done, now);
        assert_eq!(q.oldest_started_ms(), Some(20));
        assert_eq!(q.oldest_started_ms(), scan(&q));
        q.back_off("c", now);
        // "b" and "c" back off and move out (to the file).
        let waiting = q.take_backing_off(now);
        assert_eq!(waiting.len(), 2);
        assert_eq!(q.oldest_started_ms(), Some(40));
        assert_eq!(q.oldest_started_ms(), scan(&q));
        assert_eq!(q.drain().count(), 2);
        assert_eq!(q.oldest_started_ms(), None);
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
