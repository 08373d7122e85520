//! Response-id affinity, the data plane's part: the id of a response the upstream
//! created (from `response.created` or the JSON body) is reported to the control plane
//! with its account and user, so that a later `previous_response_id` or
//! `/v1/responses/{id}` call reaches the same account from any data plane.
//!
//! The report is queued as soon as the id is seen (to the batching task of
//! `control/response_records.rs`, so a stream is not held up, and many requests' records
//! share one call) and is waited for — at most `RECORD_WAIT` — before the client gets
//! the final event or the JSON body: a client that chains its next request on the id
//! finds it recorded. A report that fails is logged; the request itself still succeeds.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::control::domain::ResponseRecord;
use crate::control::response_records::RecordSender;

/// How long the final answer waits for the report to be acknowledged.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// Reports one response id (at most once) for one attempt.
pub struct Recorder {
    /// What a report needs; `None` when nothing is to be recorded (`store: false`:
    /// the upstream keeps no response to continue or retrieve).
    target: Option<Target>,
    pending: Option<oneshot::Receiver<()>>,
}

struct Target {
    records: RecordSender,
    account_id: i64,
    user_id: i64,
    request_id: String,
}

impl Recorder {
    pub fn new(records: &RecordSender, account_id: i64, user_id: i64, request_id: &str) -> Self {
        Self {
            target: Some(Target {
                records: records.clone(),
                account_id,
                user_id,
                request_id: request_id.to_owned(),
            }),
            pending: None,
        }
    }

    /// A recorder that records nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            pending: None,
        }
    }

    /// Starts the report of `id` the first time an id is seen.
    pub fn saw(&mut self, id: Option<&str>) {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return;
        };
        let Some(t) = self.target.take() else { return };
        self.pending = Some(t.records.send(ResponseRecord {
            response_id: id.to_owned(),
            account_id: t.account_id,
            user_id: t.user_id,
            request_id: t.request_id,
        }));
    }

    /// Waits (bounded) until a started report has been answered.
    pub async fn settle(&mut self) {
        if let Some(rx) = self.pending.take()
            && tokio::time::timeout(RECORD_WAIT, rx).await.is_err()
        {
            tracing::warn!("recording the response's account is slow; answering without it");
        }
    }
}
