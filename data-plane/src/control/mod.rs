//! Everything that talks to the control plane: the gRPC client (every call counted in
//! metrics, so a test can assert the hot path makes one call) and the session.

pub mod leases;
pub mod session;
pub mod tls;
pub mod usage;

use std::sync::Arc;

use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::metrics::{CallLabels, Metrics};

/// A lazily connecting channel: the data plane starts (and answers health) even while
/// the control plane is down, and reconnects by itself. With `tls`, every connection is
/// mutual TLS with the certificates current at connect time.
pub fn channel(
    url: &str,
    tls: Option<tollgate_shared::tls::TlsConnector>,
) -> Result<GatewayClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
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

    pub async fn authorize(
        &self,
        req: pb::AuthorizeRequest,
    ) -> Result<pb::AuthorizeResponse, tonic::Status> {
        self.count("authorize");
        Ok(self.inner.clone().authorize(req).await?.into_inner())
    }

    pub async fn admit(&self, req: pb::AdmitRequest) -> Result<pb::AdmitResponse, tonic::Status> {
        self.count("admit");
        Ok(self.inner.clone().admit(req).await?.into_inner())
    }

    pub async fn release(&self, req: pb::ReleaseRequest) -> Result<(), tonic::Status> {
        self.count("release");
        self.inner.clone().release(req).await?;
        Ok(())
    }

    pub async fn report_usage(
        &self,
        req: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse, tonic::Status> {
        self.count("report_usage");
        Ok(self.inner.clone().report_usage(req).await?.into_inner())
    }

    pub async fn report_outcome(&self, req: pb::ReportOutcomeRequest) -> Result<(), tonic::Status> {
        self.count("report_outcome");
        self.inner.clone().report_outcome(req).await?;
        Ok(())
    }
}
