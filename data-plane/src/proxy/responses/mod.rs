//! The Responses flow (responses-flow.md): authenticate, read and validate the body,
//! then — in a tracked task that outlives a departed client, so usage is still billed —
//! admission, forwarding with failover, and delivery.
//!
//! Phases (see data-plane/README.md for the chart):
//! auth (cache → checks) → body → admit (pings while waiting) → forward → failover? →
//! deliver (stream / JSON) → release lease → report usage.

mod admit;
mod affinity;
mod deliver;
pub mod downstream;
pub mod failover;
pub mod operations;
pub mod outbound;
mod timing;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, Response};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::ErrorCode;
use tracing::Instrument;

use super::auth_info::KeyInfo;
use super::body_budget::{BodyBudget, Charge};
use super::cache::AuthCache;
use super::chat::Front;
use super::errors::ClientError;
use super::throttle::InvalidKeyThrottle;
use super::{body, body_read, checks, extract, transform};
use crate::config::FlowConfig;
use crate::control::ControlClient;
use crate::control::domain::{AccountLease, Outcome};
use crate::control::leases::{LeaseGuard, LeaseRegistry};
use crate::control::response_records::RecordSender;
use crate::control::session::SessionState;
use crate::control::usage::UsageSender;
use crate::http_server::Body;
use crate::metrics::Metrics;
use downstream::Downstream;
use failover::UpstreamFailure;
use upstream::UpstreamPool;

/// Bundled default instructions for clients other than Codex CLI on subscription
/// accounts (the ChatGPT backend refuses a request without instructions).
const DEFAULT_INSTRUCTIONS: &str = include_str!("default_instructions.txt");

pub struct Settings {
    pub body_limit: usize,
    pub ping_interval: Duration,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    /// Longest wait for an upstream's response head.
    pub header_timeout: Duration,
    /// Longest read of a non-streaming upstream body after its head.
    pub body_timeout: Duration,
    pub line_limit: usize,
    pub max_switches: u32,
    pub instructions: String,
    pub default_codex_model: String,
    pub default_originator: String,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an admission waits for the control plane through a failover.
    pub failover_wait: Duration,
}

impl Settings {
    pub fn from_config(c: &FlowConfig) -> Result<Self, crate::Error> {
        let instructions = match &c.default_instructions_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| crate::Error::Config(format!("cannot read {}: {e}", p.display())))?,
            None => DEFAULT_INSTRUCTIONS.to_owned(),
        };
        Ok(Self {
            body_limit: c.body_limit_bytes,
            ping_interval: Duration::from_secs(c.ping_interval_secs),
            keepalive: Duration::from_millis(c.stream_keepalive_ms),
            idle_timeout: Duration::from_millis(c.stream_idle_timeout_ms),
            header_timeout: Duration::from_millis(c.upstream_header_timeout_ms),
            body_timeout: Duration::from_millis(c.upstream_body_timeout_ms),
            line_limit: c.stream_line_limit_bytes,
            max_switches: c.max_account_switches,
            instructions,
            default_codex_model: c.default_codex_model.clone(),
            default_originator: c.default_originator.clone(),
            trusted_proxies: c
                .trusted_proxies
                .iter()
                .filter_map(|p| super::auth_info::parse_net(p))
                .collect(),
            failover_wait: Duration::from_millis(c.failover_wait_ms),
        })
    }
}

/// Everything a request needs, shared by all requests.
pub struct Flow {
    pub cache: AuthCache,
    pub control: ControlClient,
    pub session: watch::Receiver<SessionState>,
    pub settings: Settings,
    pub upstream: UpstreamPool,
    pub leases: LeaseRegistry,
    pub usage: UsageSender,
    /// Response-id records (affinity), sent in batches.
    pub records: RecordSender,
    /// Invalid API keys per client IP (refused with 429 before the lookup).
    pub throttle: InvalidKeyThrottle,
    pub metrics: Arc<Metrics>,
    /// Request-body bytes held at once, in all and per key.
    pub body_budget: Arc<BodyBudget>,
    /// Request tasks; waited for on shutdown before usage is flushed.
    pub tasks: TaskTracker,
    /// Cancelled at the drain's cut: requests still open end at once (streams with an
    /// SSE error event) and report their usage.
    pub drain_cut: CancellationToken,
}

/// One validated request.
pub struct Ctx {
    /// The gateway's id (`request_id.rs`): `x-request-id`, the usage record's id.
    pub request_id: String,
    /// The client's own `x-request-id`, sanitised; empty = none.
    pub client_request_id: String,
    pub key: Arc<KeyInfo>,
    pub model: String,
    pub stream: bool,
    pub codex: bool,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
    pub started: Instant,
    pub started_ms: i64,
    pub session_hash: String,
    pub body: Map<String, Value>,
    /// The body's charge to the memory budget, held as long as `body` is.
    pub body_charge: Option<Charge>,
    pub raw_len: usize,
    pub user_agent: String,
    pub reasoning_effort: String,
    /// A lease was granted for it, and whether its usage record was queued: a request
    /// that held a lease and ends without one tells the control plane (`unbilled`).
    pub leased: AtomicBool,
    pub billed: AtomicBool,
    /// The added-latency clock (`timing.rs`).
    pub timing: timing::Timing,
}

impl Ctx {
    /// The upstream has answered: no further attempt needs the body or the client's
    /// headers (only an attempt's upstream request reads them), so their memory and the
    /// body's charge to the budget are given back now rather than at the end of a stream.
    /// The headers' values point into the client connection's first read buffer (hyper
    /// parses without copying): held, they would keep that whole buffer for the stream.
    pub fn release_body(&mut self) {
        self.body = Map::new();
        self.body_charge = None;
        self.headers = HeaderMap::new();
    }
}

impl Flow {
    /// Authenticates a request: the key's info, or the client error to answer.
    pub async fn authenticate(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<(Arc<KeyInfo>, IpAddr), ClientError> {
        let key = extract::api_key(query, headers)?;
        let ip = extract::client_ip(peer, headers, &self.settings.trusted_proxies);
        if let Some(secs) = self.throttle.throttled(ip) {
            self.metrics.edge.invalid_keys_throttled.inc();
            let mut e = ClientError::of(ErrorCode::TooManyInvalidKeys);
            e.retry_after_secs = Some(secs);
            return Err(e);
        }
        let info = match self.cache.lookup(&extract::key_hash(&key)).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                self.throttle.record_invalid(ip);
                return Err(ClientError::of(ErrorCode::InvalidApiKey));
            }
            Err(e) => {
                tracing::warn!(error = %e, "authorize call failed");
                return Err(ClientError::new(
                    ErrorCode::Unavailable,
                    "Authorization service temporarily unavailable, please retry later",
                ));
            }
        };
        checks::check(&info, ip, tollgate_shared::now_ms())?;
        Ok((info, ip))
    }

    pub async fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.handle_front(req, peer, Front::Responses).await
    }

    /// One request from a client speaking `front`'s API: its body becomes a Responses
    /// body here, and its answer is shaped back on the way out (the `Downstream`).
    pub async fn handle_front(
        self: Arc<Self>,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        front: Front,
    ) -> Response<Body> {
        let started = Instant::now();
        let ids = crate::request_id::RequestIds::of(&req);
        let (parts, body) = req.into_parts();
        let (key, client_ip) = match self
            .authenticate(parts.uri.query(), &parts.headers, peer)
            .await
        {
            Ok(k) => k,
            Err(e) => return e.into_response(),
        };
        let charge = self.body_budget.charge(key.key_id);
        let (raw, body_charge) =
            match body_read::read(&parts.headers, body, self.settings.body_limit, charge).await {
                Ok(read) => read,
                Err(e) => return e.into_response(),
            };
        let (parsed, reply) = match front.parse(&raw) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        drop(raw);
        let codex = body::is_codex_cli(&parts.headers);
        // Default instructions depend on the account kind, known only per attempt
        // (`Flow::upstream_request`).
        let json = parsed.json;
        let ctx = Ctx {
            request_id: ids.id,
            client_request_id: ids.client,
            session_hash: body::session_hash(&parts.headers, &json).unwrap_or_default(),
            reasoning_effort: body::reasoning_effort(&json),
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
            key,
            model: parsed.model,
            stream: parsed.stream,
            codex,
            headers: parts.headers,
            client_ip,
            started,
            timing: timing::Timing::new(started),
            started_ms: tollgate_shared::now_ms(),
            body: json,
            body_charge: Some(body_charge),
            raw_len: parsed.raw_len,
            leased: AtomicBool::new(false),
            billed: AtomicBool::new(false),
        };
        let (head_tx, head_rx) = oneshot::channel();
        let flow = self.clone();
        // The run stays in the request's span (`stack.rs`: it carries the request ids and
        // the trace id into its logs; its Admit and upstream calls are children of the
        // client's trace).
        self.tasks.spawn(
            async move {
                flow.run(ctx, Downstream::new(head_tx).reply_as(reply))
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        head_rx.await.unwrap_or_else(|_| {
            ClientError::new(ErrorCode::Internal, "The request failed unexpectedly").into_response()
        })
    }

    /// Admission, forwarding with failover, delivery. Runs to the end even when the
    /// client leaves, so the upstream's usage is still reported; a request that held a
    /// lease and reported none says so (the control plane would estimate it otherwise,
    /// should this process die).
    async fn run(self: Arc<Self>, mut ctx: Ctx, ds: Downstream) {
        self.run_attempts(&mut ctx, ds).await;
        if ctx.leased.load(Ordering::Relaxed) && !ctx.billed.load(Ordering::Relaxed) {
            self.leases.unbilled(&ctx.request_id);
        }
    }

    async fn run_attempts(&self, ctx: &mut Ctx, mut ds: Downstream) {
        let mut excluded: Vec<i64> = Vec::new();
        let mut last_failure: Option<UpstreamFailure> = None;
        // The lease of the previous attempt holds this request's user slot until the
        // next admission (which shares it) has answered.
        let mut previous: Option<LeaseGuard> = None;
        for _attempt in 0..=self.settings.max_switches {
            let lease = match self.admit(ctx, &excluded, previous.as_ref(), &mut ds).await {
                Ok(l) => l,
                Err(e) => {
                    // After a failed attempt, running out of accounts means the
                    // switches ran out: answer with the mapping table.
                    let err = match (&last_failure, e.code) {
                        (
                            Some(last),
                            ErrorCode::NoAvailableAccounts | ErrorCode::ResponseAccountUnavailable,
                        ) => failover::exhausted(Some(last)),
                        _ => e,
                    };
                    if let Some(last) = &last_failure {
                        // The upstream's last answer decided what the client is told.
                        tracing::info!(
                            source = ?last.source,
                            upstream_request_id = last.upstream_request_id,
                            error = last.message,
                            "no account left to fail over to"
                        );
                    }
                    ds.fail(err).await;
                    return;
                }
            };
            let account_id = lease.account.account_id;
            ctx.leased.store(true, Ordering::Relaxed);
            let guard = self.leases.hold(&lease.lease_id, lease.user_id, account_id);
            drop(previous.take());
            match self.attempt(ctx, &lease, guard, &mut ds).await {
                deliver::Attempt::Done => return,
                deliver::Attempt::Failed { failure, guard } => {
                    excluded.push(account_id);
                    last_failure = Some(failure);
                    previous = Some(guard);
                }
            }
        }
        drop(previous);
        ds.fail(failover::exhausted(last_failure.as_ref())).await;
    }

    fn report_outcome(&self, outcome: Outcome) {
        let control = self.control.clone();
        self.tasks.spawn(
            async move {
                if let Err(e) = control.report_outcome(outcome).await {
                    tracing::warn!(error = %e, "outcome report failed");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    fn upstream_target<'a>(
        &'a self,
        ctx: &Ctx,
        account: &'a AccountLease,
    ) -> (transform::Kind, transform::Target<'a>) {
        let kind = account.kind;
        let target = transform::Target {
            kind,
            model_mapping: &account.model_mapping,
            codex_client: ctx.codex,
            default_codex_model: &self.settings.default_codex_model,
        };
        (kind, target)
    }
}
