//! Binary: parse flags, install logging, serve until SIGINT/SIGTERM.

use clap::Parser;
use tokio_util::sync::CancellationToken;

// Most of a request's CPU besides I/O is small allocations (bodies, JSON values, headers);
// mimalloc's thread-local free lists make them cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = tollgate_control_plane::Config::parse();
    tollgate_shared::telemetry::init_logging(config.log_json);
    let shutdown = CancellationToken::new();
    let server = tollgate_control_plane::serve(config, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.map_err(Into::into),
        () = tollgate_shared::signal::terminated() => {
            tracing::info!("shutdown signal received, draining");
            shutdown.cancel();
        }
    }
    server.await.map_err(Into::into)
}
