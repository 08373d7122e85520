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
use tonic::transport::Server;

pub use config::Config;
pub use error::{Error, Result};

use crate::admission::{Admission, AdmissionSettings};
use crate::billing::BillingSettings;
use crate::events::Invalidations;
use crate::gateway::session::Sessions;
use crate::gateway::{GatewayParts, GatewayService, SessionSettings};
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
    let gateway = GatewayService::new(
        gateway_parts(&config, &store, &invalidations, &tasks, &background),
        tasks.clone(),
        end_sessions.clone(),
    );
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
    let (health, grpc_health) = grpc_health_service().await;
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;

    tracing::info!(%addr, dialect = ?store.dialect(), tls = transport.is_tls(), "control plane serving");
    let health_port = Server::builder().add_service(grpc_health.clone());
    let router = Server::builder()
        .add_service(grpc_health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GatewayServer::with_interceptor(
            gateway,
            transport.gateway_guard(),
        ))
        .add_service(admin);
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
    // Telemetry: logs are written synchronously, so nothing is buffered today; an
    // exporter (OTLP traces/metrics) flushes here, bounded by `plan.deadline`.
    tracing::info!(
        took_ms = plan.started.elapsed().as_millis(),
        "control plane stopped"
    );
    result.map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}

/// The engines behind the Gateway service, with their background tasks on `tasks`:
/// the token refresher, admission (lease reaper, sticky pruning, last-used writes) and
/// the snapshot admission reads through (applies invalidations).
fn gateway_parts(
    config: &Config,
    store: &Store,
    invalidations: &Invalidations,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> GatewayParts {
    let sessions = Sessions::default();
    let tokens = TokenRefresher::new(
        store.clone(),
        invalidations.clone(),
        OAuthSettings::from_config(config),
        tasks.clone(),
        shutdown.clone(),
    );
    tasks.spawn(tokens.clone().run_background());
    let admission = Admission::new(
        store.clone(),
        invalidations.clone(),
        Arc::new(sessions.clone()),
        tokens,
        AdmissionSettings::from_config(config),
    );
    tasks.spawn(admission.clone().run_background(shutdown.clone()));
    tasks.spawn(admission.snapshot().clone().follow(shutdown.clone()));
    GatewayParts {
        store: store.clone(),
        invalidations: invalidations.clone(),
        sessions,
        admission,
        session: SessionSettings::from_config(config),
        billing: BillingSettings::from_config(config),
    }
}

/// The standard gRPC health-checking service (`grpc.health.v1`), reporting both
/// services and the server as a whole as serving (until `not_serving`), and its reporter.
async fn grpc_health_service() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<GatewayServer<GatewayService>>()
        .await;
    reporter
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    (reporter, service)
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
