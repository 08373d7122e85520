//! Traces and JSON logs: with an OTLP collector stand-in on loopback (a real tonic
//! `TraceService` decoding the exports), one client request carrying a `traceparent`
//! yields spans from both planes in the client's trace — the data plane's request span
//! a child of the client's span, the control plane's Admit span a child of the data
//! plane's Admit call — and the upstream receives a `traceparent` of that trace naming
//! the data plane's upstream span. Every JSON log line of the run parses, the request's
//! lines carry its request id and trace id, and none holds a secret the run used.
//!
//! One test per binary: the subscriber and the exporter are process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::cluster::ADMIN_TOKEN;
use tollgate_tests::eventually;
use tollgate_tests::fixture::Gateway;

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The collector stand-in: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn of_trace(&self, trace_id: &[u8]) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..bytes * 2].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_both_planes_and_the_upstream() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    #[allow(clippy::disallowed_methods)] // the test's own server, stopped at the end
    let server = tokio::spawn(server);

    tollgate_shared::telemetry::init_with(
        &tollgate_shared::telemetry::Options {
            service: "tollgate-test",
            json: true,
            otlp_endpoint: Some(format!("http://{collector_addr}")),
            filter: Some("debug".into()),
        },
        || Capture,
    )
    .unwrap();

    let gw = Gateway::start(1).await;
    let upstream_key = format!("sk-upstream-{}", random_hex(16));
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.account(admin::CreateAccountRequest {
        name: "traced".into(),
        credential: Some(admin::create_account_request::Credential::ApiKey(
            admin::ApiKeyCredential {
                api_key: upstream_key.clone(),
            },
        )),
        base_url: gw.up.base_url(),
        concurrency: Some(5),
        priority: 1,
        groups: vec![admin::AccountGroup {
            group_id: group,
            priority: 1,
        }],
        ..Default::default()
    })
    .await;
    let (_, client_key) = gw.key(user, Some(group)).await;
    let trace_id = random_hex(16);
    let client_span = random_hex(8);
    let r = gw
        .http
        .post(gw.responses_url(0))
        .bearer_auth(&client_key)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("x-request-id", "client-traced-1")
        .json(&json!({"model": "gpt-5.1", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    r.bytes().await.unwrap();

    // The upstream was sent the gateway's own span of the client's trace.
    let got = gw.up.last().unwrap();
    let upstream_tp = got
        .header("traceparent")
        .expect("traceparent sent")
        .to_owned();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_tp}");
    assert_eq!(parts[1], trace_id, "{upstream_tp}");
    assert_ne!(
        parts[2], client_span,
        "the gateway's own span: {upstream_tp}"
    );

    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let spans = eventually_spans(&collector, &trace).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let request = named(&spans, "POST /v1/responses").expect("data plane's request span");
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name == "POST /v1/responses")
            .count(),
        1,
        "one request span: {names:?}"
    );
    assert_eq!(hex(&request.parent_span_id), client_span, "{names:?}");
    let upstream = named(&spans, "upstream").expect("data plane's upstream span");
    assert_eq!(hex(&upstream.span_id), parts[2], "{names:?}");
    let admit_call = named(&spans, "admit").expect("data plane's Admit call span");
    let admit_served =
        named(&spans, "/tollgate.gateway.v1.Gateway/Admit").expect("control plane's Admit span");
    assert_eq!(admit_served.parent_span_id, admit_call.span_id, "{names:?}");

    let Gateway { cp, dps, .. } = gw;
    for dp in dps {
        dp.stop().await;
    }
    cp.stop().await;
    stop.cancel();
    server.await.unwrap().unwrap();

    // JSON logs: every line an object; the request's lines carry its ids, all from the
    // request's one span (no second span repeating the request id).
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let with_ids = lines
        .iter()
        .filter(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["trace_id"] == trace_id.as_str()
                        && s["request_id"] == request_id.as_str()
                        && s["client_request_id"] == "client-traced-1"
                })
            })
        })
        .count();
    assert!(
        with_ids > 0,
        "no line carries the request, client and trace ids:\n{log}"
    );
    for l in &lines {
        let with_request_id = l["spans"].as_array().map_or(0, |spans| {
            spans
                .iter()
                .filter(|s| s.get("request_id").is_some())
                .count()
        });
        assert!(with_request_id <= 1, "request id in two spans: {l}");
    }

    let secrets = [
        ("client API key", client_key.as_str()),
        ("upstream credential", upstream_key.as_str()),
        ("admin token", ADMIN_TOKEN),
    ];
    let leaks: Vec<String> = secrets
        .iter()
        .flat_map(|(what, secret)| {
            log.lines()
                .filter(move |l| l.contains(secret))
                .map(move |l| format!("{what}: {}", l.chars().take(400).collect::<String>()))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{} of {} lines leak secrets:\n{}",
        leaks.len(),
        lines.len(),
        leaks.join("\n")
    );
}

/// Flushes the exporter until the collector holds the request's spans from both planes.
async fn eventually_spans(collector: &Collector, trace: &[u8]) -> Vec<Span> {
    eventually(
        "spans of both planes exported",
        Duration::from_secs(10),
        || async {
            tokio::task::block_in_place(tollgate_shared::telemetry::flush);
            let spans = collector.of_trace(trace);
            [
                "POST /v1/responses",
                "upstream",
                "admit",
                "/tollgate.gateway.v1.Gateway/Admit",
            ]
            .iter()
            .all(|n| named(&spans, n).is_some())
        },
    )
    .await;
    collector.of_trace(trace)
}
