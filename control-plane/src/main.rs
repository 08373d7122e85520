//! Binary: parse flags, install logging and tracing, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

// Most of a request's CPU besides I/O is small allocations (bodies, JSON values, headers);
// mimalloc's thread-local free lists make them cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = tollgate_control_plane::Config::parse();
    if let Err(e) = tollgate_shared::telemetry::init(&tollgate_shared::telemetry::Options {
        service: "tollgate-control-plane",
        json: config.log_json,
        otlp_endpoint: config.otlp_endpoint.clone(),
        filter: None,
    }) {
        eprintln!("tollgate-control-plane: telemetry: {e}");
        return ExitCode::FAILURE;
    }
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
    // The spans of the drain itself included.
    tollgate_shared::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One line on stderr, exit status 1 (a port in use, a bad setting).
        Err(e) => tollgate_shared::exit::failed("tollgate-control-plane", &e),
    }
}
