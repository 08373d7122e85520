//! The admin port: liveness, readiness and Prometheus metrics, outside API-key auth.
//! Ready = not draining, and attached to the control plane or detached for less than
//! the outage grace: a control-plane failover (seconds) must not take every data-plane
//! endpoint out of service; new admissions wait for the new leader meanwhile.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::control::session::SessionState;
use crate::http_server::Body;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Health {
    pub session: watch::Receiver<SessionState>,
    /// How long a lost session (after a first attach) keeps the data plane ready.
    pub outage_grace: std::time::Duration,
    pub draining: tokio_util::sync::CancellationToken,
    pub metrics: Arc<Metrics>,
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

impl Health {
    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
                "text/plain",
            ));
        }
        Ok(match req.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n", "text/plain"),
            "/readyz" => {
                let attached = {
                    let s = self.session.borrow();
                    s.attached()
                        || (s.attaches > 0
                            && s.detached_at
                                .is_some_and(|t| t.elapsed() < self.outage_grace))
                };
                if self.draining.is_cancelled() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
                } else if attached {
                    text(StatusCode::OK, "ready\n", "text/plain")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not attached to the control plane\n",
                        "text/plain",
                    )
                }
            }
            "/metrics" => {
                let accept = req
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (body, content_type) = self.metrics.render(accept);
                text(StatusCode::OK, body, content_type)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        })
    }
}
