//! Leases this data plane holds. A `LeaseGuard` releases its lease exactly once, when it
//! is dropped (response finished, client gone, failover moved on, or a panic), through
//! a background releaser that batches Release calls. The registry also answers "which
//! leases do I hold" for re-adoption when the session re-attaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::ControlClient;
use super::domain::HeldLease;
use super::session::SessionState;

/// What the releaser sends to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    Lease(String),
    /// A request given up while its Admit call was pending (see `abandon`).
    Request(String),
    /// A request that ended without a usage record (see `unbilled`).
    Unbilled(String),
}

#[derive(Clone)]
pub struct LeaseRegistry {
    held: Arc<Mutex<HashMap<String, HeldLease>>>,
    release_tx: mpsc::UnboundedSender<Release>,
}

impl LeaseRegistry {
    /// The registry and the receiving end its releaser task consumes.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Release>) {
        let (release_tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                held: Arc::default(),
                release_tx,
            },
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldLease>> {
        // Single inserts/removes only: a poisoned map is still consistent.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn hold(&self, lease_id: &str, user_id: i64, account_id: i64) -> LeaseGuard {
        self.lock().insert(
            lease_id.to_owned(),
            HeldLease {
                lease_id: lease_id.to_owned(),
                user_id,
                account_id,
            },
        );
        LeaseGuard {
            id: lease_id.to_owned(),
            registry: self.clone(),
        }
    }

    pub fn held(&self) -> Vec<HeldLease> {
        self.lock().values().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, id: &str) {
        if self.lock().remove(id).is_some() {
            // The releaser outlives every guard; if it is gone the process is exiting
            // and the control plane frees the session's leases after the grace.
            let _ = self.release_tx.send(Release::Lease(id.to_owned()));
        }
    }

    /// A lease the control plane granted but this process cannot use (the answer was
    /// malformed): it is never held, only given back.
    pub fn give_back(&self, lease_id: &str) {
        let _ = self.release_tx.send(Release::Lease(lease_id.to_owned()));
    }

    /// The request held a lease but ends without a usage record (its attempts failed,
    /// or an upstream error was passed through): the control plane stops keeping what
    /// it would estimate the request's usage from if this process died.
    pub fn unbilled(&self, request_id: &str) {
        let _ = self
            .release_tx
            .send(Release::Unbilled(request_id.to_owned()));
    }

    /// The client left while the request's Admit call was pending, and the call was
    /// cancelled: a lease may have been granted that this process never saw. The
    /// control plane frees anything granted for the request, even a grant still racing.
    pub fn abandon(&self, request_id: &str) {
        let _ = self
            .release_tx
            .send(Release::Request(request_id.to_owned()));
    }
}

#[derive(Debug)]
pub struct LeaseGuard {
    pub id: String,
    registry: LeaseRegistry,
}

impl std::fmt::Debug for LeaseRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeaseRegistry({} held)", self.count())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.registry.release(&self.id);
    }
}

/// Sends releases in batches; retries a failed batch a few times (after that the
/// control plane's session grace frees them anyway).
pub async fn run_releaser(
    client: ControlClient,
    session: watch::Receiver<SessionState>,
    mut rx: mpsc::UnboundedReceiver<Release>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            id = rx.recv() => match id { Some(id) => id, None => return },
            () = stop.cancelled() => {
                // Final flush of whatever is queued.
                let mut rest = Vec::new();
                while let Ok(id) = rx.try_recv() { rest.push(id); }
                if !rest.is_empty() { send_batch(&client, &session, rest).await; }
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        send_batch(&client, &session, batch).await;
    }
}

async fn send_batch(
    client: &ControlClient,
    session: &watch::Receiver<SessionState>,
    batch: Vec<Release>,
) {
    let (mut lease_ids, mut request_ids, mut unbilled) = (Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        match r {
            Release::Lease(id) => lease_ids.push(id),
            Release::Request(id) => request_ids.push(id),
            Release::Unbilled(id) => unbilled.push(id),
        }
    }
    let mut delay = Duration::from_millis(50);
    for attempt in 0..5 {
        let session_id = session.borrow().session_id.clone().unwrap_or_default();
        match client
            .release(
                session_id,
                lease_ids.clone(),
                request_ids.clone(),
                unbilled.clone(),
            )
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, count = lease_ids.len(), "release failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::warn!(
        count = lease_ids.len(),
        "giving up on release; the session grace will free them"
    );
}
