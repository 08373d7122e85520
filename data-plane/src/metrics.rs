//! Prometheus metrics of the data plane (`/metrics` on the admin port: OpenMetrics text
//! when asked for, else the classic text format). Names follow
//! `tollgate_dp_<thing>_<unit>` (the control plane's are `tollgate_cp_…`).

pub mod flow;

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
    /// The shared error code of an error answer (`none` for a success).
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Edge abuse limits (http_server.rs, proxy/throttle.rs).
#[derive(Default)]
pub struct EdgeMetrics {
    pub connections_open: Gauge,
    /// Connections closed at accept: `total` or `per_ip` cap.
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Connections ended by a limit: `header_timeout`, `header_too_large`.
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub invalid_keys_throttled: Counter,
}

impl EdgeMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "connections_open",
            "Client connections open on the proxy port",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed at accept by a cap (total or per IP)",
            self.connections_refused.clone(),
        );
        r.register(
            "connections_closed_by_limit",
            "Client connections ended by a header limit (read timeout or size)",
            self.connections_closed.clone(),
        );
        r.register(
            "invalid_keys_throttled",
            "Requests refused with 429 because their IP sent too many invalid API keys",
            self.invalid_keys_throttled.clone(),
        );
    }
}

pub struct Metrics {
    registry: Registry,
    pub session_attached: Gauge,
    pub session_attaches: Counter,
    pub invalidations: Counter,
    pub requests: Family<RequestLabels, Counter>,
    /// The `requests` series of a successful answer on each route of `ROUTES`, taken from
    /// the family at first use (see `count_request`).
    request_ok_handles: [OnceLock<Counter>; ROUTES.len()],
    pub control_plane_calls: Family<CallLabels, Counter>,
    pub usage: UsageMetrics,
    pub edge: EdgeMetrics,
    pub flow: flow::FlowMetrics,
}

/// The usage queue (control/usage.rs): how much is waiting, where, for how long.
#[derive(Default)]
pub struct UsageMetrics {
    /// Records waiting for the control plane, in memory and in the spill file.
    pub queued: Gauge,
    pub in_memory: Gauge,
    /// The most records ever held in memory at once (never above the cap).
    pub in_memory_peak: Gauge,
    pub spill_file: Gauge,
    pub spilled: Counter,
    pub oldest_age_seconds: Gauge,
    pub retries: Counter,
    pub dead_lettered: Counter,
    pub acked: Counter,
    pub spill_errors: Counter,
}

impl UsageMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("usage");
        r.register(
            "queue_records",
            "Usage records waiting for the control plane (memory and spill file)",
            self.queued.clone(),
        );
        r.register(
            "queue_memory_records",
            "Usage records held in memory",
            self.in_memory.clone(),
        );
        r.register(
            "queue_memory_peak_records",
            "Most usage records ever held in memory at once (at most the memory cap)",
            self.in_memory_peak.clone(),
        );
        r.register(
            "spill_file_records",
            "Usage records waiting in the spill file",
            self.spill_file.clone(),
        );
        r.register(
            "spilled_records",
            "Usage records written to the spill file (memory cap reached)",
            self.spilled.clone(),
        );
        r.register(
            "oldest_record_age_seconds",
            "Age of the oldest usage record waiting (0 when none)",
            self.oldest_age_seconds.clone(),
        );
        r.register(
            "retries",
            "Usage records sent again after a try that did not store them",
            self.retries.clone(),
        );
        r.register(
            "dead_lettered_records",
            "Usage records the control plane refused for good (dead-lettered)",
            self.dead_lettered.clone(),
        );
        r.register(
            "acked_records",
            "Usage records the control plane acknowledged as stored",
            self.acked.clone(),
        );
        r.register(
            "spill_errors",
            "Failed writes or reads of the usage spill file (records kept in memory)",
            self.spill_errors.clone(),
        );
    }
}

/// The routes whose successful answers have a cached counter handle.
const ROUTES: [&str; 4] = [
    "responses",
    "chat_completions",
    "models",
    "response_operation",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate_dp");
        let session_attached = Gauge::default();
        registry.register(
            "control_plane_session_attached",
            "1 while attached to the control plane",
            session_attached.clone(),
        );
        let session_attaches = Counter::default();
        registry.register(
            "control_plane_session_attaches",
            "Successful attaches to the control plane (reconnects included)",
            session_attaches.clone(),
        );
        let invalidations = Counter::default();
        registry.register(
            "cache_invalidations",
            "Invalidation messages received from the control plane",
            invalidations.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Client HTTP responses by route, status and error code (load-shed and panic answers included)",
            requests.clone(),
        );
        let control_plane_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "control_plane_calls",
            "gRPC calls to the control plane by method",
            control_plane_calls.clone(),
        );
        let usage = UsageMetrics::default();
        usage.register(&mut registry);
        let edge = EdgeMetrics::default();
        edge.register(&mut registry);
        let flow = flow::FlowMetrics::default();
        flow.register(&mut registry);
        Self {
            flow,
            edge,
            registry,
            usage,
            session_attached,
            session_attaches,
            invalidations,
            requests,
            request_ok_handles: Default::default(),
            control_plane_calls,
        }
    }

    /// Counts one answer. A success (200, no error code) on a known route counts through
    /// its cached handle: the series appears when first counted, as through the family,
    /// without hashing the labels into the family's map per request.
    pub fn count_request(&self, route: &'static str, status: u16, code: &'static str) {
        let labels = || RequestLabels {
            route,
            status,
            code,
        };
        let slot = (status == 200 && code == "none")
            .then(|| ROUTES.iter().position(|r| *r == route))
            .flatten();
        match slot {
            Some(i) => self.request_ok_handles[i]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        self.render(Some(tollgate_shared::metrics_text::OPENMETRICS))
            .0
    }

    /// The text in the format `accept` asks for, and its content type.
    pub fn render(&self, accept: Option<&str>) -> (String, &'static str) {
        tollgate_shared::metrics_text::render(&self.registry, accept)
    }
}
