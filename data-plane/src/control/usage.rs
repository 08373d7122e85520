//! Usage reporting off the hot path, so that every record lands:
//!
//! - Requests hand records to the reporter through a channel; the reporter takes them
//!   in while a call to the control plane is under way, so a slow or absent control
//!   plane never backs records up in the channel.
//! - A record leaves the queue only when the control plane acknowledges it (stored) or
//!   reports it dead-lettered (stored in its dead-letter table) or, from older control
//!   planes, rejected. A record of an answered batch that is none of these backs off on
//!   its own (`usage_queue.rs`): no head-of-line blocking.
//! - A failed call backs the whole reporter off (capped); the next batch is half the
//!   size, so a record that breaks whole calls ends up alone and backs off on its own.
//! - At most `memory_cap` records are held in memory. Beyond that, and while anything
//!   waits in the file, new records go to the spill file (`usage_spill.rs`), in order,
//!   fsynced per batch. Records come back from it in order when memory has room; when
//!   memory is full of records that are backing off and the file holds more, those
//!   records move to the end of the file, so they never hold the others back.
//! - On shutdown the queue is flushed until the deadline; whatever is left is written
//!   to the spill file, which the next start reads back. Nothing is dropped.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::domain::{UsageAck, UsageReport};
use super::usage_queue::{Entry, MemoryQueue};
use super::usage_spill::{Spill, Spilled};
use super::{CallFailed, ControlClient};
use crate::metrics::Metrics;

const BATCH: usize = 100;
const CALL_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const CALL_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Records taken from the channel per step (the rest on the next turn).
const INTAKE: usize = 1_000;
/// Records backing off move to the file at most this often (each move rewrites them).
const EVICT_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct UsageSender {
    tx: mpsc::UnboundedSender<UsageReport>,
}

impl UsageSender {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<UsageReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn send(&self, record: UsageReport) {
        if self.tx.send(record).is_err() {
            tracing::error!("usage reporter stopped; a usage record was not queued");
        }
    }
}

/// How the reporter keeps records.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub memory_cap: usize,
    pub spill_path: PathBuf,
    /// On shutdown, how long to keep sending before writing the rest to the spill file.
    pub flush_deadline: Duration,
}

type Call = Pin<Box<dyn Future<Output = Result<UsageAck, CallFailed>> + Send>>;

/// A batch on its way: the call and the ids it carries.
struct InFlight {
    call: Call,
    ids: Vec<String>,
}

/// Runs until `stop`, then flushes for at most `policy.flush_deadline` and keeps the
/// rest in the spill file.
pub async fn run_reporter(
    client: ControlClient,
    mut rx: mpsc::UnboundedReceiver<UsageReport>,
    stop: CancellationToken,
    policy: QueuePolicy,
    metrics: Arc<Metrics>,
) {
    let mut q = Reporter::open(client, policy, metrics).await;
    let mut inflight: Option<InFlight> = None;
    let mut open = true;
    while open {
        q.maintain().await;
        let now = Instant::now();
        if inflight.is_none() && now >= q.calls_resume_at {
            inflight = q.start_batch(now);
        }
        let wake = if inflight.is_none() {
            q.next_wake()
        } else {
            None
        };
        tokio::select! {
            () = stop.cancelled() => break,
            n = rx.recv() => match n {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < INTAKE {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    q.take_in(batch).await;
                }
                None => open = false,
            },
            res = poll_call(&mut inflight) => {
                let ids = inflight.take().map(|f| f.ids).unwrap_or_default();
                q.settle(&ids, res);
            }
            () = sleep_until(wake) => {}
        }
    }
    // Shutdown: finish the call under way, take in what is queued, flush, spill the rest.
    let deadline = Instant::now() + q.policy.flush_deadline;
    if let Some(f) = inflight.take()
        && let Ok(res) = tokio::time::timeout_at(deadline, f.call).await
    {
        q.settle(&f.ids, res);
    }
    let mut rest = Vec::new();
    while let Ok(r) = rx.try_recv() {
        rest.push(r);
    }
    q.take_in(rest).await;
    q.flush(deadline).await;
}

async fn poll_call(f: &mut Option<InFlight>) -> Result<UsageAck, CallFailed> {
    match f {
        Some(f) => f.call.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Reporter {
    client: ControlClient,
    policy: QueuePolicy,
    metrics: Arc<Metrics>,
    memory: MemoryQueue,
    spill: Spill,
    batch_size: usize,
    call_backoff: Duration,
    calls_resume_at: Instant,
    last_eviction: Option<Instant>,
}

impl Reporter {
    async fn open(client: ControlClient, policy: QueuePolicy, metrics: Arc<Metrics>) -> Self {
        let spill = match Spill::open(policy.spill_path.clone()).await {
            Ok(s) => s,
            Err(e) => {
                // Unreadable now; appends will say whether the path works at all.
                tracing::error!(path = %policy.spill_path.display(), error = %e, "usage spill file unreadable; starting without its records");
                metrics.usage.spill_errors.inc();
                Spill::empty(policy.spill_path.clone())
            }
        };
        if spill.has_unread() {
            tracing::info!(path = %spill.path().display(), records = spill.unread(), "replaying spilled usage records");
        }
        let r = Self {
            client,
            policy,
            metrics,
            memory: MemoryQueue::default(),
            spill,
            batch_size: BATCH,
            call_backoff: CALL_BACKOFF_FIRST,
            calls_resume_at: Instant::now(),
            last_eviction: None,
        };
        r.publish();
        r
    }

    /// When there is something to do without new records: a record due (and calls not
    /// backing off), or records backing off to move out for the ones in the file.
    fn next_wake(&self) -> Option<Instant> {
        let due = self.memory.next_due().map(|t| t.max(self.calls_resume_at));
        let evict =
            (self.spill.has_unread() && self.memory.len() >= self.policy.memory_cap).then(|| {
                self.last_eviction
                    .map_or_else(Instant::now, |t| t + EVICT_EVERY)
            });
        due.into_iter().chain(evict).min()
    }

    /// New records: to memory while it has room and nothing waits in the file (order
    /// kept), else to the end of the file.
    async fn take_in(&mut self, records: Vec<UsageReport>) {
        let now = Instant::now();
        let mut to_file = Vec::new();
        for record in records {
            if to_file.is_empty()
                && !self.spill.has_unread()
                && self.memory.len() < self.policy.memory_cap
            {
                self.memory.push(Entry::new(record, 0, false, now));
            } else {
                to_file.push(Spilled {
                    attempts: 0,
                    record,
                });
            }
        }
        self.spill_out(to_file).await;
        self.publish();
    }

    /// Writes records to the spill file; if that fails they stay in memory, past the
    /// cap (dropping them is never the answer).
    async fn spill_out(&mut self, records: Vec<Spilled>) {
        if records.is_empty() {
            return;
        }
        match self.spill.append(&records).await {
            Ok(()) => {
                self.metrics.usage.spilled.inc_by(records.len() as u64);
            }
            Err(e) => {
                tracing::error!(path = %self.spill.path().display(), error = %e, count = records.len(), "cannot write the usage spill file; keeping the records in memory");
                self.metrics.usage.spill_errors.inc();
                let now = Instant::now();
                for s in records {
                    self.memory
                        .push(Entry::new(s.record, s.attempts, false, now));
                }
            }
        }
    }

    /// Moves records between memory and the file: records backing off make room when
    /// memory is full and the file holds more; memory is refilled from the file in
    /// order; the file is removed or compacted when it can be.
    async fn maintain(&mut self) {
        let cap = self.policy.memory_cap;
        let now = Instant::now();
        let may_evict = self
            .last_eviction
            .is_none_or(|t| now.duration_since(t) >= EVICT_EVERY);
        if self.spill.has_unread() && self.memory.len() >= cap && may_evict {
            self.last_eviction = Some(now);
            let waiting = self.memory.take_backing_off(now);
            let out = waiting
                .into_iter()
                .map(|e| Spilled {
                    attempts: e.attempts,
                    record: e.record,
                })
                .collect();
            self.spill_out(out).await;
        }
        let room = cap.saturating_sub(self.memory.len());
        if room > 0 && self.spill.has_unread() {
            match self.spill.read(room).await {
                Ok(lines) => {
                    let now = Instant::now();
                    for s in lines {
                        self.memory
                            .push(Entry::new(s.record, s.attempts, true, now));
                    }
                }
                Err(e) => {
                    tracing::error!(path = %self.spill.path().display(), error = %e, "cannot read the usage spill file");
                    self.metrics.usage.spill_errors.inc();
                }
            }
        }
        let result = if !self.spill.has_unread() && !self.memory.any_from_file() {
            self.spill.clear().await
        } else if self.spill.wants_compaction() {
            let head: Vec<Spilled> = self
                .memory
                .iter()
                .filter(|e| e.from_file)
                .map(|e| Spilled {
                    attempts: e.attempts,
                    record: e.record.clone(),
                })
                .collect();
            self.spill.rewrite(&head).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::error!(path = %self.spill.path().display(), error = %e, "cannot tidy the usage spill file");
            self.metrics.usage.spill_errors.inc();
        }
        self.publish();
    }

    fn start_batch(&mut self, now: Instant) -> Option<InFlight> {
        let records = self.memory.due_batch(now, self.batch_size);
        if records.is_empty() {
            return None;
        }
        let ids: Vec<String> = records.iter().map(|r| r.request_id.clone()).collect();
        let id_set: HashSet<&str> = ids.iter().map(String::as_str).collect();
        self.metrics
            .usage
            .retries
            .inc_by(self.memory.retried_among(&id_set) as u64);
        let client = self.client.clone();
        let call: Call = Box::pin(async move { client.report_usage(records).await });
        Some(InFlight { call, ids })
    }

    fn settle(&mut self, ids: &[String], res: Result<UsageAck, CallFailed>) {
        let now = Instant::now();
        match res {
            Ok(ack) => {
                for (request_id, reason) in ack.dead_lettered.iter().chain(&ack.rejected) {
                    tracing::warn!(
                        request_id,
                        reason,
                        "usage record refused for good by the control plane (dead-lettered there)"
                    );
                }
                let sent: HashSet<&str> = ids.iter().map(String::as_str).collect();
                let done: HashSet<&str> = ack
                    .acked
                    .iter()
                    .chain(ack.dead_lettered.iter().map(|(id, _)| id))
                    .chain(ack.rejected.iter().map(|(id, _)| id))
                    .map(String::as_str)
                    .filter(|id| sent.contains(id))
                    .collect();
                self.memory.settle(&sent, &done, now);
                self.metrics.usage.acked.inc_by(ack.acked.len() as u64);
                self.metrics
                    .usage
                    .dead_lettered
                    .inc_by((ack.dead_lettered.len() + ack.rejected.len()) as u64);
                self.call_backoff = CALL_BACKOFF_FIRST;
                self.calls_resume_at = now;
                self.batch_size = (self.batch_size * 2).min(BATCH);
            }
            Err(e) => {
                tracing::warn!(error = %e, queued = self.memory.len() + self.spill.unread(), "usage report failed; will retry");
                if let [only] = ids {
                    self.memory.back_off(only, now);
                }
                self.calls_resume_at = now + self.call_backoff;
                self.call_backoff = (self.call_backoff * 2).min(CALL_BACKOFF_MAX);
                self.batch_size = (self.batch_size / 2).max(1);
            }
        }
        self.publish();
    }

    /// Sends what memory holds until it is empty or the deadline passes (records backing
    /// off get one more try), then writes whatever is left to the spill file.
    async fn flush(&mut self, deadline: Instant) {
        let mut delay = Duration::from_millis(50);
        while !self.memory.is_empty() && Instant::now() < deadline {
            // Everything due before the deadline goes now: the process is going away.
            let records = self.memory.due_batch(deadline, BATCH);
            if records.is_empty() {
                break;
            }
            let ids: Vec<String> = records.iter().map(|r| r.request_id.clone()).collect();
            let before = self.memory.len();
            let res = tokio::time::timeout_at(deadline, self.client.report_usage(records)).await;
            let Ok(res) = res else { break };
            self.settle(&ids, res);
            // No progress (a failed call, or nothing stored): wait a little.
            if self.memory.len() >= before {
                tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
        if self.memory.is_empty() && !self.spill.has_unread() {
            if let Err(e) = self.spill.clear().await {
                tracing::error!(error = %e, "cannot remove the usage spill file");
            }
            return;
        }
        let head: Vec<Spilled> = self
            .memory
            .drain()
            .map(|e| Spilled {
                attempts: e.attempts,
                record: e.record,
            })
            .collect();
        let count = head.len() + self.spill.unread();
        match self.spill.rewrite(&head).await {
            Ok(()) => tracing::warn!(
                path = %self.spill.path().display(),
                count,
                "shutdown with unacknowledged usage records; kept in the spill file for the next start"
            ),
            Err(e) => tracing::error!(
                path = %self.spill.path().display(),
                error = %e,
                count,
                "shutdown with unacknowledged usage records that could not be written"
            ),
        }
    }

    fn publish(&self) {
        let m = &self.metrics.usage;
        let in_memory = i64::try_from(self.memory.len()).unwrap_or(i64::MAX);
        let in_file = i64::try_from(self.spill.unread()).unwrap_or(i64::MAX);
        m.in_memory.set(in_memory);
        m.spill_file.set(in_file);
        m.queued.set(in_memory.saturating_add(in_file));
        if in_memory > m.in_memory_peak.get() {
            m.in_memory_peak.set(in_memory);
        }
        let oldest = [
            self.memory.oldest_started_ms(),
            self.spill.oldest_started_ms(),
        ]
        .into_iter()
        .flatten()
        .min();
        let age = oldest.map_or(0, |ms| (tollgate_shared::now_ms() - ms).max(0) / 1000);
        m.oldest_age_seconds.set(age);
    }
}
