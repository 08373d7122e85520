//! Prometheus metrics of the data plane (OpenMetrics text on the admin port). Names
//! follow `tollgate_<thing>_<unit>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub session_attached: Gauge,
    pub session_attaches: Counter,
    pub invalidations: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub control_plane_calls: Family<CallLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
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
            "Client HTTP requests by route and status",
            requests.clone(),
        );
        let control_plane_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "control_plane_calls",
            "gRPC calls to the control plane by method",
            control_plane_calls.clone(),
        );
        Self {
            registry,
            session_attached,
            session_attaches,
            invalidations,
            requests,
            control_plane_calls,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
