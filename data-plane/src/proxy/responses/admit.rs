//! Admission: one call to the control plane, which may wait for slots. While a
//! streaming request waits, SSE comment pings keep the client connection alive (the
//! first ping commits status 200). A client that leaves while waiting cancels the call,
//! which gives its place in the queue back.

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
        let Some(session_id) = self.session.borrow().session_id.clone() else {
            return Err(ClientError::new(
                ErrorCode::Unavailable,
                "Gateway is not connected to its control plane, please retry later",
            ));
        };
        let req = AdmitRequest {
            session_id,
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
        };
        let call = self.control.admit(req);
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
            }
        };
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
            Err(e) => {
                tracing::warn!(error = %e, "admit call failed");
                Err(ClientError::of(ErrorCode::BillingUnavailable))
            }
        }
    }
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
