//! Binary: parse flags, install logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = tollgate_control_plane::Config::parse();
    tollgate_shared::telemetry::init_logging(config.log_json);
    let shutdown = CancellationToken::new();
    let server = tollgate_control_plane::serve(config, shutdown.clone());
    tokio::pin!(server);
    let result = tokio::select! {
        res = &mut server => res,
        () = tollgate_shared::signal::terminated() => {
            tracing::info!("shutdown signal received, draining");
            shutdown.cancel();
            server.await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One line on stderr, exit status 1 (a port in use, a bad setting).
        Err(e) => tollgate_shared::exit::failed("tollgate-control-plane", &e),
    }
}
