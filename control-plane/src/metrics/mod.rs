//! Prometheus metrics of the control plane, served on `TOLLGATE_METRICS_LISTEN`
//! (`http.rs`; OpenMetrics text when asked for, else the classic text format). Names
//! follow `tollgate_cp_<thing>_<unit>`; labels take only bounded values (outcomes from
//! fixed lists; account ids, bounded by the operator's accounts).
//!
//! Counters are bumped where things happen (the Admit and ReportUsage handlers, the
//! token refresher, the lease reaper); live state (slots, sessions, leases) is read from
//! the engines when scraped.

mod http;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use http::serve;

use crate::admission::Admission;
use crate::gateway::session::Sessions;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    pub account_id: i64,
}

/// Counts by outcome (from a fixed list at each call site).
pub type Outcomes = Family<OutcomeLabels, Counter>;

/// Admit decisions and their latency (the Admit handler).
pub struct AdmitMetrics {
    /// `granted`, or the refusal's error code, or `unknown_session` / `invalid`.
    pub decisions: Outcomes,
    pub latency: Histogram,
    /// Time an Admit waited in slot queues (part of `latency`).
    pub queued: Histogram,
}

/// Usage records and charge transactions (the ReportUsage handler).
pub struct BillingMetrics {
    /// `charged`, `replayed` (already charged: acknowledged again), `dead_lettered`
    /// (refused for good), `retry` (left for the data plane to send again).
    pub records: Outcomes,
    /// One record's charge: its own work (checks, pricing, its savepoint in the batch's
    /// transaction) plus the commit of its batch.
    pub charge_latency: Histogram,
    /// What charged records cost (actual, after multipliers), in nano-USD: exact
    /// integers, never floats.
    pub cost_nano_usd: Counter,
    /// Tokens of charged records, by kind.
    pub tokens: Family<KindLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

impl BillingMetrics {
    pub fn record(&self, outcome: &'static str) {
        self.records.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A record charged for the first time.
    pub fn charged(&self, usage: &crate::model::UsageRecord) {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        self.cost_nano_usd.inc_by(n(usage.actual_cost_nanos));
        for (kind, v) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_tokens),
            ("reasoning", usage.reasoning_tokens),
        ] {
            self.tokens.get_or_create(&KindLabels { kind }).inc_by(n(v));
        }
    }
}

/// Leadership: `leader` 1 while this control plane serves as leader, `term` its term.
/// A single control plane without etcd is leader of term 0 from the start.
pub struct Leadership {
    leader: Gauge,
    term: Gauge,
}

impl Leadership {
    pub fn set(&self, leader: bool, term: u64) {
        self.leader.set(i64::from(leader));
        self.term.set(i64::try_from(term).unwrap_or(i64::MAX));
    }
}

/// What is read from the engines at scrape time.
struct Live {
    admission: Admission,
    sessions: Sessions,
    slots_in_use: Family<AccountLabels, Gauge>,
    slots_waiting: Family<AccountLabels, Gauge>,
    user_slots_in_use: Gauge,
    user_waiters: Gauge,
    sessions_attached: Gauge,
    leases_held: Gauge,
    /// Accounts ever seen busy: reported at 0 once idle rather than vanishing.
    seen: Mutex<BTreeSet<i64>>,
}

impl Live {
    fn refresh(&self) {
        let usage = self.admission.slot_usage();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for id in seen.iter() {
            let l = AccountLabels { account_id: *id };
            self.slots_in_use.get_or_create(&l).set(0);
            self.slots_waiting.get_or_create(&l).set(0);
        }
        for (id, u) in &usage.accounts {
            seen.insert(*id);
            let l = AccountLabels { account_id: *id };
            self.slots_in_use.get_or_create(&l).set(i64::from(u.in_use));
            self.slots_waiting
                .get_or_create(&l)
                .set(i64::from(u.waiting));
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.user_slots_in_use.set(gauge(usage.users_in_use));
        self.user_waiters.set(gauge(usage.users_waiting));
        self.sessions_attached
            .set(gauge(self.sessions.connected_count() as u64));
        self.leases_held
            .set(gauge(self.admission.lease_count() as u64));
    }
}

pub struct Metrics {
    registry: Registry,
    pub admit: AdmitMetrics,
    pub billing: BillingMetrics,
    pub leadership: Leadership,
    live: Mutex<Option<Live>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate_cp");
        let admit = AdmitMetrics {
            decisions: Outcomes::default(),
            // 100 µs … ~3.3 s (a wait for slots can last the wait timeout).
            latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            queued: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        };
        registry.register(
            "admit_decisions",
            "Admit calls by outcome (granted, or the refusal's error code)",
            admit.decisions.clone(),
        );
        registry.register(
            "admit_latency_seconds",
            "Time to answer an Admit call, slot waits included",
            admit.latency.clone(),
        );
        registry.register(
            "admit_queued_seconds",
            "Time an Admit call waited in user and account slot queues",
            admit.queued.clone(),
        );
        let billing = BillingMetrics {
            records: Outcomes::default(),
            charge_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            cost_nano_usd: Counter::default(),
            tokens: Family::default(),
        };
        registry.register(
            "charged_cost_nano_usd",
            "Actual cost of charged usage records, in nano-USD",
            billing.cost_nano_usd.clone(),
        );
        registry.register(
            "charged_tokens",
            "Tokens of charged usage records by kind (input, output, cached, reasoning)",
            billing.tokens.clone(),
        );
        registry.register(
            "usage_records",
            "Usage records by outcome (charged, replayed, dead_lettered, retry)",
            billing.records.clone(),
        );
        registry.register(
            "charge_latency_seconds",
            "Time of one usage record's charge: its own statements plus its batch's commit",
            billing.charge_latency.clone(),
        );
        let leadership = Leadership {
            leader: Gauge::default(),
            term: Gauge::default(),
        };
        leadership.set(true, 0);
        registry.register(
            "leader",
            "1 while this control plane is the leader",
            leadership.leader.clone(),
        );
        registry.register(
            "leader_term",
            "The leadership term this control plane serves (or last served)",
            leadership.term.clone(),
        );
        Self {
            registry,
            admit,
            billing,
            leadership,
            live: Mutex::new(None),
        }
    }

    /// Registers what is read from the engines when scraped, and the engines' own
    /// counters (token refreshes, reaped leases). Called once by the composition root.
    pub fn observe(
        &mut self,
        admission: &Admission,
        sessions: &Sessions,
        token_refreshes: Outcomes,
    ) {
        let live = Live {
            admission: admission.clone(),
            sessions: sessions.clone(),
            slots_in_use: Family::default(),
            slots_waiting: Family::default(),
            user_slots_in_use: Gauge::default(),
            user_waiters: Gauge::default(),
            sessions_attached: Gauge::default(),
            leases_held: Gauge::default(),
            seen: Mutex::default(),
        };
        let r = &mut self.registry;
        r.register(
            "account_slots_in_use",
            "Slots in use per account",
            live.slots_in_use.clone(),
        );
        r.register(
            "account_slot_waiters",
            "Admit calls waiting for a slot, per account",
            live.slots_waiting.clone(),
        );
        r.register(
            "user_slots_in_use",
            "Slots in use, all users together",
            live.user_slots_in_use.clone(),
        );
        r.register(
            "user_slot_waiters",
            "Admit calls waiting for a user slot, all users together",
            live.user_waiters.clone(),
        );
        r.register(
            "sessions_attached",
            "Data-plane sessions attached",
            live.sessions_attached.clone(),
        );
        r.register("leases_held", "Leases held", live.leases_held.clone());
        r.register(
            "leases_reaped",
            "Leases freed because their session was gone past the grace period",
            admission.leases_reaped(),
        );
        r.register(
            "token_refreshes",
            "OAuth token-endpoint refreshes by outcome (renewed, failed, interrupted)",
            token_refreshes,
        );
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(live);
    }

    /// The text in the format `accept` asks for, and its content type.
    pub fn render(&self, accept: Option<&str>) -> (String, &'static str) {
        if let Some(live) = &*self.live.lock().unwrap_or_else(PoisonError::into_inner) {
            live.refresh();
        }
        tollgate_shared::metrics_text::render(&self.registry, accept)
    }
}

/// The metrics as the composition root shares them.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leadership_gauge_follows_its_setter() {
        let m = Metrics::new();
        let (text, _) = m.render(None);
        assert!(text.contains("\ntollgate_cp_leader 1\n"), "{text}");
        assert!(text.contains("\ntollgate_cp_leader_term 0\n"), "{text}");
        m.leadership.set(false, 7);
        let (text, _) = m.render(None);
        assert!(text.contains("\ntollgate_cp_leader 0\n"), "{text}");
        assert!(text.contains("\ntollgate_cp_leader_term 7\n"), "{text}");
    }
}
