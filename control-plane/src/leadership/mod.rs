//! Leadership: "am I the leader, since which term". Only the leader serves `Gateway` and
//! `Admin` and runs the once-only background jobs; standbys answer health NOT_SERVING
//! and refuse calls naming the leader ([`gate`]).
//!
//! With etcd configured the replicas campaign through a lease-backed key ([`etcd`], the
//! only code that knows etcd). Without it this process is the leader from the start.
//! A leader that loses (or gives up) leadership never becomes leader again in the same
//! process: its live slot state would be stale, so it stops serving and the process
//! exits for its supervisor to restart it as a fresh standby.

mod etcd;
pub mod gate;

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// This replica's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not (yet) the leader; `leader` is the current leader's advertised URL when known.
    Standby { leader: Option<String> },
    /// Serving. `term` grows with every election won (the etcd revision of the election
    /// key; 1 without etcd).
    Leader { term: u64 },
    /// Was the leader (or stopped campaigning): serves nothing more.
    SteppedDown,
}

/// How to campaign.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    pub endpoints: Vec<String>,
    pub key: String,
    /// The URL standbys tell data planes to dial for this replica.
    pub advertise: String,
    pub lease_ttl: Duration,
}

/// A view of this replica's role, cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    resign: CancellationToken,
    elected: bool,
    /// Without etcd the role never changes; its sender lives as long as the views.
    _fixed: Option<std::sync::Arc<watch::Sender<Role>>>,
}

impl Leadership {
    /// No etcd: this process is the only control plane and leads from the start.
    pub fn single() -> Self {
        let (tx, role) = watch::channel(Role::Leader { term: 1 });
        Self {
            role,
            resign: CancellationToken::new(),
            elected: false,
            _fixed: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Campaigns through etcd on `tasks` until elected, then leads until resigned or
    /// unable to renew. The owner must `resign` when it stops (the drain does).
    pub fn campaign(settings: ElectionSettings, tasks: &TaskTracker) -> Self {
        let (tx, role) = watch::channel(Role::Standby { leader: None });
        let resign = CancellationToken::new();
        tasks.spawn(etcd::run(settings, tx, resign.clone()));
        Self {
            role,
            resign,
            elected: true,
            _fixed: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader { .. })
    }

    /// Whether leadership comes from an election (and so can change hands).
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Waits until this replica leads; `None` if it stepped down first.
    pub async fn leading(&self) -> Option<u64> {
        let mut role = self.role.clone();
        let result = role
            .wait_for(|r| !matches!(r, Role::Standby { .. }))
            .await
            .ok()
            .map(|r| r.clone());
        match result {
            Some(Role::Leader { term }) => Some(term),
            _ => None,
        }
    }

    /// Waits until this replica, having led (or campaigned), serves no more.
    pub async fn stepped_down(&self) {
        let mut role = self.role.clone();
        let _ = role.wait_for(|r| *r == Role::SteppedDown).await;
    }

    /// Gives leadership up at once (and stops campaigning): stops serving and releases
    /// the etcd lease, so a standby takes over without waiting for the lease to expire.
    /// The SIGTERM drain calls it right after reporting NOT_SERVING. No-op without etcd.
    pub fn resign(&self) {
        self.resign.cancel();
    }
}
