//! Response-id records (response affinity, `proxy/responses/affinity.rs`) sent in
//! batches: one background task holds at most one RecordResponses call in flight and
//! sends, in one call, every record that came in meanwhile. An idle data plane sends a
//! record at once (no added delay); a busy one sends a few calls per round trip instead
//! of one unary call (an h2 stream, a server task) per request.
//!
//! Each request still waits for its own record: it holds the receiving end of a
//! oneshot that the task completes once the call carrying the record is answered
//! (recorded, refused or failed: the request succeeds either way, as before batching;
//! failures are logged in the request's span). Failed records are not retried, as the
//! unary call never was: the conversation then continues as with an unknown id.
//!
//! A control plane older than RecordResponses answers UNIMPLEMENTED: the task then
//! sends one RecordResponse call per record (concurrently), trying the batched call
//! again every few minutes. Records of that first refused call are kept and sent again;
//! should a leader change later land on an older replica, that call's records are lost
//! (logged), as a failed unary call's always were.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::domain::ResponseRecord;
use super::{CallFailed, ControlClient};

/// Records per call, at most (the rest go in the next call).
const MAX_BATCH: usize = 1_024;
/// A call not answered by then fails its records, so that a stuck connection does not
/// hold every later record behind it (their requests stopped waiting long before).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After a control plane refused RecordResponses as unknown, how long records go one by
/// one before the batched call is tried again.
const RETRY_BATCHED: Duration = Duration::from_secs(300);

/// A record waiting to be sent, with what its request waits on.
#[derive(Debug)]
pub struct Waiting {
    record: ResponseRecord,
    /// Completed (or dropped) once the call carrying the record is answered.
    done: oneshot::Sender<()>,
    /// The request's span: a failure is logged there, with its request id.
    span: tracing::Span,
}

/// The requests' end: hands records to the batching task.
#[derive(Clone, Debug)]
pub struct RecordSender {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl RecordSender {
    /// The sender and the receiving end [`run`] consumes.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Waiting>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues `record`; the answer resolves once the control plane answered the call
    /// that carried it (or at once if the task is gone: the process is stopping).
    pub fn send(&self, record: ResponseRecord) -> oneshot::Receiver<()> {
        let (done, answered) = oneshot::channel();
        let waiting = Waiting {
            record,
            done,
            span: tracing::Span::current(),
        };
        if self.tx.send(waiting).is_err() {
            tracing::warn!("response recorder stopped; the response's account is not recorded");
        }
        answered
    }
}

/// Whether the control plane serves RecordResponses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// Not known yet: the records of a call are kept until it answers, to be sent one
    /// by one if the control plane turns out not to know the batched call.
    Unknown,
    Batched,
    /// An older control plane (since then): one RecordResponse call per record, until
    /// [`RETRY_BATCHED`] has passed (the control plane may have been upgraded).
    OneByOne(Instant),
}

/// Sends queued records until `stop`, then sends what is still queued and returns.
pub async fn run(
    client: ControlClient,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    stop: CancellationToken,
) {
    let mut support = Support::Unknown;
    loop {
        let first = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => return },
            () = stop.cancelled() => {
                // Requests have drained by now; whatever is queued goes out once.
                let mut rest = Vec::new();
                while let Ok(w) = rx.try_recv() { rest.push(w); }
                if !rest.is_empty() { send(&client, rest, &mut support).await; }
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        send(&client, batch, &mut support).await;
    }
}

/// One call for `batch` (or one per record with an older control plane); every waiter
/// is woken when its record's call is answered.
async fn send(client: &ControlClient, batch: Vec<Waiting>, support: &mut Support) {
    let mut waiters = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for w in batch {
        records.push(w.record);
        waiters.push((w.done, w.span));
    }
    if let Support::OneByOne(since) = *support {
        if since.elapsed() < RETRY_BATCHED {
            return one_by_one(client, records, waiters).await;
        }
        *support = Support::Unknown;
    }
    let kept = (*support == Support::Unknown).then(|| records.clone());
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.record_responses(records)).await;
    match answer {
        Ok(Ok(rejected)) => {
            *support = Support::Batched;
            for r in rejected {
                tracing::warn!(
                    request_id = r.request_id,
                    response_id = r.response_id,
                    reason = r.reason,
                    "the control plane refused the response's record"
                );
            }
        }
        Ok(Err(e)) if e.is_unimplemented() => {
            tracing::info!(
                "the control plane does not batch response records (an older build); \
                 sending them one by one"
            );
            *support = Support::OneByOne(Instant::now());
            match kept {
                // Nothing was recorded: the same records, one by one.
                Some(records) => return one_by_one(client, records, waiters).await,
                None => failed(&waiters, &e),
            }
        }
        Ok(Err(e)) => failed(&waiters, &e),
        Err(_) => {
            for (_, span) in &waiters {
                tracing::warn!(
                    parent: span,
                    timeout_secs = CALL_TIMEOUT.as_secs(),
                    "recording the response's account timed out"
                );
            }
        }
    }
    for (done, _) in waiters {
        let _ = done.send(());
    }
}

type Waiters = Vec<(oneshot::Sender<()>, tracing::Span)>;

fn failed(waiters: &Waiters, e: &CallFailed) {
    for (_, span) in waiters {
        tracing::warn!(parent: span, error = %e, "recording the response's account failed");
    }
}

/// The unary call per record, all at once; each waiter is woken with its own answer.
async fn one_by_one(client: &ControlClient, records: Vec<ResponseRecord>, waiters: Waiters) {
    let calls = records.into_iter().zip(waiters).map(|(record, (done, span))| async move {
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.record_response(record)).await;
        match answer {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(parent: &span, error = %e, "recording the response's account failed");
            }
            Err(_) => tracing::warn!(parent: &span, "recording the response's account timed out"),
        }
        let _ = done.send(());
    });
    futures::future::join_all(calls).await;
}
