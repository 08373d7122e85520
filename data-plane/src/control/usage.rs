//! Usage reporting off the hot path. Records queue in memory and are sent in batches;
//! a record leaves the queue only when the control plane acknowledges it (committed) or
//! rejects it for good. Failed sends retry with capped backoff. On shutdown the queue is
//! flushed until empty or the deadline passes.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ControlClient;
use super::domain::UsageReport;

const BATCH: usize = 100;
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// Runs until `stop`, then flushes for at most `flush_deadline`.
pub async fn run_reporter(
    client: ControlClient,
    mut rx: mpsc::UnboundedReceiver<UsageReport>,
    stop: CancellationToken,
    flush_deadline: Duration,
) {
    let mut pending: VecDeque<UsageReport> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        if pending.is_empty() {
            tokio::select! {
                r = rx.recv() => match r { Some(r) => pending.push_back(r), None => break },
                () = stop.cancelled() => break,
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.push_back(r);
        }
        if send_batch(&client, &mut pending).await {
            backoff = Duration::from_millis(100);
        } else {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    // Flush: everything queued now, until acknowledged or the deadline.
    while let Ok(r) = rx.try_recv() {
        pending.push_back(r);
    }
    let deadline = tokio::time::Instant::now() + flush_deadline;
    let mut delay = Duration::from_millis(50);
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        if !send_batch(&client, &mut pending).await {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
    if !pending.is_empty() {
        tracing::error!(
            count = pending.len(),
            "shutdown with unacknowledged usage records"
        );
    }
}

/// Sends one batch from the front; returns false when the call failed.
async fn send_batch(client: &ControlClient, pending: &mut VecDeque<UsageReport>) -> bool {
    let n = pending.len().min(BATCH);
    let records: Vec<UsageReport> = pending.iter().take(n).cloned().collect();
    match client.report_usage(records).await {
        Ok(resp) => {
            for (request_id, reason) in &resp.rejected {
                tracing::error!(request_id, reason, "usage record rejected");
            }
            let done: std::collections::HashSet<&str> = resp
                .acked
                .iter()
                .map(String::as_str)
                .chain(resp.rejected.iter().map(|(id, _)| id.as_str()))
                .collect();
            let before = pending.len();
            pending.retain(|r| !done.contains(r.request_id.as_str()));
            // A reply that acknowledged nothing counts as a failure (back off).
            pending.len() < before
        }
        Err(e) => {
            tracing::warn!(error = %e, queued = pending.len(), "usage report failed; will retry");
            false
        }
    }
}
