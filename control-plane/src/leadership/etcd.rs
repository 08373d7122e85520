//! The election through etcd: a lease-backed key (`/tollgate/leader` by default) created
//! only if absent; whoever creates it leads, its value is the leader's advertised URL and
//! its revision is the term. Standbys watch the key and campaign again once it is gone.
//!
//! Safety rule: the lease is renewed every quarter TTL, and the leader stops serving as
//! soon as its last acknowledged renewal was *sent* more than three quarters of the TTL
//! ago. etcd counts the TTL from when it received that renewal (later), so the old leader
//! has stopped before its key can expire and before any standby can win.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use super::etcd_api::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, compare,
    kv_client::KvClient, lease_client::LeaseClient, request_op, response_op,
    watch_client::WatchClient, watch_request,
};
use super::etcd_api::mvccpb::{KeyValue, event::EventType};
use super::{ElectionSettings, Role};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// Why a campaign failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("bad etcd endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("etcd: {0}")]
    Rpc(#[from] tonic::Status),
}

/// The three etcd services the election uses, over one channel.
struct Client {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

impl Client {
    /// A channel balanced over all endpoints (requests go to whichever member is up),
    /// connected lazily; every call is bounded by `rpc_timeout`, and HTTP/2 pings notice
    /// a dead connection within about two of them.
    fn new(endpoints: &[String], rpc_timeout: Duration) -> Result<Self, Error> {
        let (channel, changes) = Channel::balance_channel(endpoints.len().max(1));
        for e in endpoints {
            let endpoint = Endpoint::from_shared(endpoint_url(e))
                .map_err(|err| Error::Endpoint(e.clone(), err.to_string()))?
                .connect_timeout(rpc_timeout)
                .timeout(rpc_timeout)
                .http2_keep_alive_interval(rpc_timeout)
                .keep_alive_timeout(rpc_timeout)
                .keep_alive_while_idle(true);
            changes
                .try_send(Change::Insert(endpoint.uri().clone(), endpoint))
                .map_err(|err| Error::Endpoint(e.clone(), err.to_string()))?;
        }
        Ok(Self {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        })
    }

    async fn lease_revoke(&mut self, id: i64) -> Result<(), Error> {
        self.lease.lease_revoke(LeaseRevokeRequest { id }).await?;
        Ok(())
    }

    /// Opens a keep-alive stream carrying `first` as its first renewal (etcd answers a
    /// stream only once it has a request to answer).
    async fn lease_keep_alive(&mut self, first: LeaseKeepAliveRequest) -> Result<KeepAlive, Error> {
        let (requests, rx) = mpsc::channel(16);
        // Cannot fail: the channel is new and has room.
        let _ = requests.try_send(first);
        let responses = self
            .lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(KeepAlive {
            requests,
            responses,
        })
    }
}

/// A lease keep-alive stream: renewals go out on `requests`, etcd's answers (the TTL
/// left) come back on `responses` in the same order.
struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// etcd's own clients accept `host:port` as well as URLs; a bare address means plaintext.
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

fn value_str(kv: &KeyValue) -> Option<String> {
    String::from_utf8(kv.value.clone()).ok()
}

/// Campaigns until elected, leads until stepping down, then reports `SteppedDown` for
/// good (a process leads at most once; see the module doc of `leadership`).
pub(super) async fn run(s: ElectionSettings, tx: watch::Sender<Role>, resign: CancellationToken) {
    let mut backoff = RETRY_MIN;
    while !resign.is_cancelled() {
        match campaign(&s, &tx, &resign).await {
            Ok(Campaign::Over) => break,
            Ok(Campaign::Again) => backoff = RETRY_MIN,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "etcd election failed");
                tx.send_replace(Role::Standby { leader: None });
                tokio::select! {
                    () = resign.cancelled() => break,
                    () = tokio::time::sleep(jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
    tx.send_replace(Role::SteppedDown);
}

enum Campaign {
    /// This process led and stepped down, or was told to stop.
    Over,
    /// The leader's key went away: campaign again.
    Again,
}

async fn campaign(
    s: &ElectionSettings,
    tx: &watch::Sender<Role>,
    resign: &CancellationToken,
) -> Result<Campaign, Error> {
    let mut client = Client::new(&s.endpoints, s.lease_ttl / 4)?;
    let asked_at = Instant::now();
    let ttl = i64::try_from(s.lease_ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = client
        .lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner()
        .id;
    let key = s.key.as_bytes().to_vec();
    // Create the key only if absent (its create revision is 0), held by our lease;
    // otherwise read it, to learn the leader.
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal.into(),
            target: compare::CompareTarget::Create.into(),
            key: key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: s.advertise.clone().into_bytes(),
                lease,
                ..PutRequest::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..RangeRequest::default()
            })),
        }],
    };
    let resp = client.kv.txn(txn).await?.into_inner();
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    if resp.succeeded {
        let term = u64::try_from(revision).unwrap_or(0);
        tracing::info!(term, "elected leader");
        lead(client, lease, term, asked_at, s, tx, resign).await;
        return Ok(Campaign::Over);
    }
    let leader = resp.responses.iter().find_map(|op| match &op.response {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.first().and_then(value_str),
        _ => None,
    });
    tracing::info!(leader = leader.as_deref().unwrap_or("?"), "standing by");
    // Named first, so refused callers learn the leader one round trip sooner.
    tx.send_replace(Role::Standby { leader });
    // Someone else leads: our lease is not needed while we wait.
    let _ = client.lease_revoke(lease).await;
    // The create request goes first: etcd answers the stream once it has one. The
    // sender stays alive while we watch (closing it would end the watch).
    let (requests, rx) = mpsc::channel(1);
    let _ = requests.try_send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                start_revision: revision + 1,
                ..WatchCreateRequest::default()
            },
        )),
    });
    let mut events = client
        .watch
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let msg = tokio::select! {
            () = resign.cancelled() => return Ok(Campaign::Over),
            msg = events.message() => msg?,
        };
        let Some(msg) = msg else {
            return Ok(Campaign::Again);
        };
        if msg.canceled {
            return Ok(Campaign::Again);
        }
        for event in &msg.events {
            match event.r#type() {
                EventType::Delete => return Ok(Campaign::Again),
                EventType::Put => {
                    let leader = event.kv.as_ref().and_then(value_str);
                    tx.send_replace(Role::Standby { leader });
                }
            }
        }
    }
}

/// Leads until resigned or unable to renew in time. Renewals go out every quarter TTL
/// on the keep-alive stream (re-opened if it breaks); each acknowledgement moves the
/// "last renewed" time to when its request was sent.
async fn lead(
    mut client: Client,
    lease: i64,
    term: u64,
    asked_at: Instant,
    s: &ElectionSettings,
    tx: &watch::Sender<Role>,
    resign: &CancellationToken,
) {
    tx.send_replace(Role::Leader { term });
    let serve_for = s.lease_ttl * 3 / 4;
    let renewal = LeaseKeepAliveRequest { id: lease };
    let mut renewed_at = asked_at;
    let mut stream: Option<KeepAlive> = None;
    // When each renewal still unanswered on `stream` was sent, oldest first.
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval(s.lease_ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = resign.cancelled() => {
                tx.send_replace(Role::SteppedDown);
                // Revoking the lease deletes the key now, so a standby takes over at once.
                let revoke = client.lease_revoke(lease);
                if matches!(tokio::time::timeout(s.lease_ttl / 4, revoke).await, Ok(Ok(()))) {
                    tracing::info!(term, "resigned leadership");
                } else {
                    tracing::warn!(term, "resigned; etcd did not confirm, the lease will expire");
                }
                return;
            }
            () = tokio::time::sleep_until(renewed_at + serve_for) => {
                tracing::error!(term, "leader lease not renewed in time; stepping down");
                tx.send_replace(Role::SteppedDown);
                return;
            }
            _ = tick.tick() => {
                let at = Instant::now();
                // Bounded by the serving deadline too: this branch runs to completion
                // before the deadline branch above can fire, so a stalled connection
                // must not hold the step-down past it.
                let until = (at + s.lease_ttl / 4).min(renewed_at + serve_for);
                match stream.as_mut() {
                    None => {
                        sent.clear();
                        let open = client.lease_keep_alive(renewal);
                        match tokio::time::timeout_at(until, open).await {
                            Ok(Ok(ka)) => {
                                stream = Some(ka);
                                sent.push_back(at);
                            }
                            Ok(Err(e)) => tracing::warn!(error = %e, "leader keep-alive stream failed"),
                            Err(_) => tracing::warn!("leader keep-alive stream timed out"),
                        }
                    }
                    Some(ka) => {
                        let send = tokio::time::timeout_at(until, ka.requests.send(renewal));
                        if matches!(send.await, Ok(Ok(()))) {
                            sent.push_back(at);
                        } else {
                            stream = None;
                        }
                    }
                }
            }
            msg = async { match stream.as_mut() {
                Some(ka) => ka.responses.message().await,
                None => std::future::pending().await,
            } } => match msg {
                Ok(Some(r)) if r.ttl > 0 => {
                    if let Some(at) = sent.pop_front() {
                        renewed_at = renewed_at.max(at);
                    }
                }
                Ok(Some(_)) => {
                    tracing::error!(term, "leader lease expired in etcd; stepping down");
                    tx.send_replace(Role::SteppedDown);
                    return;
                }
                Ok(None) | Err(_) => stream = None,
            },
        }
    }
}

/// `base` ± 25%, so that replicas retrying together spread out.
fn jitter(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms * 3 / 4 + rand::random_range(0..=ms / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_dialled_over_plain_http() {
        assert_eq!(endpoint_url("etcd-0:2379"), "http://etcd-0:2379");
        assert_eq!(endpoint_url("http://etcd-0:2379"), "http://etcd-0:2379");
        assert_eq!(endpoint_url("https://etcd-0:2379"), "https://etcd-0:2379");
    }

    #[tokio::test]
    async fn a_malformed_endpoint_is_a_clear_error_naming_it() {
        let endpoints = vec!["http://127.0.0.1:2379".to_owned(), "http://[::1".to_owned()];
        let Err(err) = Client::new(&endpoints, Duration::from_millis(500)) else {
            panic!("accepted a malformed endpoint");
        };
        assert!(matches!(err, Error::Endpoint(..)), "{err}");
        assert!(err.to_string().contains("http://[::1"), "{err}");
    }
}
