//! The client-facing proxy: routes, the auth cache and the Responses flow.

pub mod auth_info;
pub mod body;
pub mod body_budget;
pub mod body_read;
pub mod cache;
pub mod chat;
pub mod checks;
pub mod errors;
pub mod extract;
pub mod models;
pub mod responses;
pub mod sse;
pub mod throttle;
pub mod transform;

#[cfg(test)]
mod fuzz_tests;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tollgate_shared::ErrorCode;

use crate::control::domain::{HeldLease, Invalidation};
use crate::control::leases::LeaseRegistry;
use crate::control::session::SessionHooks;
use crate::http_server::Body;
use crate::metrics::Metrics;
use crate::stack::Peer;
use cache::AuthCache;
use chat::Front;
use errors::ClientError;
use responses::Flow;

#[derive(Clone)]
pub struct Proxy {
    flow: Arc<Flow>,
}

/// The route a request takes, as a metrics label.
pub fn route_name(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::POST, "/v1/responses" | "/responses" | "/openai/v1/responses") => "responses",
        (
            &Method::POST,
            "/v1/chat/completions" | "/chat/completions" | "/openai/v1/chat/completions",
        ) => "chat_completions",
        (&Method::GET, "/v1/models" | "/models" | "/openai/v1/models") => "models",
        (m, p) if responses::operations::parse(m, p).is_some() => "response_operation",
        _ => "unknown",
    }
}

impl Proxy {
    pub fn new(flow: Arc<Flow>) -> Self {
        Self { flow }
    }

    /// Routes one request. The client's address comes from the `Peer` extension the
    /// server sets (loopback if absent, which only in-process callers do).
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        let peer = req
            .extensions()
            .get::<Peer>()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |p| p.0);
        match route_name(req.method(), req.uri().path()) {
            "responses" => self.flow.clone().handle(req, peer).await,
            "chat_completions" => {
                self.flow
                    .clone()
                    .handle_front(req, peer, Front::ChatCompletions)
                    .await
            }
            "models" => models::handle(&self.flow, &req, peer).await,
            "response_operation" => self.flow.handle_operation(req, peer).await,
            _ => ClientError::new(
                ErrorCode::NotFound,
                format!("Unknown route: {} {}", req.method(), req.uri().path()),
            )
            .into_response(),
        }
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
    fn invalidate(&self, msg: &Invalidation) {
        self.metrics.invalidations.inc();
        self.cache.invalidate(msg);
    }

    fn attached(&self, epoch: u64) {
        self.metrics.session_attaches.inc();
        self.cache.attached(epoch);
    }

    fn held_leases(&self) -> Vec<HeldLease> {
        self.leases.held()
    }
}
