//! Which control plane to call. The data plane knows a list of control-plane addresses
//! (or one Kubernetes Service address that routes to the ready leader) and calls one at
//! a time. A standby refuses with `UNAVAILABLE` naming the leader (`x-tollgate-leader`):
//! the data plane moves to that address. An unreachable one moves it to the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tollgate_shared::tls::TlsConnector;
use tonic::transport::Channel;

use crate::error::Result;

/// Metadata on a standby's refusal naming the leader's advertised URL (the control
/// plane's `leadership::gate::LEADER_METADATA`).
const LEADER_METADATA: &str = "x-tollgate-leader";

pub struct Targets {
    tls: Option<TlsConnector>,
    /// Configured addresses first, then leaders learnt from refusals.
    list: Mutex<Vec<(String, GatewayClient<Channel>)>>,
    current: AtomicUsize,
}

impl Targets {
    pub fn new(urls: &[String], tls: Option<TlsConnector>) -> Result<Self> {
        let list = urls
            .iter()
            .map(|u| Ok((u.clone(), super::channel(u, tls.clone())?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tls,
            list: Mutex::new(list),
            current: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, GatewayClient<Channel>)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client to call now, with its index (for [`Targets::failed`]).
    pub fn current(&self) -> (usize, GatewayClient<Channel>) {
        let list = self.lock();
        let i = self.current.load(Ordering::Acquire) % list.len().max(1);
        (i, list[i].1.clone())
    }

    /// A call to target `index` failed with `status`. Returns whether it was redirected
    /// to a named leader (worth retrying at once). Concurrent failures of one target
    /// move on once: only the first still sees `index` as current.
    pub fn failed(&self, index: usize, status: &tonic::Status) -> bool {
        if !is_failover(status) {
            return false;
        }
        let hint = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut list = self.lock();
        if let Some(url) = hint {
            let found = list.iter().position(|(u, _)| *u == url);
            let at = match found {
                Some(at) => at,
                None => match super::channel(&url, self.tls.clone()) {
                    Ok(client) => {
                        tracing::info!(leader = url, "learnt the control-plane leader's address");
                        list.push((url, client));
                        list.len() - 1
                    }
                    Err(_) => return false,
                },
            };
            self.current.store(at, Ordering::Release);
            return at != index;
        }
        let next = (index + 1) % list.len().max(1);
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
        false
    }
}

/// Whether a failed Gateway call may succeed on another control plane (unreachable,
/// connection lost, or a standby's refusal) rather than being an answer.
pub fn is_failover(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        let urls = ["http://cp-a:7600", "http://cp-b:7600", "http://cp-c:7600"].map(String::from);
        Targets::new(&urls, None).unwrap()
    }

    fn not_leader(leader: &str) -> tonic::Status {
        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut()
            .insert(LEADER_METADATA, leader.parse().unwrap());
        s
    }

    #[tokio::test]
    async fn follows_the_leader_a_standby_names() {
        let t = targets();
        assert_eq!(t.current().0, 0);
        assert!(t.failed(0, &not_leader("http://cp-c:7600")));
        assert_eq!(t.current().0, 2);
        // An address not configured is learnt and followed.
        assert!(t.failed(2, &not_leader("http://cp-d:7600")));
        assert_eq!(t.current().0, 3);
    }

    #[tokio::test]
    async fn an_unreachable_target_moves_on_once() {
        let t = targets();
        let down = tonic::Status::unavailable("connection refused");
        assert!(!t.failed(0, &down));
        assert_eq!(t.current().0, 1);
        // A second failure reported for the same (stale) target does not skip cp-b.
        assert!(!t.failed(0, &down));
        assert_eq!(t.current().0, 1);
        // An answer (not a failover) leaves the target alone.
        assert!(!t.failed(1, &tonic::Status::invalid_argument("bad")));
        assert_eq!(t.current().0, 1);
    }
}
