//! Binary: parse flags, install logging, serve until SIGINT/SIGTERM.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = tollgate_control_plane::Config::parse();
    tollgate_shared::telemetry::init(&tollgate_shared::telemetry::Options {
        service: "tollgate-control-plane",
        json: config.log_json,
        otlp_endpoint: config.otlp_endpoint.clone(),
        filter: None,
    })
    .map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let server = tollgate_control_plane::serve(config, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => {
            tollgate_shared::telemetry::shutdown();
            return res.map_err(Into::into);
        }
        () = tollgate_shared::signal::terminated() => {
            tracing::info!("shutdown signal received, draining");
            shutdown.cancel();
        }
    }
    let res = server.await;
    // The spans of the drain itself included.
    tollgate_shared::telemetry::shutdown();
    res.map_err(Into::into)
}
