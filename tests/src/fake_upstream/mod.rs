//! A fake OpenAI upstream for system tests: a real HTTP server (HTTP/1.1 and h2c) on
//! `127.0.0.1:0` that answers the Responses API (API-key path `/v1/responses`, any path
//! ending in `/responses`; subscription path `/backend-api/codex/responses`, which always
//! streams) and the OAuth token endpoint (`/oauth/token`), records everything it receives,
//! and follows scripts that tests push.
//!
//! ```ignore
//! let up = FakeUpstream::start().await;
//! up.push_for("sk-a", Script::error(500));       // account A fails once...
//! up.push(Script::success().text(["Hi"]));        // ...anyone else succeeds
//! // point an API-key account's base_url at up.api_key_url(), a subscription account at
//! // up.codex_url(), the token refresher at up.oauth_token_url()
//! assert_eq!(up.count(), 2);
//! ```
//!
//! Script selection for a request with bearer token `t`: the queue pushed for `t`, then
//! the default set for `t`, then the shared queue, then the shared default (success).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oauth;
mod record;
mod script;
mod sse;
mod stored;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::sse::{SseEvent, parse_sse};
pub use oauth::{
    IdTokenClaims, OAuthCall, OAuthKind, OAuthScript, TokenGrant, decode_jwt_payload, make_id_token,
};
pub use record::Received;
pub use script::{ErrorSpec, Gate, Kind, Script, Usage};
pub use stored::Operation;

/// The API-key Responses path.
pub const RESPONSES_PATH: &str = "/v1/responses";
/// The subscription (Codex backend) Responses path.
pub const CODEX_PATH: &str = "/backend-api/codex/responses";
pub(crate) const CODEX_PATH_PREFIX: &str = "/backend-api/codex/";
/// The OAuth token endpoint path.
pub const OAUTH_TOKEN_PATH: &str = "/oauth/token";

const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";
const JSON_CONTENT_TYPE: &str = "application/json";
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A URL on 127.0.0.1 whose port was bound and then closed: connecting is refused.
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// Bodies and the in-flight count

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Per upstream credential (bearer): (in flight now, most at once).
    per_bearer: Mutex<HashMap<String, (usize, usize)>>,
    /// Named sets of credentials (e.g. one user's accounts).
    groups: Mutex<HashMap<String, Group>>,
}

/// A set of credentials counted together: (members, in flight now, most at once).
type Group = (Vec<String>, usize, usize);

/// Counts one Responses request as in flight, in total and for its credential, from
/// arrival until its response body is finished or dropped.
struct InFlight(Arc<Counters>, Option<String>);

impl InFlight {
    fn enter(c: &Arc<Counters>, bearer: Option<&str>) -> Self {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(b) = bearer {
            let mut map = c.per_bearer.lock().unwrap();
            let e = map.entry(b.to_owned()).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
            for g in c.groups.lock().unwrap().values_mut() {
                if g.0.iter().any(|m| m == b) {
                    g.1 += 1;
                    g.2 = g.2.max(g.1);
                }
            }
        }
        Self(c.clone(), bearer.map(str::to_owned))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(b) = &self.1 {
            if let Some(e) = self.0.per_bearer.lock().unwrap().get_mut(b) {
                e.0 -= 1;
            }
            for g in self.0.groups.lock().unwrap().values_mut() {
                if g.0.iter().any(|m| m == b) {
                    g.1 -= 1;
                }
            }
        }
    }
}

type BodyFrame = Result<Frame<Bytes>, io::Error>;

/// The body of every answer: frames from a channel (each one flushed on its own), holding
/// the in-flight guard until hyper drops it.
pub struct GuardedStream {
    rx: mpsc::Receiver<BodyFrame>,
    _guard: Option<InFlight>,
}

impl futures::Stream for GuardedStream {
    type Item = BodyFrame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyFrame>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

type Body = StreamBody<GuardedStream>;

fn fixed_body(bytes: impl Into<Bytes>, guard: Option<InFlight>) -> Body {
    let (tx, rx) = mpsc::channel(1);
    let bytes = bytes.into();
    if !bytes.is_empty() {
        tx.try_send(Ok(Frame::data(bytes))).unwrap();
    }
    StreamBody::new(GuardedStream { rx, _guard: guard })
}

enum Step {
    Send(Bytes),
    Sleep(Duration),
    /// Make the body fail: hyper drops the connection (HTTP/1) or resets the stream (h2).
    Fail,
}

fn streamed_body(state: &State, steps: Vec<Step>, guard: Option<InFlight>) -> Body {
    let (tx, rx) = mpsc::channel(16);
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let drop_it = || Err(io::Error::other("fake upstream: scripted connection drop"));
        for step in steps {
            match step {
                Step::Send(b) => tokio::select! {
                    r = tx.send(Ok(Frame::data(b))) => if r.is_err() { return },
                    () = shutdown.cancelled() => { let _ = tx.try_send(drop_it()); return }
                },
                Step::Sleep(d) => tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => { let _ = tx.try_send(drop_it()); return }
                },
                Step::Fail => {
                    // Let hyper take and flush what was sent (it flushes when the body
                    // goes pending); an error frame would abort with the bytes unwritten.
                    while tx.capacity() < tx.max_capacity() && !tx.is_closed() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(drop_it()).await;
                    return;
                }
            }
        }
    });
    StreamBody::new(GuardedStream { rx, _guard: guard })
}

fn response(
    status: u16,
    content_type: &str,
    request_id: &str,
    extra: &[(String, String)],
    content_length: Option<usize>,
    body: Body,
) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    h.insert("x-request-id", HeaderValue::from_str(request_id).unwrap());
    if content_type.starts_with("text/event-stream") {
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
    }
    if let Some(len) = content_length {
        h.insert("content-length", HeaderValue::from(len));
    }
    for (name, _) in extra {
        h.remove(name.as_str());
    }
    for (name, value) in extra {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    r
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Default)]
struct Scripts {
    shared: VecDeque<Script>,
    per: HashMap<String, VecDeque<Script>>,
    default: Option<Script>,
    per_default: HashMap<String, Script>,
}

impl Scripts {
    fn next(&mut self, bearer: Option<&str>) -> Script {
        if let Some(b) = bearer {
            if let Some(s) = self.per.get_mut(b).and_then(VecDeque::pop_front) {
                return s;
            }
            if let Some(s) = self.per_default.get(b) {
                return s.clone();
            }
        }
        if let Some(s) = self.shared.pop_front() {
            return s;
        }
        self.default.clone().unwrap_or_default()
    }

    fn left(&self) -> usize {
        self.shared.len() + self.per.values().map(VecDeque::len).sum::<usize>()
    }
}

struct State {
    scripts: Mutex<Scripts>,
    oauth: oauth::OAuthState,
    received: Mutex<Vec<Received>>,
    other: Mutex<Vec<Received>>,
    /// Responses kept per credential (`stored.rs`), and the operations on them received.
    stored: Mutex<stored::StoredResponses>,
    operations: Mutex<Vec<(Operation, Received)>>,
    counters: Arc<Counters>,
    seq: AtomicU64,
    /// Off in the benchmark's long runs, where keeping every request would grow without bound.
    recording: AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Runs hyper's background futures (h2 streams) on the tracker.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

// ---------------------------------------------------------------------------------------
// The public handle

/// The running fake. Dropping it stops the server and every connection.
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and serves until dropped or [`FakeUpstream::shutdown`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            scripts: Mutex::default(),
            oauth: oauth::OAuthState::default(),
            received: Mutex::default(),
            other: Mutex::default(),
            stored: Mutex::default(),
            operations: Mutex::default(),
            counters: Arc::default(),
            seq: AtomicU64::new(1),
            recording: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        state.tasks.spawn(accept_loop(listener, state.clone()));
        Self { addr, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `base_url` for an API-key account (the gateway appends `/v1/responses`).
    pub fn api_key_url(&self) -> String {
        self.base_url()
    }

    /// The full API-key Responses URL: `{base}/v1/responses`.
    pub fn responses_url(&self) -> String {
        format!("{}{RESPONSES_PATH}", self.base_url())
    }

    /// The full subscription Responses URL: `{base}/backend-api/codex/responses`.
    pub fn codex_url(&self) -> String {
        format!("{}{CODEX_PATH}", self.base_url())
    }

    /// The token endpoint: `{base}/oauth/token`.
    pub fn oauth_token_url(&self) -> String {
        format!("{}{OAUTH_TOKEN_PATH}", self.base_url())
    }

    // ---- scripting ----

    /// Queues a script for the next Responses request (any credential).
    pub fn push(&self, script: Script) {
        self.state.scripts.lock().unwrap().shared.push_back(script);
    }

    /// Queues `n` copies.
    pub fn push_n(&self, script: Script, n: usize) {
        for _ in 0..n {
            self.push(script.clone());
        }
    }

    /// Queues a script for the next request carrying `Authorization: Bearer <bearer>`.
    pub fn push_for(&self, bearer: &str, script: Script) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .per
            .entry(bearer.to_string())
            .or_default()
            .push_back(script);
    }

    /// What requests get when no queue applies (initially `Script::success()`).
    pub fn set_default(&self, script: Script) {
        self.state.scripts.lock().unwrap().default = Some(script);
    }

    /// What requests with this bearer get when their own queue is empty (before the shared
    /// queue is consulted) — e.g. `set_default_for("sk-a", Script::error(401))`.
    pub fn set_default_for(&self, bearer: &str, script: Script) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .per_default
            .insert(bearer.to_string(), script);
    }

    /// Drops all queued scripts and defaults.
    pub fn clear_scripts(&self) {
        *self.state.scripts.lock().unwrap() = Scripts::default();
    }

    /// Queued scripts not consumed yet (shared and per credential).
    pub fn scripts_left(&self) -> usize {
        self.state.scripts.lock().unwrap().left()
    }

    /// Stops keeping what arrives (`received()` stays as it is); scripts still apply.
    pub fn stop_recording(&self) {
        self.state.recording.store(false, Ordering::Relaxed);
    }

    // ---- what arrived ----

    /// Every Responses request received, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The Responses requests that carried this bearer token.
    pub fn received_for(&self, bearer: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.bearer.as_deref() == Some(bearer))
            .collect()
    }

    /// The last Responses request received.
    pub fn last(&self) -> Option<Received> {
        self.state.received.lock().unwrap().last().cloned()
    }

    /// Number of Responses requests received.
    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn count_for(&self, bearer: &str) -> usize {
        self.received_for(bearer).len()
    }

    /// Operations on stored responses (retrieve, delete, cancel, input items) received,
    /// answered or refused (404 for another credential's response).
    pub fn operations(&self) -> Vec<(Operation, Received)> {
        self.state.operations.lock().unwrap().clone()
    }

    /// Requests to any other path (answered 404).
    pub fn other_received(&self) -> Vec<Received> {
        self.state.other.lock().unwrap().clone()
    }

    /// Waits (up to 10 s, else panics) until `n` Responses requests have arrived.
    pub async fn wait_for_count(&self, n: usize) {
        crate::eventually(&format!("{n} upstream requests"), WAIT, || async {
            self.count() >= n
        })
        .await;
    }

    /// Responses requests being served right now (arrival until the body ends or drops).
    pub fn in_flight(&self) -> usize {
        self.state.counters.in_flight.load(Ordering::SeqCst)
    }

    /// The highest `in_flight` seen.
    pub fn max_in_flight(&self) -> usize {
        self.state.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// The most Responses requests in flight at once with this upstream credential.
    pub fn max_in_flight_for(&self, bearer: &str) -> usize {
        let map = self.state.counters.per_bearer.lock().unwrap();
        map.get(bearer).map_or(0, |e| e.1)
    }

    /// Counts requests in flight with any of `bearers` together as `name` from now on
    /// (e.g. the accounts one user's requests may use: the user's concurrency).
    pub fn count_group(&self, name: &str, bearers: &[&str]) {
        let members = bearers.iter().map(|b| (*b).to_owned()).collect();
        self.state
            .counters
            .groups
            .lock()
            .unwrap()
            .insert(name.to_owned(), (members, 0, 0));
    }

    /// The most requests of group `name` in flight at once.
    pub fn max_in_flight_of_group(&self, name: &str) -> usize {
        let groups = self.state.counters.groups.lock().unwrap();
        groups.get(name).map_or(0, |g| g.2)
    }

    pub fn reset_max_in_flight(&self) {
        self.state
            .counters
            .max_in_flight
            .store(self.in_flight(), Ordering::SeqCst);
    }

    /// Waits (up to 10 s, else panics) until exactly `n` requests are in flight.
    pub async fn wait_for_in_flight(&self, n: usize) {
        crate::eventually(
            &format!("{n} upstream requests in flight"),
            WAIT,
            || async { self.in_flight() == n },
        )
        .await;
    }

    // ---- OAuth ----

    /// Queues a token-endpoint answer (default: a fresh grant).
    pub fn push_oauth(&self, script: OAuthScript) {
        self.state.oauth.queue.lock().unwrap().push_back(script);
    }

    pub fn set_oauth_default(&self, script: OAuthScript) {
        *self.state.oauth.default.lock().unwrap() = Some(script);
    }

    /// Calls answered so far (recorded when answered, after any delay).
    pub fn oauth_calls(&self) -> Vec<OAuthCall> {
        self.state.oauth.calls.lock().unwrap().clone()
    }

    /// Calls that arrived so far (counted on arrival, before any delay).
    pub fn oauth_count(&self) -> usize {
        self.state.oauth.arrived.load(Ordering::SeqCst)
    }

    /// Stops accepting, drops every connection and waits (up to 5 s) for the tasks.
    pub async fn shutdown(&self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.state.tasks.wait()).await;
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
    }
}

// ---------------------------------------------------------------------------------------
// Serving

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let builder = auto::Builder::new(TrackedExecutor(state.tasks.clone()));
    loop {
        let stream = tokio::select! {
            () = state.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Cancelled by a `CloseBeforeResponse` script: the connection is dropped.
        let kill = CancellationToken::new();
        let svc = {
            let state = state.clone();
            let kill = kill.clone();
            hyper::service::service_fn(move |req| handle(state.clone(), req, kill.clone()))
        };
        let builder = builder.clone();
        let shutdown = state.shutdown.clone();
        state.tasks.spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                () = kill.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn json_error(status: u16, error_type: &str, message: &str) -> String {
    let mut spec = ErrorSpec::for_status(status);
    spec.error_type = error_type.into();
    spec.code = None;
    spec.message = Some(message.into());
    spec.body("")
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    kill: CancellationToken,
) -> Result<Response<Body>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let seq = state.seq.fetch_add(1, Ordering::SeqCst);
    let rec = Received::new(&parts, body, seq);
    let request_id = rec.request_id.clone();
    let path = rec.path.clone();

    if parts.method == Method::POST && path == OAUTH_TOKEN_PATH {
        let (status, body) = tokio::select! {
            r = state.oauth.answer(rec) => r,
            () = state.shutdown.cancelled() => return Err(io::Error::other("shutting down")),
        };
        let body = body.to_string();
        let len = body.len();
        return Ok(response(
            status,
            JSON_CONTENT_TYPE,
            &request_id,
            &[],
            Some(len),
            fixed_body(body, None),
        ));
    }

    if let Some((op, id)) = Operation::of(&parts.method, &path) {
        let (status, body) = state
            .stored
            .lock()
            .unwrap()
            .operate(op, &id, rec.bearer.as_deref());
        state.operations.lock().unwrap().push((op, rec));
        let len = body.len();
        return Ok(response(
            status,
            JSON_CONTENT_TYPE,
            &request_id,
            &[],
            Some(len),
            fixed_body(body, None),
        ));
    }

    if parts.method == Method::POST && path.ends_with("/responses") {
        // As OpenAI: a response id belongs to the credential that created it.
        let refused = state.stored.lock().unwrap().check_previous(&rec);
        if let Err(body) = refused {
            state.received.lock().unwrap().push(rec);
            let len = body.len();
            return Ok(response(
                404,
                JSON_CONTENT_TYPE,
                &request_id,
                &[],
                Some(len),
                fixed_body(body, None),
            ));
        }
        let guard = InFlight::enter(&state.counters, rec.bearer.as_deref());
        let script = state.scripts.lock().unwrap().next(rec.bearer.as_deref());
        let stream = rec.answered_as_stream();
        let model = rec.model().unwrap_or("gpt-4o").to_string();
        // Off in the benchmark's long runs: neither the request nor its response is kept
        // (a response chained on there is not found).
        if state.recording.load(Ordering::Relaxed) {
            if !matches!(script.kind, Kind::Error(_) | Kind::CloseBeforeResponse) {
                let ctx = sse::Ctx::new(seq, &model, &script);
                state
                    .stored
                    .lock()
                    .unwrap()
                    .keep(&rec, ctx.response_id, &ctx.model);
            }
            state.received.lock().unwrap().push(rec);
        }
        return respond(
            &state,
            script,
            stream,
            &model,
            seq,
            &request_id,
            guard,
            &kill,
        )
        .await;
    }

    state.other.lock().unwrap().push(rec);
    let body = json_error(
        404,
        "invalid_request_error",
        &format!("Invalid URL ({} {path})", parts.method),
    );
    let len = body.len();
    Ok(response(
        404,
        JSON_CONTENT_TYPE,
        &request_id,
        &[],
        Some(len),
        fixed_body(body, None),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    state: &State,
    script: Script,
    stream: bool,
    model: &str,
    seq: u64,
    request_id: &str,
    guard: InFlight,
    kill: &CancellationToken,
) -> Result<Response<Body>, io::Error> {
    let shutdown = || io::Error::other("fake upstream shutting down");
    if let Some(gate) = &script.hold {
        tokio::select! {
            () = gate.pass() => {}
            () = state.shutdown.cancelled() => return Err(shutdown()),
        }
    }
    if !script.delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(script.delay) => {}
            () = state.shutdown.cancelled() => return Err(shutdown()),
        }
    }
    let guard = Some(guard);
    let headers = &script.headers;
    let fixed = |status: u16, content_type: &str, body: String, guard: Option<InFlight>| {
        let len = body.len();
        response(
            status,
            content_type,
            request_id,
            headers,
            Some(len),
            fixed_body(body, guard),
        )
    };
    let ctx = sse::Ctx::new(seq, model, &script);
    Ok(match &script.kind {
        Kind::CloseBeforeResponse => {
            kill.cancel();
            return Err(io::Error::other(
                "fake upstream: scripted close before response",
            ));
        }
        Kind::Error(spec) => fixed(spec.status, JSON_CONTENT_TYPE, spec.body(model), guard),
        Kind::Raw {
            status,
            content_type,
            chunks,
        } => {
            let steps = plan(chunks.clone(), &script, None);
            response(
                *status,
                content_type,
                request_id,
                headers,
                None,
                streamed_body(state, steps, guard),
            )
        }
        Kind::ErrorEvent { code, message } if !stream => {
            let mut spec = ErrorSpec::for_status(500);
            spec.code = Some(code.clone());
            spec.message = Some(message.clone());
            fixed(500, JSON_CONTENT_TYPE, spec.body(model), guard)
        }
        kind if stream => {
            let cut = match kind {
                Kind::CutStream { after_events } => Some(*after_events),
                _ => None,
            };
            let steps = plan(sse::events(&ctx, kind), &script, cut);
            response(
                200,
                SSE_CONTENT_TYPE,
                request_id,
                headers,
                None,
                streamed_body(state, steps, guard),
            )
        }
        kind => {
            let body = sse::json_body(&ctx, kind).unwrap_or_default();
            let cut = matches!(kind, Kind::CutStream { .. });
            if !cut && script.pause.is_none() {
                fixed(200, JSON_CONTENT_TYPE, body, guard)
            } else {
                let len = body.len();
                let mut steps = Vec::new();
                if let Some((_, d)) = script.pause {
                    steps.push(Step::Sleep(d));
                }
                if cut {
                    steps.push(Step::Send(Bytes::from(body[..len / 2].to_string())));
                    steps.push(Step::Fail);
                } else {
                    steps.push(Step::Send(Bytes::from(body)));
                }
                response(
                    200,
                    JSON_CONTENT_TYPE,
                    request_id,
                    headers,
                    Some(len),
                    streamed_body(state, steps, guard),
                )
            }
        }
    })
}

/// The steps that send `chunks` with the script's event delay and pause, cut after `cut`
/// chunks when set.
fn plan(chunks: Vec<String>, script: &Script, cut: Option<usize>) -> Vec<Step> {
    let limit = cut.unwrap_or(chunks.len()).min(chunks.len());
    let mut steps = Vec::new();
    let mut chunks = chunks.into_iter();
    for i in 0..=limit {
        if let Some((n, d)) = script.pause
            && n == i
        {
            steps.push(Step::Sleep(d));
        }
        if i == limit {
            break;
        }
        if i > 0 && !script.event_delay.is_zero() {
            steps.push(Step::Sleep(script.event_delay));
        }
        if let Some(c) = chunks.next() {
            steps.push(Step::Send(Bytes::from(c)));
        }
    }
    if cut.is_some() {
        steps.push(Step::Fail);
    }
    steps
}
