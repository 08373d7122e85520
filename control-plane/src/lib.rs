//! Tollgate control plane: owns durable state (storage), live shared state (sessions,
//! leases), and serves the `Gateway` and `Admin` gRPC services plus health and reflection.
//!
//! `serve(config, shutdown)` runs a whole control plane in-process; `main.rs` only parses
//! flags, installs logging and waits for a signal.

pub mod admin;
pub mod admission;
pub mod billing;
pub mod cli;
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

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_shared::proto::{
    FILE_DESCRIPTOR_SET, admin::v1::admin_server::AdminServer,
    gateway::v1::gateway_server::GatewayServer,
};
use tonic::transport::Server;

pub use config::Config;
pub use error::{Error, Result};

use crate::events::Invalidations;
use crate::storage::Store;

/// Binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    serve_on(config, listener, shutdown).await
}

/// Serves on an already bound listener (tests bind `127.0.0.1:0` and read the port).
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

    let gateway = gateway::GatewayService::new(
        store.clone(),
        invalidations.clone(),
        gateway::SessionSettings::from_config(&config),
        shutdown.clone(),
    );
    let admin = admin::AdminService::new(admin::AdminContext::new(
        store.clone(),
        invalidations.clone(),
        &config,
    ));
    let auth = admin::AdminAuth::new(&resolved.admin_token);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<GatewayServer<gateway::GatewayService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

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

    tracing::info!(%addr, dialect = ?store.dialect(), tls = transport.is_tls(), "control plane serving");
    let health_port = Server::builder().add_service(health_service.clone());
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GatewayServer::with_interceptor(
            gateway.clone(),
            transport.gateway_guard(),
        ))
        .add_service(AdminServer::with_interceptor(admin, auth));
    let result = transport.serve(router, health_port, shutdown.clone()).await;
    gateway.shutdown().await;
    store.close().await;
    tracing::info!("control plane stopped");
    result.map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}
