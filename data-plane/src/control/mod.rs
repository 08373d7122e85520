//! Everything that talks to the control plane: the gRPC client (every call counted in
//! metrics, so a test can assert the hot path makes one call) and the session. The
//! generated wire types stop here: `ControlClient` takes and returns the domain types
//! of `domain.rs`, converted and validated in `convert.rs`.

mod convert;
pub mod domain;
pub mod leases;
pub mod session;
pub mod tls;
pub mod usage;
mod usage_queue;
mod usage_spill;

use std::sync::Arc;

use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::metrics::{CallLabels, Metrics};
use domain::{
    Admission, AdmitRequest, Authorization, Outcome, ResponseRecord, UsageAck, UsageReport,
};

/// A lazily connecting channel: the data plane starts (and answers health) even while
/// the control plane is down, and reconnects by itself. With `tls`, every connection is
/// mutual TLS with the certificates current at connect time.
pub fn channel(
    url: &str,
    tls: Option<tollgate_shared::tls::TlsConnector>,
) -> Result<GatewayClient<Channel>> {
    let url = match tls {
        Some(_) => tollgate_shared::tls::TlsConnector::endpoint_url(url),
        None => url.to_owned(),
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("bad control-plane URL: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(GatewayClient::new(match tls {
        Some(connector) => endpoint.connect_with_connector_lazy(connector),
        None => endpoint.connect_lazy(),
    }))
}

/// The Gateway client with per-method call counting.
#[derive(Clone)]
pub struct ControlClient {
    inner: GatewayClient<Channel>,
    metrics: Arc<Metrics>,
}

impl ControlClient {
    pub fn new(inner: GatewayClient<Channel>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    pub fn raw(&self) -> GatewayClient<Channel> {
        self.inner.clone()
    }

    fn count(&self, method: &'static str) {
        self.metrics
            .control_plane_calls
            .get_or_create(&CallLabels { method })
            .inc();
    }

    /// What the control plane knows about a key hash.
    pub async fn authorize(&self, key_hash: &str) -> Result<Authorization, CallFailed> {
        self.count("authorize");
        let req = pb::AuthorizeRequest {
            key_hash: key_hash.to_owned(),
        };
        let resp = self.inner.clone().authorize(req).await?.into_inner();
        Ok(convert::authorization(resp))
    }

    /// One admission; may wait in the control plane.
    pub async fn admit(&self, req: AdmitRequest) -> Result<Admission, CallFailed> {
        self.count("admit");
        let resp = self
            .inner
            .clone()
            .admit(convert::admit_request(req))
            .await?
            .into_inner();
        Ok(convert::admission(resp))
    }

    pub async fn release(
        &self,
        session_id: String,
        lease_ids: Vec<String>,
        request_ids: Vec<String>,
    ) -> Result<(), CallFailed> {
        self.count("release");
        let req = pb::ReleaseRequest {
            session_id,
            lease_ids,
            request_ids,
        };
        self.inner.clone().release(req).await?;
        Ok(())
    }

    pub async fn report_usage(&self, records: Vec<UsageReport>) -> Result<UsageAck, CallFailed> {
        self.count("report_usage");
        let req = pb::ReportUsageRequest {
            records: records.into_iter().map(convert::usage_report).collect(),
        };
        let resp = self.inner.clone().report_usage(req).await?.into_inner();
        Ok(convert::usage_ack(resp))
    }

    pub async fn report_outcome(&self, outcome: Outcome) -> Result<(), CallFailed> {
        self.count("report_outcome");
        self.inner
            .clone()
            .report_outcome(convert::outcome(outcome))
            .await?;
        Ok(())
    }

    /// Tells the control plane which account and user a response id belongs to.
    pub async fn record_response(&self, r: ResponseRecord) -> Result<(), CallFailed> {
        self.count("record_response");
        let req = pb::RecordResponseRequest {
            response_id: r.response_id,
            account_id: r.account_id,
            user_id: r.user_id,
            request_id: r.request_id,
        };
        self.inner.clone().record_response(req).await?;
        Ok(())
    }
}

/// A Gateway call that did not answer (unreachable, timed out, or an error status).
/// Callers only log it and choose their own client answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("control plane call failed: {0}")]
pub struct CallFailed(#[from] tonic::Status);
