//! Data-plane sessions. Each data-plane process holds one `Session` stream; the control
//! plane answers `Attach` with a session id, acknowledges heartbeats, and pushes cache
//! invalidations down the same stream. When the stream ends the session is marked gone;
//! leases it owns are freed once it has been gone longer than the grace period (the
//! lease table lives with admission).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_shared::proto::gateway::v1 as pb;
use tonic::{Status, Streaming};

use super::SessionSettings;
use crate::admission::SessionLiveness;
use crate::events::{Invalidation, Invalidations, Scope};

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub data_plane_id: String,
    pub connected: bool,
    /// When the stream ended; `None` while connected.
    pub gone_since: Option<Instant>,
    pub last_heartbeat: Instant,
}

/// Every session this control plane knows, by session id.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, SessionInfo>>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionInfo>> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // critical section is a single insert/update), so poisoning is safe to ignore.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_connected(&self, session_id: &str) -> bool {
        self.lock().get(session_id).is_some_and(|s| s.connected)
    }

    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|s| s.connected).count()
    }

    /// Sessions gone longer than `grace`; removed from the table and returned.
    pub fn take_expired(&self, grace: std::time::Duration) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, s)| s.gone_since.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            map.remove(id);
        }
        expired
    }

    fn attach(&self, session_id: &str, data_plane_id: &str) {
        let now = Instant::now();
        self.lock().insert(
            session_id.to_owned(),
            SessionInfo {
                data_plane_id: data_plane_id.to_owned(),
                connected: true,
                gone_since: None,
                last_heartbeat: now,
            },
        );
    }

    fn heartbeat(&self, session_id: &str) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.last_heartbeat = Instant::now();
        }
    }

    fn detach(&self, session_id: &str) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.connected = false;
            s.gone_since = Some(Instant::now());
        }
    }
}

pub(super) fn to_pb(inv: &Invalidation, epoch: u64) -> pb::Invalidate {
    let scope = match inv.scope {
        Scope::All => pb::invalidate::Scope::All,
        Scope::Key => pb::invalidate::Scope::Key,
        Scope::User => pb::invalidate::Scope::User,
        Scope::Group => pb::invalidate::Scope::Group,
        Scope::Account => pb::invalidate::Scope::Account,
    };
    pb::Invalidate {
        scope: scope as i32,
        ids: inv.ids.clone(),
        epoch,
    }
}

fn down(msg: pb::session_down::Msg) -> Result<pb::SessionDown, Status> {
    Ok(pb::SessionDown { msg: Some(msg) })
}

/// Admission's view of the sessions (it frees the leases of those gone too long).
impl SessionLiveness for Sessions {
    fn is_connected(&self, session_id: &str) -> bool {
        Sessions::is_connected(self, session_id)
    }

    fn take_expired(&self, grace: std::time::Duration) -> Vec<String> {
        Sessions::take_expired(self, grace)
    }
}

/// Runs one session until the data plane hangs up, the stream errors, or shutdown.
/// `first` is the already-received Attach.
// Each argument is a distinct piece of the session's wiring; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    sessions: Sessions,
    settings: SessionSettings,
    epoch: u64,
    attach: pb::Attach,
    mut incoming: Streaming<pb::SessionUp>,
    mut invalidations: broadcast::Receiver<Invalidation>,
    out: mpsc::Sender<Result<pb::SessionDown, Status>>,
    shutdown: CancellationToken,
    adopted_lease_ids: Vec<String>,
) {
    let session_id = uuid::Uuid::now_v7().to_string();
    sessions.attach(&session_id, &attach.data_plane_id);
    tracing::info!(
        session_id,
        data_plane_id = attach.data_plane_id,
        "data plane attached"
    );
    let attached = pb::Attached {
        session_id: session_id.clone(),
        heartbeat_interval_ms: u32::try_from(settings.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        lease_grace_ms: u32::try_from(settings.lease_grace.as_millis()).unwrap_or(u32::MAX),
        adopted_lease_ids,
        epoch,
    };
    if out
        .send(down(pb::session_down::Msg::Attached(attached)))
        .await
        .is_err()
    {
        sessions.detach(&session_id);
        return;
    }
    // A data plane that misses several heartbeats in a row is treated as gone even if
    // TCP has not noticed yet (half-open connections after a node dies).
    let silence_limit = settings.heartbeat_interval * 3;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            msg = tokio::time::timeout(silence_limit, incoming.next()) => match msg {
                Err(_) => {
                    tracing::warn!(session_id, "data plane silent past three heartbeats; ending session");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::info!(session_id, error = %e, "session stream error");
                    break;
                }
                Ok(Some(Ok(up))) => match up.msg {
                    Some(pb::session_up::Msg::Heartbeat(hb)) => {
                        sessions.heartbeat(&session_id);
                        let ack = pb::HeartbeatAck { seq: hb.seq };
                        if out.send(down(pb::session_down::Msg::HeartbeatAck(ack))).await.is_err() {
                            break;
                        }
                    }
                    Some(pb::session_up::Msg::Attach(_)) | None => {
                        let _ = out.send(Err(Status::invalid_argument("Attach must be sent once, first"))).await;
                        break;
                    }
                },
            },
            inv = invalidations.recv() => {
                let inv = match inv {
                    Ok(inv) => inv,
                    // Missed some: the only safe answer is "drop everything".
                    Err(broadcast::error::RecvError::Lagged(_)) => Invalidation::all(),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if out.send(down(pb::session_down::Msg::Invalidate(to_pb(&inv, epoch)))).await.is_err() {
                    break;
                }
            }
        }
    }
    sessions.detach(&session_id);
    tracing::info!(session_id, "data plane session ended");
}

/// Subscribes before the Attach reply is sent, so that no invalidation published after
/// the data plane's cache was (re)built can be missed.
pub(super) fn subscribe(invalidations: &Invalidations) -> broadcast::Receiver<Invalidation> {
    invalidations.subscribe()
}
