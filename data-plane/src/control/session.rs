//! The data plane's one session with the control plane: Attach, heartbeats, and the
//! invalidation push. Reconnects with capped exponential backoff and jitter, following a
//! standby's "the leader is X" answer at once (see `targets.rs`); the data plane reports
//! not-ready only after a sustained outage (`health.rs`). State is published through a
//! `watch` channel.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

use super::convert;
use super::domain::{HeldLease, Invalidation};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Set while attached.
    pub session_id: Option<String>,
    /// The control plane's epoch at the last attach.
    pub epoch: u64,
    /// Number of successful attaches so far (a test can observe reconnects).
    pub attaches: u64,
    /// When the last session was lost (`None` while attached or before the first).
    pub detached_at: Option<std::time::Instant>,
}

impl SessionState {
    pub fn attached(&self) -> bool {
        self.session_id.is_some()
    }
}

/// What the session exchanges with the rest of the data plane.
pub trait SessionHooks: Send + Sync + 'static {
    fn invalidate(&self, msg: &Invalidation);
    /// Called on every (re)attach: the cache must be dropped when the epoch changed.
    fn attached(&self, epoch: u64);
    /// Leases still held, declared on (re)attach so the control plane re-adopts them.
    fn held_leases(&self) -> Vec<HeldLease>;
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Kept short: during a failover the new leader holds grants back until the data planes
/// have re-attached (its reconcile window), so a data plane must retry well within it.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub async fn run(
    control: super::ControlClient,
    data_plane_id: String,
    state: watch::Sender<SessionState>,
    sink: std::sync::Arc<dyn SessionHooks>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        let (index, mut client) = control.raw();
        match attach_once(
            &mut client,
            &data_plane_id,
            &state,
            sink.as_ref(),
            &shutdown,
        )
        .await
        {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) if control.failed(index, &e) => {
                tracing::info!(error = %e, "following the control-plane leader");
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "control-plane session failed");
            }
        }
        state.send_modify(|s| {
            if s.session_id.take().is_some() {
                s.detached_at = Some(std::time::Instant::now());
            }
        });
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One session: returns `Ok` when it ended normally (server hung up or shutdown).
async fn attach_once(
    client: &mut GatewayClient<Channel>,
    data_plane_id: &str,
    state: &watch::Sender<SessionState>,
    sink: &dyn SessionHooks,
    shutdown: &CancellationToken,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel::<pb::SessionUp>(16);
    let attach = pb::Attach {
        data_plane_id: data_plane_id.to_owned(),
        held_leases: sink
            .held_leases()
            .into_iter()
            .map(convert::held_lease)
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    tx.send(pb::SessionUp {
        msg: Some(pb::session_up::Msg::Attach(attach)),
    })
    .await
    .map_err(|_| tonic::Status::internal("session channel closed"))?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let attached = match inbound.next().await {
        Some(Ok(pb::SessionDown {
            msg: Some(pb::session_down::Msg::Attached(a)),
        })) => a,
        Some(Err(e)) => return Err(e),
        _ => {
            return Err(tonic::Status::internal(
                "control plane did not answer Attach",
            ));
        }
    };
    sink.attached(attached.epoch);
    state.send_modify(|s| {
        s.session_id = Some(attached.session_id.clone());
        s.epoch = attached.epoch;
        s.attaches += 1;
        s.detached_at = None;
    });
    tracing::info!(
        session_id = attached.session_id,
        "attached to control plane"
    );
    let interval = Duration::from_millis(u64::from(attached.heartbeat_interval_ms.max(100)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, in_flight: 0 };
                if tx.send(pb::SessionUp { msg: Some(pb::session_up::Msg::Heartbeat(hb)) }).await.is_err() {
                    return Ok(());
                }
            }
            msg = inbound.next() => match msg {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(down)) => match down.msg {
                    Some(pb::session_down::Msg::Invalidate(inv)) => sink.invalidate(&convert::invalidation(inv)),
                    Some(pb::session_down::Msg::HeartbeatAck(_)) | Some(pb::session_down::Msg::Attached(_)) | None => {}
                },
            },
        }
    }
}

/// `base` ± 25%: data planes that lost the same control plane do not retry in step.
fn jitter(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms * 3 / 4 + rand::random_range(0..=ms / 2))
}
