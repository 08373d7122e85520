//! A scriptable fake control plane: a real tonic `Gateway` server on 127.0.0.1:0, so the
//! data plane under test runs its real gRPC client, session and reporters against it
//! (the pattern of linkerd2-proxy's fake controller). It authorizes every key with one
//! configurable `KeyAuth`, grants leases on one account (or answers what a test
//! scripted), and records every call so that a test can assert what the data plane sent.
//!
//! Usage is acknowledged the way the real one does (after "commit", replays acked again,
//! each request id committed once), unless a test scripted failures first.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_server::{Gateway, GatewayServer};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The bearer every granted lease carries (the fake upstream sees it).
pub const BEARER: &str = "sk-fake-control-plane-bearer";
/// The account every default lease is for.
pub const ACCOUNT_ID: i64 = 41;
pub const USER_ID: i64 = 7;
pub const KEY_ID: i64 = 3;

/// What the next Admit call answers.
#[derive(Debug, Clone)]
pub enum AdmitScript {
    /// A fresh lease on this account (`None` = a lease that names no account).
    Grant(Option<pb::AccountLease>),
    /// A refusal with this shared error-code name and message.
    Refuse { code: String, message: String },
    /// The call fails with this status.
    Fail(Status),
    /// An answer with neither a lease nor a rejection.
    Empty,
}

/// What the next ReportUsage call answers.
#[derive(Debug, Clone)]
pub enum UsageScript {
    /// The call fails with this status (nothing committed).
    Fail(Status),
    /// The call answers but acknowledges nothing (a commit that did not happen).
    AckNothing,
}

/// What ReportUsage does with "poison" records (those whose model starts with a prefix)
/// in an answered call: the other records of the call are acked as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// Never acknowledged: not stored, to be sent again (a retryable failure, for ever).
    Unacked,
    /// Reported dead-lettered (stored in the dead-letter table, never charged).
    DeadLetter,
}

#[derive(Debug, Default)]
struct Recorded {
    attaches: Vec<pb::Attach>,
    admits: Vec<pb::AdmitRequest>,
    granted: Vec<String>,
    releases: Vec<pb::ReleaseRequest>,
    usage_sent: Vec<pb::UsageReport>,
    usage_committed: Vec<pb::UsageReport>,
    usage_dead_lettered: Vec<pb::UsageReport>,
    outcomes: Vec<pb::ReportOutcomeRequest>,
    /// Acknowledged response records, from either call.
    responses: Vec<pb::RecordResponseRequest>,
    /// The records of each RecordResponses call, as it arrived.
    record_calls: Vec<Vec<pb::RecordResponseRequest>>,
    /// RecordResponse (one record) calls.
    unary_record_calls: usize,
}

struct State {
    key: Mutex<Option<pb::KeyAuth>>,
    account: Mutex<pb::AccountLease>,
    admit_scripts: Mutex<VecDeque<AdmitScript>>,
    usage_scripts: Mutex<VecDeque<UsageScript>>,
    poison: Mutex<Option<(String, Poison)>>,
    recorded: Mutex<Recorded>,
    /// `true` while response-record calls are held (not answered).
    records_held: tokio::sync::watch::Sender<bool>,
    /// `false`: RecordResponses answers UNIMPLEMENTED, as a control plane before it.
    batched_records: std::sync::atomic::AtomicBool,
    sessions: Mutex<Vec<mpsc::Sender<Result<pb::SessionDown, Status>>>>,
    seq: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An active key of an active user with a generous balance, no group.
pub fn active_key() -> pb::KeyAuth {
    pb::KeyAuth {
        key_id: KEY_ID,
        key_status: "active".into(),
        user: Some(pb::UserAuth {
            user_id: USER_ID,
            status: "active".into(),
            balance_nanos: 100 * 1_000_000_000,
            concurrency: 10,
        }),
        ..Default::default()
    }
}

/// An API-key account whose upstream is `upstream_url`.
pub fn api_key_account(upstream_url: &str) -> pb::AccountLease {
    pb::AccountLease {
        account_id: ACCOUNT_ID,
        kind: "api_key".into(),
        upstream_url: upstream_url.to_owned(),
        bearer: BEARER.into(),
        cost_multiplier: "1".into(),
        ..Default::default()
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeControlPlane {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FakeControlPlane {
    /// Binds 127.0.0.1:0; leases are for an API-key account on `upstream_url`.
    pub async fn start(upstream_url: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            key: Mutex::new(Some(active_key())),
            account: Mutex::new(api_key_account(upstream_url)),
            admit_scripts: Mutex::default(),
            usage_scripts: Mutex::default(),
            poison: Mutex::default(),
            recorded: Mutex::default(),
            records_held: tokio::sync::watch::Sender::new(false),
            batched_records: std::sync::atomic::AtomicBool::new(true),
            sessions: Mutex::default(),
            seq: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        let service = GatewayServer::new(Service(state.clone()));
        let shutdown = state.shutdown.clone();
        state.tasks.spawn(async move {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await;
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The answer to every Authorize (`None` = unknown key).
    pub fn set_key(&self, key: Option<pb::KeyAuth>) {
        *lock(&self.state.key) = key;
    }

    /// Queues answers for the next Admit calls; afterwards leases are granted again.
    pub fn push_admit(&self, script: AdmitScript) {
        lock(&self.state.admit_scripts).push_back(script);
    }

    /// Queues answers for the next ReportUsage calls; afterwards usage is acked.
    pub fn push_usage(&self, script: UsageScript, times: usize) {
        let mut q = lock(&self.state.usage_scripts);
        for _ in 0..times {
            q.push_back(script.clone());
        }
    }

    /// Records whose model starts with `model_prefix` are answered with `how` (`None`
    /// = every record is acked again).
    pub fn poison_usage(&self, rule: Option<(&str, Poison)>) {
        *lock(&self.state.poison) = rule.map(|(p, how)| (p.to_owned(), how));
    }

    /// Usage records reported dead-lettered, once per request id.
    pub fn usage_dead_lettered(&self) -> Vec<pb::UsageReport> {
        lock(&self.state.recorded).usage_dead_lettered.clone()
    }

    /// Sends an invalidation on every attached session.
    pub async fn invalidate(&self, msg: pb::Invalidate) {
        let sessions: Vec<_> = lock(&self.state.sessions).clone();
        for tx in sessions {
            let down = pb::SessionDown {
                msg: Some(pb::session_down::Msg::Invalidate(msg.clone())),
            };
            let _ = tx.send(Ok(down)).await;
        }
    }

    pub fn attaches(&self) -> Vec<pb::Attach> {
        lock(&self.state.recorded).attaches.clone()
    }

    pub fn admits(&self) -> Vec<pb::AdmitRequest> {
        lock(&self.state.recorded).admits.clone()
    }

    /// Lease ids granted so far, in order.
    pub fn granted(&self) -> Vec<String> {
        lock(&self.state.recorded).granted.clone()
    }

    /// Every lease id any Release call named.
    pub fn released_leases(&self) -> Vec<String> {
        lock(&self.state.recorded)
            .releases
            .iter()
            .flat_map(|r| r.lease_ids.clone())
            .collect()
    }

    /// Every request id any Release call named (requests abandoned while admitting).
    pub fn released_requests(&self) -> Vec<String> {
        lock(&self.state.recorded)
            .releases
            .iter()
            .flat_map(|r| r.request_ids.clone())
            .collect()
    }

    /// Every usage record any ReportUsage call carried (retries included).
    pub fn usage_sent(&self) -> Vec<pb::UsageReport> {
        lock(&self.state.recorded).usage_sent.clone()
    }

    /// Usage records committed, once per request id.
    pub fn usage_committed(&self) -> Vec<pb::UsageReport> {
        lock(&self.state.recorded).usage_committed.clone()
    }

    pub fn outcomes(&self) -> Vec<pb::ReportOutcomeRequest> {
        lock(&self.state.recorded).outcomes.clone()
    }

    /// Response ids the data plane recorded (response-id affinity), acknowledged.
    pub fn recorded_responses(&self) -> Vec<pb::RecordResponseRequest> {
        lock(&self.state.recorded).responses.clone()
    }

    /// The records of every RecordResponses call so far, one entry per call (counted
    /// when the call arrives, held or not).
    pub fn record_calls(&self) -> Vec<Vec<pb::RecordResponseRequest>> {
        lock(&self.state.recorded).record_calls.clone()
    }

    /// RecordResponse (one record per call) calls so far.
    pub fn unary_record_calls(&self) -> usize {
        lock(&self.state.recorded).unary_record_calls
    }

    /// `true`: response-record calls (either kind) wait, unanswered, until it is set
    /// back to `false`.
    pub fn hold_records(&self, held: bool) {
        self.state.records_held.send_replace(held);
    }

    /// `false`: RecordResponses answers UNIMPLEMENTED (a control plane older than it).
    pub fn serve_batched_records(&self, on: bool) {
        self.state.batched_records.store(on, Ordering::SeqCst);
    }

    /// Waits until `cond` holds on the recorded calls (polls; panics after `timeout`).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&FakeControlPlane) -> bool,
    ) {
        crate::eventually(what, timeout, || std::future::ready(cond(self))).await;
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

type SessionStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::SessionDown, Status>> + Send + 'static>,
>;

impl Service {
    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.0.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    fn attach(&self, attach: pb::Attach) -> pb::Attached {
        let adopted = attach
            .held_leases
            .iter()
            .map(|l| l.lease_id.clone())
            .collect();
        lock(&self.0.recorded).attaches.push(attach);
        pb::Attached {
            session_id: self.next_id("fake-session"),
            heartbeat_interval_ms: 200,
            lease_grace_ms: 2_000,
            adopted_lease_ids: adopted,
            epoch: 1,
        }
    }
}

#[tonic::async_trait]
impl Gateway for Service {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionUp>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut up = request.into_inner();
        let attach = match up.message().await? {
            Some(pb::SessionUp {
                msg: Some(pb::session_up::Msg::Attach(a)),
            }) => a,
            _ => return Err(Status::invalid_argument("the first message must be Attach")),
        };
        let attached = self.attach(attach);
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(Ok(pb::SessionDown {
            msg: Some(pb::session_down::Msg::Attached(attached)),
        }))
        .await
        .map_err(|_| Status::internal("session closed"))?;
        lock(&self.0.sessions).push(tx.clone());
        let stop = self.0.shutdown.clone();
        self.0.tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = up.message() => m,
                    () = stop.cancelled() => return,
                };
                let Ok(Some(msg)) = msg else { return };
                if let Some(pb::session_up::Msg::Heartbeat(hb)) = msg.msg {
                    let ack = pb::SessionDown {
                        msg: Some(pb::session_down::Msg::HeartbeatAck(pb::HeartbeatAck {
                            seq: hb.seq,
                        })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stop = self.0.shutdown.clone();
        let stream = futures::stream::poll_fn(move |cx| {
            if stop.is_cancelled() {
                return std::task::Poll::Ready(None);
            }
            rx.poll_recv(cx)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn authorize(
        &self,
        _request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        Ok(Response::new(pb::AuthorizeResponse {
            key: lock(&self.0.key).clone(),
            ttl_ms: 60_000,
        }))
    }

    async fn admit(
        &self,
        request: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        lock(&self.0.recorded).admits.push(request.into_inner());
        let script = lock(&self.0.admit_scripts)
            .pop_front()
            .unwrap_or_else(|| AdmitScript::Grant(Some(lock(&self.0.account).clone())));
        let result = match script {
            AdmitScript::Grant(account) => {
                let lease_id = self.next_id("fake-lease");
                lock(&self.0.recorded).granted.push(lease_id.clone());
                Some(pb::admit_response::Result::Lease(pb::Lease {
                    lease_id,
                    account,
                    user_id: USER_ID,
                    group_id: None,
                    subscription_id: None,
                    billing_mode: "balance".into(),
                    rate_multiplier: "1".into(),
                    queued_us: 0,
                }))
            }
            AdmitScript::Refuse { code, message } => {
                Some(pb::admit_response::Result::Rejection(pb::Rejection {
                    code,
                    message,
                }))
            }
            AdmitScript::Fail(status) => return Err(status),
            AdmitScript::Empty => None,
        };
        Ok(Response::new(pb::AdmitResponse { result }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        lock(&self.0.recorded).releases.push(request.into_inner());
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let records = request.into_inner().records;
        let script = lock(&self.0.usage_scripts).pop_front();
        let mut rec = lock(&self.0.recorded);
        rec.usage_sent.extend(records.iter().cloned());
        match script {
            Some(UsageScript::Fail(status)) => return Err(status),
            Some(UsageScript::AckNothing) => {
                return Ok(Response::new(pb::ReportUsageResponse::default()));
            }
            None => {}
        }
        let poison = lock(&self.0.poison).clone();
        let mut acked = Vec::new();
        let mut dead_lettered = Vec::new();
        for r in records {
            match &poison {
                Some((prefix, how)) if r.model.starts_with(prefix.as_str()) => {
                    if *how == Poison::DeadLetter {
                        if !rec
                            .usage_dead_lettered
                            .iter()
                            .any(|c| c.request_id == r.request_id)
                        {
                            rec.usage_dead_lettered.push(r.clone());
                        }
                        dead_lettered.push(pb::DeadLettered {
                            request_id: r.request_id,
                            reason: "poison".into(),
                        });
                    }
                    continue;
                }
                _ => {}
            }
            if !rec
                .usage_committed
                .iter()
                .any(|c| c.request_id == r.request_id)
            {
                rec.usage_committed.push(r.clone());
            }
            acked.push(r.request_id);
        }
        Ok(Response::new(pb::ReportUsageResponse {
            acked_request_ids: acked,
            rejected: Vec::new(),
            dead_lettered,
        }))
    }

    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        lock(&self.0.recorded).outcomes.push(request.into_inner());
        Ok(Response::new(pb::ReportOutcomeResponse {}))
    }

    async fn record_response(
        &self,
        request: Request<pb::RecordResponseRequest>,
    ) -> Result<Response<pb::RecordResponseResponse>, Status> {
        lock(&self.0.recorded).unary_record_calls += 1;
        self.records_released().await;
        lock(&self.0.recorded).responses.push(request.into_inner());
        Ok(Response::new(pb::RecordResponseResponse {}))
    }

    async fn record_responses(
        &self,
        request: Request<pb::RecordResponsesRequest>,
    ) -> Result<Response<pb::RecordResponsesResponse>, Status> {
        if !self.0.batched_records.load(Ordering::SeqCst) {
            return Err(Status::unimplemented("RecordResponses"));
        }
        let records = request.into_inner().records;
        lock(&self.0.recorded).record_calls.push(records.clone());
        self.records_released().await;
        lock(&self.0.recorded).responses.extend(records);
        Ok(Response::new(pb::RecordResponsesResponse::default()))
    }
}

impl Service {
    /// Returns once response-record calls are not held.
    async fn records_released(&self) {
        let mut held = self.0.records_held.subscribe();
        let _ = held.wait_for(|held| !*held).await;
    }
}
