//! Logging and tracing shared by both binaries.
//!
//! Logs: human-readable or JSON (one object per line; `--log-json`), filtered by
//! `RUST_LOG` (default `info`). JSON lines carry the fields of the spans they happen in,
//! so a request's lines carry its `request_id` and `trace_id`.
//!
//! Traces: spans are exported over OTLP/gRPC only when an endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`). With an endpoint, or with JSON logs, spans get
//! OpenTelemetry ids and W3C `traceparent` headers are honoured and sent: a client's
//! trace continues through the data plane, its Admit call and its upstream request.
//! [`flush`] exports what is buffered (the drain calls it last); [`shutdown`] at exit.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How a process logs and traces.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `service.name` of the exported spans.
    pub service: &'static str,
    pub json: bool,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; `None` = no export.
    pub otlp_endpoint: Option<String>,
    /// Log filter directives; `None` = `RUST_LOG`, else `info`.
    pub filter: Option<String>,
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Logging only, as before traces existed (kept for callers that need nothing more).
pub fn init_logging(json: bool) {
    let _ = init(&Options {
        json,
        ..Options::default()
    });
}

/// Installs logging (to stdout) and, if configured, the span exporter.
pub fn init(opts: &Options) -> Result<(), String> {
    // Colours only on a terminal: logs redirected to files stay plain text.
    let ansi = !opts.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    install(opts, std::io::stdout, ansi)
}

/// Installs logging to `writer` (tests capture it) and, if configured, the exporter.
/// A second install in one process (tests start several planes) keeps the first.
pub fn init_with<W>(opts: &Options, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(opts, writer, false)
}

fn install<W>(opts: &Options, writer: W, ansi: bool) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match &opts.filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let fmt = if opts.json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed()
    };
    let otel = if opts.otlp_endpoint.is_some() || opts.json {
        let provider = provider(opts)?;
        let tracer = provider.tracer("tollgate");
        let _ = PROVIDER.set(provider);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false),
        )
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(())
}

/// The tracer provider: batching to the OTLP endpoint if any, else ids only (for
/// propagation and the logs' `trace_id`).
fn provider(opts: &Options) -> Result<SdkTracerProvider, String> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(opts.service)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &opts.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Exports the spans buffered so far (the drain's last step; tests).
pub fn flush() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.force_flush()
    {
        tracing::warn!(error = %e, "flushing traces failed");
    }
}

/// The drain's last step: exports the buffered spans, waiting at most until `deadline`.
/// The export blocks (the SDK's batch thread does the sending), so it runs on a blocking
/// thread; one that overruns is abandoned to the process exit that follows.
pub async fn flush_until(deadline: tokio::time::Instant) {
    let Some(p) = PROVIDER.get().cloned() else {
        return;
    };
    let flush = tokio::task::spawn_blocking(move || p.force_flush());
    match tokio::time::timeout_at(deadline, flush).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing traces failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
        Err(_) => tracing::warn!("drain: flushing traces overran the budget"),
    }
}

/// Flushes and stops the exporter (at process exit).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the trace in `headers`' `traceparent`, if there is one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Whether spans carry trace ids (an OTLP exporter, or JSON logs with their
/// `trace_id`): without, [`inject`] never writes anything and callers may skip building
/// the span they would inject.
pub fn propagating() -> bool {
    PROVIDER.get().is_some()
}

/// Writes `span`'s `traceparent` into `headers` (replacing any), when it has one.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// `span`'s trace id (32 hex digits), when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
