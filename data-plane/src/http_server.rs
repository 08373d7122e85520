//! Serving a hyper service on a listener with HTTP/1.1 and HTTP/2 (auto-detected), and a
//! graceful drain: on shutdown stop accepting, let open connections finish (in-flight
//! requests and SSE streams) up to the drain timeout, then drop what remains.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Serves `service` on `listener`. The service gets each request with the client's
/// address in its `Peer` extension.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    name: &'static str,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(crate::stack::Peer(peer));
            tower::ServiceExt::oneshot(svc.clone(), req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
        let conn = graceful.watch(conn.into_owned());
        // Connection tasks are owned by `graceful`, which waits for them below.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(server = name, "all connections drained"),
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(server = name, "drain timeout reached; closing remaining connections");
        }
    }
}
