//! Everything that talks to the control plane: the gRPC client (every call counted in
//! metrics, so a test can assert the hot path makes one call) and the session. The
//! generated wire types stop here: `ControlClient` takes and returns the domain types
//! of `domain.rs`, converted and validated in `convert.rs`.

mod convert;
pub mod domain;
pub mod leases;
pub mod response_records;
pub mod session;
pub mod targets;
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

/// The control-plane addresses of a `TOLLGATE_CONTROL_PLANE_URL` value: one URL, or
/// several separated by commas (the replicas; the data plane follows the leader).
pub fn urls(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

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

/// The Gateway client with per-method call counting, calling the current control plane
/// of [`targets::Targets`] and moving on when a call says it is not (or no longer) the
/// leader.
#[derive(Clone)]
pub struct ControlClient {
    targets: Arc<targets::Targets>,
    metrics: Arc<Metrics>,
    /// How long Authorize keeps trying through a failover.
    failover_wait: std::time::Duration,
}

impl ControlClient {
    pub fn new(
        targets: targets::Targets,
        metrics: Arc<Metrics>,
        failover_wait: std::time::Duration,
    ) -> Self {
        Self {
            targets: Arc::new(targets),
            metrics,
            failover_wait,
        }
    }

    /// The client to call now and its index, for [`ControlClient::failed`].
    pub fn raw(&self) -> (usize, GatewayClient<Channel>) {
        self.targets.current()
    }

    /// A call to target `index` failed: follow the leader it names, or try the next
    /// address. `true` when redirected to a named leader.
    pub fn failed(&self, index: usize, status: &tonic::Status) -> bool {
        self.targets.failed(index, status)
    }

    /// Runs `call` on the current target, noting a failure so the next call goes to
    /// the leader (or the next address).
    async fn on_current<T, F>(
        &self,
        call: impl FnOnce(GatewayClient<Channel>) -> F,
    ) -> Result<T, CallFailed>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let (index, client) = self.targets.current();
        call(client).await.map_err(|e| {
            self.targets.failed(index, &e);
            CallFailed(e)
        })
    }

    fn count(&self, method: &'static str) {
        self.metrics
            .control_plane_calls
            .get_or_create(&CallLabels { method })
            .inc();
    }

    /// What the control plane knows about a key hash. Through a failover (no leader
    /// answers) it keeps asking, every [`FAILOVER_RETRY`], for up to `failover_wait`.
    pub async fn authorize(&self, key_hash: &str) -> Result<Authorization, CallFailed> {
        let deadline = tokio::time::Instant::now() + self.failover_wait;
        loop {
            self.count("authorize");
            let req = pb::AuthorizeRequest {
                key_hash: key_hash.to_owned(),
            };
            match self
                .on_current(|mut c| async move { c.authorize(req).await })
                .await
            {
                Ok(resp) => return Ok(convert::authorization(resp.into_inner())),
                Err(e) if e.is_failover() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(FAILOVER_RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One admission; may wait in the control plane.
    pub async fn admit(&self, req: AdmitRequest) -> Result<Admission, CallFailed> {
        self.count("admit");
        let mut request = tonic::Request::new(convert::admit_request(req));
        if !tollgate_shared::telemetry::propagating() {
            // No trace to continue (no exporter, plain logs): no client span to build
            // and no `traceparent` to write, on every request.
            let resp = self
                .on_current(|mut c| async move { c.admit(request).await })
                .await?;
            return Ok(convert::admission(resp.into_inner()));
        }
        // A client span whose `traceparent` goes along in the metadata: the control
        // plane's span for this call is its child.
        let span = tracing::info_span!("admit", otel.kind = "client");
        let mut headers = std::mem::take(request.metadata_mut()).into_headers();
        tollgate_shared::telemetry::inject(&span, &mut headers);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        let resp = tracing::Instrument::instrument(
            self.on_current(|mut c| async move { c.admit(request).await }),
            span,
        )
        .await?
        .into_inner();
        Ok(convert::admission(resp))
    }

    pub async fn release(
        &self,
        session_id: String,
        lease_ids: Vec<String>,
        request_ids: Vec<String>,
        unbilled_request_ids: Vec<String>,
    ) -> Result<(), CallFailed> {
        self.count("release");
        let req = pb::ReleaseRequest {
            session_id,
            lease_ids,
            request_ids,
            unbilled_request_ids,
        };
        self.on_current(|mut c| async move { c.release(req).await })
            .await?;
        Ok(())
    }

    pub async fn report_usage(&self, records: Vec<UsageReport>) -> Result<UsageAck, CallFailed> {
        self.count("report_usage");
        let req = pb::ReportUsageRequest {
            records: records.into_iter().map(convert::usage_report).collect(),
        };
        let resp = self
            .on_current(|mut c| async move { c.report_usage(req).await })
            .await?
            .into_inner();
        Ok(convert::usage_ack(resp))
    }

    pub async fn report_outcome(&self, outcome: Outcome) -> Result<(), CallFailed> {
        self.count("report_outcome");
        let req = convert::outcome(outcome);
        self.on_current(|mut c| async move { c.report_outcome(req).await })
            .await?;
        Ok(())
    }

    /// Tells the control plane which account and user a response id belongs to (the
    /// one-record call, for control planes older than RecordResponses).
    pub async fn record_response(&self, r: ResponseRecord) -> Result<(), CallFailed> {
        self.count("record_response");
        let req = convert::response_record(r);
        self.on_current(|mut c| async move { c.record_response(req).await })
            .await?;
        Ok(())
    }

    /// Records many response owners in one call; answers the records refused as
    /// invalid (every other one is recorded).
    pub async fn record_responses(
        &self,
        records: Vec<ResponseRecord>,
    ) -> Result<Vec<domain::RecordRefused>, CallFailed> {
        self.count("record_responses");
        let req = pb::RecordResponsesRequest {
            records: records.into_iter().map(convert::response_record).collect(),
        };
        let resp = self
            .on_current(|mut c| async move { c.record_responses(req).await })
            .await?
            .into_inner();
        Ok(resp
            .rejected
            .into_iter()
            .map(|r| domain::RecordRefused {
                response_id: r.response_id,
                request_id: r.request_id,
                reason: r.reason,
            })
            .collect())
    }
}

/// Pause between Authorize attempts while no control-plane leader answers.
const FAILOVER_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// A Gateway call that did not answer (unreachable, timed out, or an error status).
/// Callers only log it and choose their own client answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("control plane call failed: {0}")]
pub struct CallFailed(#[from] tonic::Status);

impl CallFailed {
    /// The control plane does not serve the method (an older build).
    pub fn is_unimplemented(&self) -> bool {
        self.0.code() == tonic::Code::Unimplemented
    }

    /// The call may succeed on another control plane (see [`targets::is_failover`]).
    pub fn is_failover(&self) -> bool {
        targets::is_failover(&self.0)
    }
}
