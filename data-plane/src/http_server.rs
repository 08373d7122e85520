//! Serving a hyper service on a listener with HTTP/1.1 and HTTP/2 (auto-detected), and a
//! graceful drain: on shutdown stop accepting, let open connections finish (in-flight
//! requests and SSE streams) up to the drain timeout, then drop what remains.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::conn_limits::ConnectionCaps;
use crate::metrics::{Metrics, ReasonLabels};

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Protocol limits of one listener, and the connection caps of the client-facing one.
#[derive(Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_reset_streams: usize,
    pub h2_max_local_error_resets: usize,
    pub caps: Option<Arc<ConnectionCaps>>,
    pub metrics: Option<Arc<Metrics>>,
}

impl Limits {
    pub fn from_config(edge: &EdgeConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(edge.header_read_timeout_ms),
            max_header_bytes: edge.max_header_bytes,
            h2_max_concurrent_streams: edge.h2_max_concurrent_streams,
            h2_max_pending_reset_streams: edge.h2_max_pending_reset_streams,
            h2_max_local_error_resets: edge.h2_max_local_error_resets,
            caps: None,
            metrics: None,
        }
    }

    fn builder(&self) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(self.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(self.h2_max_local_error_resets);
        builder
    }

    /// Counts a connection that a header limit ended.
    fn count_end(&self, error: &(dyn std::error::Error + 'static)) {
        let Some(e) = error.downcast_ref::<hyper::Error>() else {
            return;
        };
        if e.is_timeout() {
            self.count_reason("header_timeout");
        } else if e.is_parse_too_large() {
            self.count_reason("header_too_large");
        }
    }

    fn count_reason(&self, reason: &'static str) {
        let Some(metrics) = &self.metrics else { return };
        metrics
            .edge
            .connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Serves `service` on `listener`. The service gets each request with the client's
/// address in its `Peer` extension.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    name: &'static str,
    limits: Limits,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = limits.builder();
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
        let permit = match &limits.caps {
            Some(caps) => match caps.admit(peer.ip()) {
                Some(p) => Some(p),
                // Over a cap: closed before reading anything.
                None => continue,
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(crate::stack::Peer(peer));
            tower::ServiceExt::oneshot(svc.clone(), req)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let limits = limits.clone();
        // Connection tasks are owned by `graceful`, which waits for them below.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _permit = permit;
            // A client that opens a connection and sends nothing never reaches hyper's
            // header timer (the protocol sniffing waits for bytes): give it the same time.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                limits.count_reason("header_timeout");
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                limits.count_end(&*e);
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
