//! Admission: one call to the control plane, which may wait for slots. While a
//! streaming request waits, SSE comment pings keep the client connection alive (the
//! first ping commits status 200). A client that leaves while waiting cancels the call,
//! which gives its place in the queue back.
//!
//! During a control-plane failover (no session, or the call lost its leader) the
//! admission waits, bounded by `failover_wait`, for the data plane to re-attach to the
//! new leader and tries again; past the bound the client gets 503 with `Retry-After`.

use std::time::Duration;

use tokio::time::Instant;
use tollgate_shared::ErrorCode;

use super::downstream::{Downstream, PING};
use super::{Ctx, Flow};
use crate::control::domain::{Admission, AdmitRequest, Lease};
use crate::control::leases::LeaseGuard;
use crate::proxy::errors::ClientError;

impl Flow {
    pub(super) async fn admit(
        &self,
        ctx: &Ctx,
        excluded: &[i64],
        previous: Option<&LeaseGuard>,
        ds: &mut Downstream,
    ) -> Result<Lease, ClientError> {
        let req = AdmitRequest {
            session_id: String::new(),
            request_id: ctx.request_id.clone(),
            key_id: ctx.key.key_id,
            model: ctx.model.clone(),
            session_hash: ctx.session_hash.clone(),
            excluded_account_ids: excluded.to_vec(),
            user_lease_id: previous.map(|g| g.id.clone()),
            stream: ctx.stream,
            default_codex_model: self.settings.default_codex_model.clone(),
            // Continuing a response: the control plane routes to the account that
            // created it (response-id affinity).
            response_id: ctx
                .body
                .get("previous_response_id")
                .and_then(serde_json::Value::as_str)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            response_operation: false,
            request_bytes: u64::try_from(ctx.raw_len).unwrap_or(u64::MAX),
        };
        let call = self.admit_through_failover(req);
        tokio::pin!(call);
        let period = self.settings.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = ping.tick(), if ctx.stream => {
                    ds.commit_sse(None);
                    if !ds.send(PING).await {
                        return Err(self.abandon(ctx));
                    }
                }
                () = ds.closed(), if !ds.is_gone() => return Err(self.abandon(ctx)),
                // Shutting down: stop waiting for a slot (nothing was used, nothing billed).
                () = self.drain_cut.cancelled() => {
                    self.leases.abandon(&ctx.request_id);
                    return Err(super::failover::shutting_down());
                }
            }
        };
        let lease = self.admitted(result)?;
        ctx.timing.add_wait(lease.queued);
        Ok(lease)
    }

    /// What the client is told of an Admit's answer (shared with the response
    /// operations, `operations.rs`).
    pub(super) fn admitted(
        &self,
        result: Result<Admission, AdmitFailed>,
    ) -> Result<Lease, ClientError> {
        match result {
            Ok(Admission::Granted(lease)) => Ok(*lease),
            Ok(Admission::Refused { code, message }) => Err(ClientError::new(code, message)),
            Ok(Admission::Malformed { lease_id, reason }) => {
                // Granted but unusable: give it back at once, or the slots stay taken
                // until the session ends.
                tracing::error!(reason, ?lease_id, "unusable admission answer");
                if let Some(id) = lease_id {
                    self.leases.give_back(&id);
                }
                Err(ClientError::new(ErrorCode::Internal, reason))
            }
            Err(AdmitFailed::NoLeader) => {
                let mut e = ClientError::new(
                    ErrorCode::Unavailable,
                    "Gateway is not connected to its control plane, please retry later",
                );
                e.retry_after_secs = Some(RETRY_AFTER_SECS);
                Err(e)
            }
            Err(AdmitFailed::Call(e)) => {
                tracing::warn!(error = %e, "admit call failed");
                let mut client = ClientError::of(ErrorCode::BillingUnavailable);
                if e.is_failover() {
                    // Still no leader past the failover wait.
                    client.retry_after_secs = Some(RETRY_AFTER_SECS);
                }
                Err(client)
            }
        }
    }

    /// Admit on the current session; when there is none, or the call reached no leader,
    /// waits for the next session (or a short pause) and tries again until
    /// `failover_wait` has passed. (A grant made by a leader that died before answering
    /// died with it: live slot state is the leader's memory.)
    pub(super) async fn admit_through_failover(
        &self,
        mut req: AdmitRequest,
    ) -> Result<Admission, AdmitFailed> {
        let deadline = Instant::now() + self.settings.failover_wait;
        let mut session = self.session.clone();
        let mut failed_on: Option<String> = None;
        loop {
            let session_id = match tokio::time::timeout_at(
                deadline,
                session.wait_for(|s| s.session_id.is_some() && s.session_id != failed_on),
            )
            .await
            {
                Ok(Ok(state)) => state.session_id.clone().unwrap_or_default(),
                _ => return Err(AdmitFailed::NoLeader),
            };
            req.session_id = session_id.clone();
            match self.control.admit(req.clone()).await {
                Err(e) if e.is_failover() && Instant::now() < deadline => {
                    tracing::info!(error = %e, "admit reached no leader; waiting for the control plane");
                    failed_on = Some(session_id);
                    // A blip that did not end the session: retry on it after a pause.
                    let pause = tokio::time::timeout_at(
                        deadline.min(Instant::now() + RETRY_PAUSE),
                        session.wait_for(|s| s.session_id != failed_on),
                    )
                    .await;
                    if pause.is_err() {
                        failed_on = None;
                    }
                }
                other => return other.map_err(AdmitFailed::Call),
            }
        }
    }
}

/// Seconds a client is told to wait after the failover bound passed.
const RETRY_AFTER_SECS: u64 = 2;
/// Pause before retrying Admit on a session that is still up after a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub(super) enum AdmitFailed {
    /// No control-plane leader answered within the failover bound.
    NoLeader,
    Call(crate::control::CallFailed),
}

impl Flow {
    /// The client left while waiting: the Admit call is dropped (giving the queue place
    /// back) and the control plane is told to free anything granted for the request in
    /// the meantime. Nobody reads the answer, but it is the spec's.
    fn abandon(&self, ctx: &Ctx) -> ClientError {
        self.leases.abandon(&ctx.request_id);
        ClientError::of(ErrorCode::UserConcurrencyExceeded)
    }
}
