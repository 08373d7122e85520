//! Metrics of the Responses flow: the gateway's own added latency, the upstream's
//! latency and time to first byte, streams open, tokens, and the auth cache.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct FlowMetrics {
    /// Time a request spent in the gateway itself: from its arrival to the upstream's
    /// answer, less the time waiting on upstreams and in the control plane's slot queues.
    pub added_latency: Histogram,
    /// Upstream request sent → response head received, per attempt.
    pub upstream_response: Histogram,
    /// Upstream request sent → first byte of a successful body.
    pub upstream_first_byte: Histogram,
    pub streams_open: Gauge,
    /// Request-body bytes held (charged to the body budget): a body is let go once the
    /// upstream has answered, so open streams hold none.
    pub body_bytes_held: Gauge,
    /// Tokens reported (or estimated) by kind: input, output, cached, reasoning.
    pub tokens: Family<KindLabels, Counter>,
    /// Auth-cache lookups: `hit` (answered from the cache) or `miss` (an Authorize call).
    pub auth_cache: Family<ResultLabels, Counter>,
}

impl Default for FlowMetrics {
    fn default() -> Self {
        Self {
            // 50 µs … ~1.6 s: the overhead is expected well below a millisecond.
            added_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 ms … ~33 s.
            upstream_response: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            upstream_first_byte: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            streams_open: Gauge::default(),
            body_bytes_held: Gauge::default(),
            tokens: Family::default(),
            auth_cache: Family::default(),
        }
    }
}

impl FlowMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "added_latency_seconds",
            "Time a request spent in the gateway itself (not waiting on the upstream or in a slot queue), until the upstream answered",
            self.added_latency.clone(),
        );
        r.register(
            "upstream_response_seconds",
            "Upstream request sent to response head received, per attempt",
            self.upstream_response.clone(),
        );
        r.register(
            "upstream_first_byte_seconds",
            "Upstream request sent to the first byte of a successful answer",
            self.upstream_first_byte.clone(),
        );
        r.register(
            "streams_open",
            "Streaming responses being relayed to clients",
            self.streams_open.clone(),
        );
        r.register(
            "request_body_bytes_held",
            "Request-body bytes held for attempts not yet answered by an upstream (the body budget in use)",
            self.body_bytes_held.clone(),
        );
        r.register(
            "tokens",
            "Tokens of answered requests by kind (input, output, cached, reasoning)",
            self.tokens.clone(),
        );
        r.register(
            "auth_cache_lookups",
            "API-key lookups by result (hit: from the cache, miss: asked the control plane)",
            self.auth_cache.clone(),
        );
    }

    pub fn add_tokens(&self, kind: &'static str, n: i64) {
        if let Ok(n) = u64::try_from(n) {
            self.tokens.get_or_create(&KindLabels { kind }).inc_by(n);
        }
    }
}

/// Counts one open stream while alive.
pub struct OpenStream(Gauge);

impl OpenStream {
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
