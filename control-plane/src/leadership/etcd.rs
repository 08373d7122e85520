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

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ElectionSettings, Role};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(3);

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
) -> Result<Campaign, etcd_client::Error> {
    let rpc_timeout = s.lease_ttl / 4;
    let options = ConnectOptions::new()
        .with_connect_timeout(rpc_timeout)
        .with_timeout(rpc_timeout)
        .with_keep_alive(rpc_timeout, rpc_timeout);
    let mut client = Client::connect(&s.endpoints, Some(options)).await?;
    let asked_at = Instant::now();
    let ttl_s = i64::try_from(s.lease_ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = client.lease_grant(ttl_s, None).await?.id();
    let key = s.key.as_bytes().to_vec();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            s.advertise.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = client.txn(txn).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        let term = u64::try_from(revision).unwrap_or(0);
        tracing::info!(term, "elected leader");
        lead(client, lease, term, asked_at, s, tx, resign).await;
        return Ok(Campaign::Over);
    }
    // Someone else leads: our lease is not needed while we wait.
    let _ = client.lease_revoke(lease).await;
    let leader = resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_owned)),
        _ => None,
    });
    tracing::info!(leader = leader.as_deref().unwrap_or("?"), "standing by");
    tx.send_replace(Role::Standby { leader });
    let mut events = client
        .watch(
            key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await?;
    loop {
        let msg = tokio::select! {
            () = resign.cancelled() => return Ok(Campaign::Over),
            msg = events.message() => msg?,
        };
        let Some(msg) = msg else {
            return Ok(Campaign::Again);
        };
        if msg.canceled() {
            return Ok(Campaign::Again);
        }
        for event in msg.events() {
            match event.event_type() {
                EventType::Delete => return Ok(Campaign::Again),
                EventType::Put => {
                    let leader = event
                        .kv()
                        .and_then(|kv| kv.value_str().ok().map(str::to_owned));
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
    let mut renewed_at = asked_at;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval(s.lease_ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = resign.cancelled() => {
                tx.send_replace(Role::SteppedDown);
                // Deleting the key now lets a standby take over at once.
                let revoke = client.lease_revoke(lease);
                if tokio::time::timeout(s.lease_ttl / 4, revoke).await.is_ok() {
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
                if stream.is_none() {
                    sent.clear();
                    let open = client.lease_keep_alive(lease);
                    match tokio::time::timeout(s.lease_ttl / 4, open).await {
                        Ok(Ok(pair)) => stream = Some(pair),
                        Ok(Err(e)) => tracing::warn!(error = %e, "leader keep-alive stream failed"),
                        Err(_) => tracing::warn!("leader keep-alive stream timed out"),
                    }
                }
                if let Some((keeper, _)) = stream.as_mut() {
                    let at = Instant::now();
                    // Bounded: a stalled connection must not hold up the deadline above.
                    let send = tokio::time::timeout(s.lease_ttl / 4, keeper.keep_alive()).await;
                    if matches!(send, Ok(Ok(()))) {
                        sent.push_back(at);
                    } else {
                        stream = None;
                    }
                }
            }
            msg = async { match stream.as_mut() {
                Some((_, s)) => s.message().await,
                None => std::future::pending().await,
            } } => match msg {
                Ok(Some(r)) if r.ttl() > 0 => {
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
