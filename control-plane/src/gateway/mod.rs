//! The `Gateway` gRPC service for data planes: sessions (leases, invalidation push),
//! authorization, admission, release, usage and outcome reports.

mod authorize;
pub mod reconcile;
pub mod session;
pub mod wire;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_server::Gateway;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{self, Admission, HeldLease};
use crate::billing::BillingSettings;
use crate::config::Config;
use crate::events::Invalidations;
use crate::storage::Store;
use session::Sessions;

/// What a data-plane session is told at Attach and held to.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub heartbeat_interval: Duration,
    /// Leases of a session gone this long are freed (the data plane is told; admission
    /// enforces it).
    pub lease_grace: Duration,
}

impl SessionSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
            lease_grace: Duration::from_millis(c.lease_grace_ms),
        }
    }
}

/// The engines and state the Gateway service answers from, built by the composition
/// root (`serve_on`).
#[derive(Debug, Clone)]
pub struct GatewayParts {
    pub store: Store,
    pub invalidations: Invalidations,
    /// The session table; admission reads it through `SessionLiveness`.
    pub sessions: Sessions,
    pub admission: Admission,
    pub session: SessionSettings,
    /// Pricing and charging of usage reports.
    pub billing: BillingSettings,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Admit waits here after a failover (the reconcile window).
    pub grants: reconcile::GrantHold,
}

#[derive(Debug, Clone)]
pub struct GatewayService {
    parts: GatewayParts,
    /// Session tasks run here; the composition root waits for them at shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Random per process start: a data plane that sees a new epoch drops its whole
    /// cache, since invalidations published while it was away were lost.
    epoch: u64,
}

impl GatewayService {
    pub fn new(parts: GatewayParts, tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            parts,
            tasks,
            shutdown,
            epoch: rand::random::<u64>(),
        }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.parts.sessions
    }

    pub fn admission(&self) -> &Admission {
        &self.parts.admission
    }
}

type SessionStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SessionDown, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for GatewayService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(self.parts.session.lease_grace, incoming.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Attach received"))??;
        let attach = match first.and_then(|m| m.msg) {
            Some(pb::session_up::Msg::Attach(a)) => a,
            _ => {
                return Err(Status::invalid_argument(
                    "the first session message must be Attach",
                ));
            }
        };
        if attach.data_plane_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "Attach.data_plane_id must not be empty",
            ));
        }
        // Declared leases are re-adopted before the session starts; the session id is
        // chosen inside `session::run`, so they are held by a provisional owner and
        // handed to the session as its Attached reply goes out (unbound, they are freed
        // after the grace period like any orphan).
        let held: Vec<HeldLease> = attach.held_leases.iter().map(HeldLease::from).collect();
        let adoption = self.parts.admission.adopt(&held);
        let invalidations = session::subscribe(&self.parts.invalidations);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        self.tasks.spawn(session::run(
            self.parts.sessions.clone(),
            self.parts.session.clone(),
            self.epoch,
            attach,
            incoming,
            invalidations,
            tx,
            self.shutdown.clone(),
            adoption.adopted_lease_ids.clone(),
        ));
        let engine = self.parts.admission.clone();
        let provisional = adoption.provisional_owner;
        let has_adopted = !adoption.adopted_lease_ids.is_empty();
        let stream = futures::StreamExt::inspect(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            move |msg| {
                if has_adopted
                    && let Ok(pb::SessionDown {
                        msg: Some(pb::session_down::Msg::Attached(a)),
                    }) = msg
                {
                    engine.bind_adopted(&provisional, &a.session_id);
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let resp = authorize::authorize(&self.parts.store, &request.get_ref().key_hash).await?;
        Ok(Response::new(resp))
    }

    async fn admit(
        &self,
        request: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        let req = admission::AdmitRequest::from(request.into_inner());
        self.parts.grants.wait().await;
        let started = std::time::Instant::now();
        let (result, queued) =
            admission::queue_time::measure(self.parts.admission.admit(req)).await;
        let m = &self.parts.metrics.admit;
        m.latency.observe(started.elapsed().as_secs_f64());
        m.queued.observe(queued.as_secs_f64());
        let outcome = match &result {
            Ok(_) => "granted",
            Err(admission::AdmitError::Rejected(r)) => r.code.name(),
            Err(admission::AdmitError::UnknownSession) => "unknown_session",
            Err(admission::AdmitError::InvalidArgument(_)) => "invalid_argument",
        };
        m.decisions
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        let mut resp = wire::admit_response(result)?;
        if let Some(pb::admit_response::Result::Lease(l)) = &mut resp.result {
            l.queued_us = i64::try_from(queued.as_micros()).unwrap_or(i64::MAX);
        }
        Ok(Response::new(resp))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let req = request.into_inner();
        self.parts
            .admission
            .release(&req.session_id, req.lease_ids.iter().map(String::as_str));
        self.parts
            .admission
            .release_requests(req.request_ids.iter().map(String::as_str));
        self.parts
            .admission
            .settled(req.unbilled_request_ids.iter().map(String::as_str));
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let resp = crate::billing::report_usage(
            &self.parts.store,
            &self.parts.invalidations,
            &self.parts.billing,
            &self.parts.metrics.billing,
            request.into_inner().records,
            tollgate_shared::now_ms(),
        )
        .await?;
        // Stored: these requests need no estimate any more.
        let landed = resp.acked_request_ids.iter().map(String::as_str);
        let dead = resp.dead_lettered.iter().map(|d| d.request_id.as_str());
        self.parts.admission.settled(landed.chain(dead));
        Ok(Response::new(resp))
    }

    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let outcome = wire::outcome(request.into_inner())?;
        self.parts.admission.report_outcome(outcome).await?;
        Ok(Response::new(pb::ReportOutcomeResponse {}))
    }

    async fn record_response(
        &self,
        request: Request<pb::RecordResponseRequest>,
    ) -> Result<Response<pb::RecordResponseResponse>, Status> {
        let owner = owner(request.get_ref(), tollgate_shared::now_ms());
        self.parts.admission.record_response(owner)?;
        Ok(Response::new(pb::RecordResponseResponse {}))
    }

    async fn record_responses(
        &self,
        request: Request<pb::RecordResponsesRequest>,
    ) -> Result<Response<pb::RecordResponsesResponse>, Status> {
        let now = tollgate_shared::now_ms();
        // Each record is judged alone: one bad record does not cost the others theirs.
        let mut rejected = Vec::new();
        for r in request.into_inner().records {
            if let Err(e) = self.parts.admission.record_response(owner(&r, now)) {
                rejected.push(pb::RejectedRecord {
                    response_id: r.response_id,
                    request_id: r.request_id,
                    reason: tollgate_shared::CodedError::public_message(&e),
                });
            }
        }
        Ok(Response::new(pb::RecordResponsesResponse { rejected }))
    }
}

/// The owner a record names, recorded at `now_ms`.
fn owner(r: &pb::RecordResponseRequest, now_ms: i64) -> crate::model::ResponseOwner {
    tracing::debug!(
        request_id = r.request_id,
        response_id = r.response_id,
        account_id = r.account_id,
        "response recorded"
    );
    crate::model::ResponseOwner {
        response_id: r.response_id.clone(),
        account_id: r.account_id,
        user_id: r.user_id,
        created_at_ms: now_ms,
    }
}
