//! Tollgate control plane: owns durable state (storage), live shared state (sessions,
//! leases), and serves the `Gateway` and `Admin` gRPC services plus health and reflection.
//!
//! `serve(config, shutdown)` runs a whole control plane in-process; `main.rs` only parses
//! flags, installs logging and waits for a signal.

pub mod admin;
pub mod admission;
pub mod billing;
pub mod config;
pub mod crypto;
pub mod error;
pub mod events;
pub mod gateway;
pub mod leadership;
pub mod metrics;
pub mod model;
pub mod oauth;
pub mod storage;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::drain;
use tollgate_shared::proto::{
    FILE_DESCRIPTOR_SET, admin::v1::admin_server::AdminServer,
    gateway::v1::gateway_server::GatewayServer,
};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

pub use config::Config;
pub use error::{Error, Result};

use crate::admission::{Admission, AdmissionSettings};
use crate::billing::BillingSettings;
use crate::events::Invalidations;
use crate::gateway::reconcile::GrantHold;
use crate::gateway::session::Sessions;
use crate::gateway::{GatewayParts, GatewayService, SessionSettings};
use crate::leadership::gate::LeaderOnly;
use crate::leadership::{ElectionSettings, Leadership, Role};
use crate::oauth::{OAuthSettings, TokenRefresher};
use crate::storage::Store;

/// Binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        Error::Config(format!(
            "cannot listen on {} (set --listen / TOLLGATE_LISTEN): {e}",
            config.listen
        ))
    })?;
    serve_on(config, listener, shutdown).await
}

/// Serves on an already bound listener (tests bind `127.0.0.1:0` and read the port).
///
/// The composition root: builds storage, the engines and the services, wires them
/// together, and owns the one task tracker every background task runs on.
pub async fn serve_on(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let resolved = config.resolve()?;
    let mut transport = tls::Transport::new(&resolved.tls, listener)?;
    transport.bind_health_port(config.health_listen).await?;
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| Error::Config(format!("cannot listen on {a}: {e}")))?,
        ),
        None => None,
    };
    let store = Store::connect(&resolved.database_url, resolved.secrets.clone()).await?;
    let invalidations = Invalidations::new();
    let addr: SocketAddr = transport
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;

    let tasks = TaskTracker::new();
    // The engines (token refresher, admission, snapshot) serve in-flight calls to the
    // end of the drain; the data planes' sessions end as soon as it starts.
    let background = CancellationToken::new();
    let end_sessions = CancellationToken::new();
    let leadership = leadership(&config, addr, &tasks);
    let (parts, jobs) = gateway_parts(&config, &store, &invalidations, &tasks, &background);
    if let Some(l) = metrics_listener {
        tracing::info!(addr = ?l.local_addr().ok(), "metrics port serving");
        tasks.spawn(metrics::serve(
            l,
            parts.metrics.clone(),
            tasks.clone(),
            background.clone(),
        ));
    }
    tasks.spawn(report_leadership(
        leadership.clone(),
        parts.metrics.clone(),
        background.clone(),
    ));
    let grants = parts.grants.clone();
    let gateway = GatewayService::new(parts, tasks.clone(), end_sessions.clone());
    tasks.spawn(lead(
        leadership.clone(),
        jobs,
        grants,
        config.reconcile_window_ms,
    ));
    let admin = admin::AdminService::new(admin::AdminContext::new(
        store.clone(),
        invalidations.clone(),
        &config,
    ));
    let admin = admin::AdminGuard::new(
        AdminServer::new(admin),
        admin::Authenticator::new(
            &resolved.admin_token,
            store.clone(),
            config.admin_cert_scopes.clone(),
        ),
    );
    let (health, grpc_health) = grpc_health_service(&leadership, &tasks, &background).await;
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;

    tracing::info!(%addr, dialect = ?store.dialect(), tls = transport.is_tls(), "control plane serving");
    let health_port = Server::builder().add_service(grpc_health.clone());
    let router = Server::builder()
        // A span per call, continuing the caller's `traceparent` (a data plane's Admit
        // is a child of its request's trace).
        .trace_fn(grpc_span)
        .add_service(grpc_health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            LeaderOnly::new(GatewayServer::new(gateway), leadership.subscribe()),
            transport.gateway_guard(),
        ))
        .add_service(LeaderOnly::new(admin, leadership.subscribe()));
    // A leader that lost its lease stops: its live state must not serve again. It
    // drains like a SIGTERM and `serve` returns an error (the process exits and its
    // supervisor restarts it as a fresh standby).
    let lost = CancellationToken::new();
    tasks.spawn(stop_when_deposed(
        leadership.clone(),
        shutdown.clone(),
        lost.clone(),
    ));
    let stop_accepting = CancellationToken::new();
    let cut = CancellationToken::new();
    let server = transport.serve(router, health_port, stop_accepting.clone(), cut.clone());
    tokio::pin!(server);
    let failed = tokio::select! {
        r = &mut server => Some(r),
        () = shutdown.cancelled() => None,
    };
    // The drain (steps and instants: `tollgate_shared::drain`); the budget starts now.
    let plan = drain::Plan::new(tokio::time::Instant::now(), config.drain_timeout());
    let result = match failed {
        Some(r) => r,
        None => {
            tracing::info!(
                budget_secs = config.drain_timeout_secs,
                "draining: NOT_SERVING, ending sessions, finishing in-flight calls"
            );
            // First, every health check (both ports) fails: readiness drops and data
            // planes stop choosing this process.
            not_serving(&health).await;
            // Leadership (etcd) is given up here, so a standby takes over at once.
            leadership.resign();
            // Then no new connections (HTTP/2 GOAWAY) and the sessions end: the data
            // planes re-attach (to the new leader) declaring the leases they hold.
            stop_accepting.cancel();
            end_sessions.cancel();
            match drain::until(plan.cut_at, &mut server).await {
                Some(r) => r,
                None => {
                    cut.cancel();
                    drain::until(plan.ended_by, &mut server)
                        .await
                        .unwrap_or(Ok(()))
                }
            }
        }
    };
    // Background engines and session tasks stop with the server.
    leadership.resign();
    shutdown.cancel();
    end_sessions.cancel();
    background.cancel();
    tasks.close();
    if drain::until(plan.stopped_by, tasks.wait()).await.is_none() {
        tracing::error!("drain: background tasks overran the budget");
    }
    if drain::until(plan.deadline, store.close()).await.is_none() {
        tracing::error!("drain: closing storage overran the budget");
    }
    // Telemetry: logs are written synchronously; buffered trace spans are exported
    // now, bounded by `plan.deadline`.
    tollgate_shared::telemetry::flush_until(plan.deadline).await;
    if lost.is_cancelled() {
        tracing::error!("control plane stopped: leadership lost");
        return Err(Error::Internal("leadership lost".into()));
    }
    tracing::info!(
        took_ms = plan.started.elapsed().as_millis(),
        "control plane stopped"
    );
    result.map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}

/// The engines behind the Gateway service and the metrics over them. The snapshot
/// admission reads through (applies invalidations) runs on `tasks` on every replica; the
/// jobs that must run once (the token refresher; admission's lease reaper, sticky
/// pruning and last-used writes; the estimates of leases that ended without a usage
/// record) are returned, for `lead` to start on the leader only.
fn gateway_parts(
    config: &Config,
    store: &Store,
    invalidations: &Invalidations,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> (GatewayParts, futures::future::BoxFuture<'static, ()>) {
    let sessions = Sessions::default();
    let tokens = TokenRefresher::new(
        store.clone(),
        invalidations.clone(),
        OAuthSettings::from_config(config),
        tasks.clone(),
        shutdown.clone(),
    );
    let token_refreshes = tokens.outcomes();
    let refresher = tokens.clone().run_background();
    let admission = Admission::new(
        store.clone(),
        invalidations.clone(),
        Arc::new(sessions.clone()),
        tokens,
        AdmissionSettings::from_config(config),
    );
    let reaper = admission.clone().run_background(shutdown.clone());
    tasks.spawn(admission.snapshot().clone().follow(shutdown.clone()));
    // Estimates for leases reaped without a usage record: they charge, so leader only.
    let recovered = crate::billing::recovered::run(
        admission.clone(),
        store.clone(),
        invalidations.clone(),
        BillingSettings::from_config(config),
        shutdown.clone(),
    );
    let jobs = Box::pin(async move {
        tokio::join!(refresher, reaper, recovered);
    });
    let mut metrics = metrics::Metrics::new();
    metrics.observe(&admission, &sessions, token_refreshes);
    let parts = GatewayParts {
        metrics: Arc::new(metrics),
        store: store.clone(),
        invalidations: invalidations.clone(),
        sessions,
        admission,
        session: SessionSettings::from_config(config),
        billing: BillingSettings::from_config(config),
        grants: GrantHold::default(),
    };
    (parts, jobs)
}

/// Campaigns through etcd when configured; otherwise this process leads alone.
fn leadership(config: &Config, addr: SocketAddr, tasks: &TaskTracker) -> Leadership {
    if config.etcd_endpoints.is_empty() {
        return Leadership::single();
    }
    let settings = ElectionSettings {
        endpoints: config.etcd_endpoints.clone(),
        key: config.election_key.clone(),
        advertise: config.advertised(addr),
        lease_ttl: std::time::Duration::from_secs(config.leader_lease_ttl_s),
    };
    Leadership::campaign(settings, tasks)
}

/// Once elected: holds grants back for the reconcile window (the data planes re-attach
/// and declare their leases first), then runs the once-only background jobs.
async fn lead(
    leadership: Leadership,
    jobs: futures::future::BoxFuture<'static, ()>,
    grants: GrantHold,
    reconcile_window_ms: u64,
) {
    let Some(term) = leadership.leading().await else {
        return;
    };
    if leadership.is_elected() {
        grants.hold_for(std::time::Duration::from_millis(reconcile_window_ms));
    }
    tracing::info!(term, "leading: background jobs started");
    jobs.await;
}

/// Stops the server when this replica stops leading while not shutting down.
async fn stop_when_deposed(
    leadership: Leadership,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = leadership.stepped_down() => {
            if !shutdown.is_cancelled() {
                lost.cancel();
                shutdown.cancel();
            }
        }
    }
}

fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = path,
        otel.kind = "server",
        rpc.method = path,
        trace_id = tracing::field::Empty,
    );
    tollgate_shared::telemetry::continue_trace(&span, req.headers());
    if let Some(id) = tollgate_shared::telemetry::trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// Keeps the leadership gauges in step with this replica's role until `stop`.
async fn report_leadership(
    leadership: Leadership,
    metrics: Arc<metrics::Metrics>,
    stop: CancellationToken,
) {
    let mut role = leadership.subscribe();
    let mut term = 0;
    loop {
        let current = role.borrow_and_update().clone();
        match current {
            leadership::Role::Leader { term: t } => {
                term = t;
                metrics.leadership.set(true, t);
            }
            leadership::Role::Standby { .. } | leadership::Role::SteppedDown => {
                metrics.leadership.set(false, term);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = role.changed() => if changed.is_err() { return },
        }
    }
}

/// The standard gRPC health-checking service (`grpc.health.v1`), and its reporter: both
/// services and the server as a whole are SERVING on the leader and NOT_SERVING on a
/// standby (so a Kubernetes Service routes to the leader alone), following the role on
/// `tasks` until `stop` (and NOT_SERVING from `not_serving` on).
async fn grpc_health_service(
    leadership: &Leadership,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let mut role = leadership.subscribe();
    let now = role.borrow_and_update().clone();
    set_health(&reporter, &now).await;
    let (follower, stop) = (reporter.clone(), stop.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = role.changed() => if changed.is_err() { break },
            }
            let now = role.borrow_and_update().clone();
            set_health(&follower, &now).await;
        }
    });
    (reporter, service)
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, role: &Role) {
    let status = match role {
        Role::Leader { .. } => tonic_health::ServingStatus::Serving,
        Role::Standby { .. } | Role::SteppedDown => tonic_health::ServingStatus::NotServing,
    };
    reporter
        .set_service_status(GatewayServer::<GatewayService>::NAME, status)
        .await;
    reporter
        .set_service_status(AdminServer::<admin::AdminService>::NAME, status)
        .await;
    reporter.set_service_status("", status).await;
}

/// The drain's first step: every service, and the server as a whole, NOT_SERVING.
async fn not_serving(reporter: &tonic_health::server::HealthReporter) {
    reporter
        .set_not_serving::<GatewayServer<GatewayService>>()
        .await;
    reporter
        .set_not_serving::<AdminServer<admin::AdminService>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

/// Server reflection (v1 and v1alpha) over our services and the health service.
fn reflection_services() -> Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    Ok((reflection_v1, reflection_v1alpha))
}
