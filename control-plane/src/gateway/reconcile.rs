//! The reconcile window after a failover. Live slot state is in the leader's memory, so a
//! newly elected leader starts knowing no lease; the data planes re-attach and declare
//! the leases they hold (re-adopted with their slots counted). Until they have, a grant
//! could push a user or account over its limit, so Admit waits for the window to end.
//! Attach, Authorize, Release and usage reports are not held back.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct GrantHold(Arc<Mutex<Option<Instant>>>);

impl GrantHold {
    /// Holds grants back for `window` from now (on winning an election).
    pub fn hold_for(&self, window: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + window);
    }

    /// Returns once new grants may be made.
    pub async fn wait(&self) {
        let until = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }
}
