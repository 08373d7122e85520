//! The SIGTERM drain of both planes: one ordered procedure inside one total budget
//! (`TOLLGATE_DRAIN_TIMEOUT_SECS`), which the Kubernetes manifests keep shorter than the
//! pods' `terminationGracePeriodSeconds` (`tests/tests/k8s.rs` pins the two together).
//!
//! Data plane: not ready (readiness 503 at once) → stop accepting → finish in-flight
//! requests and open streams → at `cut_at`, end what is still open (streams get an SSE
//! `error` event, usage is reported, estimated if the upstream's is unknown) → flush usage
//! (what the control plane does not take in time goes to the spill file) → cancel
//! background tasks → flush telemetry.
//! Control plane: gRPC health NOT_SERVING → (give up leadership) → stop accepting and
//! end the data planes' sessions (they re-attach elsewhere) → finish in-flight calls →
//! at `cut_at`, drop the calls still open → cancel background tasks → close storage.
//! Each step has its own instant in the `Plan`, so no step can eat another's time and
//! the whole fits the budget.

use std::time::Duration;

use tokio::time::Instant;

/// The budget both planes default to, seconds (the manifests' grace periods are 45 s).
pub const DEFAULT_BUDGET_SECS: u64 = 30;

/// The part of the budget kept after the cut for ending streams, flushing usage and
/// stopping the rest: a fifth of the budget, at most this much.
const RESERVE_MAX: Duration = Duration::from_secs(6);

/// When each step of one drain must be done, fixed when the drain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub started: Instant,
    /// Requests and streams still open now are ended (SSE error event, usage reported).
    pub cut_at: Instant,
    /// The cut requests have written their last bytes and queued their usage.
    pub ended_by: Instant,
    /// Data plane: usage the control plane has not acknowledged by now goes to the
    /// spill file.
    pub flushed_by: Instant,
    /// Background tasks are stopped (data plane: session, releases, admin port).
    pub stopped_by: Instant,
    /// The end of the budget: storage closed, telemetry flushed, the process exits.
    pub deadline: Instant,
}

impl Plan {
    pub fn new(started: Instant, budget: Duration) -> Self {
        let reserve = (budget / 5).min(RESERVE_MAX);
        let deadline = started + budget;
        let cut_at = deadline - reserve;
        // Of the reserve: a quarter to end the cut requests, half to flush usage, an
        // eighth to stop background tasks, the last eighth for telemetry.
        let ended_by = cut_at + reserve / 4;
        let flushed_by = ended_by + reserve / 2;
        let stopped_by = flushed_by + reserve / 8;
        Self {
            started,
            cut_at,
            ended_by,
            flushed_by,
            stopped_by,
            deadline,
        }
    }

    /// How long the usage flush may keep sending once it starts (at `ended_by` at the
    /// latest, so it is done by `flushed_by`).
    pub fn usage_flush_window(budget: Duration) -> Duration {
        let p = Self::new(Instant::now(), budget);
        p.flushed_by - p.ended_by
    }
}

/// Runs `fut` until `until`; `None` when the instant came first.
pub async fn until<F: std::future::Future>(until: Instant, fut: F) -> Option<F::Output> {
    tokio::time::timeout_at(until, fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_ordered_and_inside_the_budget() {
        for secs in [1, 3, 10, 30, 60, 3_600] {
            let start = Instant::now();
            let budget = Duration::from_secs(secs);
            let p = Plan::new(start, budget);
            assert!(p.started < p.cut_at, "{secs}");
            assert!(p.cut_at < p.ended_by, "{secs}");
            assert!(p.ended_by < p.flushed_by, "{secs}");
            assert!(p.flushed_by < p.stopped_by, "{secs}");
            assert!(p.stopped_by < p.deadline, "{secs}");
            assert_eq!(p.deadline, start + budget);
            // Most of the budget goes to letting requests finish on their own.
            assert!(p.cut_at - p.started >= budget * 4 / 5, "{secs}");
        }
        let p = Plan::new(Instant::now(), Duration::from_secs(30));
        assert_eq!(p.deadline - p.cut_at, Duration::from_secs(6));
    }
}
