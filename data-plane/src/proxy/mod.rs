//! The client-facing proxy: routes, the auth cache, and (with the Responses flow) the
//! request pipeline.

pub mod auth_info;
pub mod body;
pub mod cache;
pub mod checks;
pub mod errors;
pub mod extract;
pub mod sse;
pub mod transform;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tollgate_shared::ErrorCode;
use tollgate_shared::proto::gateway::v1 as pb;

use crate::control::session::InvalidationSink;
use crate::http_server::Body;
use crate::metrics::{Metrics, RequestLabels};
use errors::ClientError;

#[derive(Clone)]
pub struct Proxy {
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }

    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let _ = peer;
        let (route, resp) = match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/responses" | "/responses" | "/openai/v1/responses")
            | (&Method::GET, "/v1/models") => (
                "responses",
                ClientError::new(
                    ErrorCode::Unavailable,
                    "The Responses flow is not enabled in this build",
                )
                .into_response(),
            ),
            _ => (
                "unknown",
                ClientError::new(
                    ErrorCode::NotFound,
                    format!("Unknown route: {} {}", req.method(), req.uri().path()),
                )
                .into_response(),
            ),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                status: resp.status().as_u16(),
            })
            .inc();
        Ok(resp)
    }
}

/// Receives invalidations from the control-plane session.
pub struct CacheSink {
    metrics: Arc<Metrics>,
}

impl CacheSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl InvalidationSink for CacheSink {
    fn invalidate(&self, _msg: &pb::Invalidate) {
        self.metrics.invalidations.inc();
    }

    fn attached(&self, _epoch: u64) {
        self.metrics.session_attaches.inc();
    }
}
