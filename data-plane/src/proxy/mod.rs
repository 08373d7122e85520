//! The client-facing proxy: routes, the auth cache and the Responses flow.

pub mod auth_info;
pub mod body;
pub mod cache;
pub mod checks;
pub mod errors;
pub mod extract;
pub mod models;
pub mod responses;
pub mod sse;
pub mod transform;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tollgate_shared::ErrorCode;
use tollgate_shared::proto::gateway::v1 as pb;

use crate::control::leases::LeaseRegistry;
use crate::control::session::SessionHooks;
use crate::http_server::Body;
use crate::metrics::{Metrics, RequestLabels};
use cache::AuthCache;
use errors::ClientError;
use responses::Flow;

#[derive(Clone)]
pub struct Proxy {
    flow: Arc<Flow>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(flow: Arc<Flow>, metrics: Arc<Metrics>) -> Self {
        Self { flow, metrics }
    }

    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let (route, resp) = match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/responses" | "/responses" | "/openai/v1/responses") => {
                ("responses", self.flow.clone().handle(req, peer).await)
            }
            (&Method::GET, "/v1/models" | "/models" | "/openai/v1/models") => {
                ("models", models::handle(&self.flow, &req, peer).await)
            }
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

/// What the control-plane session exchanges with the proxy: invalidations for the auth
/// cache, and the leases to declare on re-attach.
pub struct Hooks {
    pub cache: AuthCache,
    pub leases: LeaseRegistry,
    pub metrics: Arc<Metrics>,
}

impl SessionHooks for Hooks {
    fn invalidate(&self, msg: &pb::Invalidate) {
        self.metrics.invalidations.inc();
        self.cache.invalidate(msg);
    }

    fn attached(&self, epoch: u64) {
        self.metrics.session_attaches.inc();
        self.cache.attached(epoch);
    }

    fn held_leases(&self) -> Vec<pb::HeldLease> {
        self.leases.held()
    }
}
