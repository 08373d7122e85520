//! Criterion micro-benchmarks of the pieces every request pays for:
//! `cargo bench -p tollgate-tests --bench hot_path`. The control plane runs in this
//! process on the embedded SQLite (the test kit's `Gateway`); the gRPC calls cross
//! loopback with mutual TLS as a data plane's do. Results: bench/README.md and the
//! benchmark report (`bench/run.sh` reads target/criterion).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tollgate_control_plane::billing::{self, BillingSettings};
use tollgate_control_plane::events::Invalidations;
use tollgate_control_plane::storage::Store;
use tollgate_data_plane::control::ControlClient;
use tollgate_data_plane::metrics::Metrics;
use tollgate_data_plane::proxy::cache::AuthCache;
use tollgate_data_plane::proxy::sse::{Observer, Splitter};
use tollgate_data_plane::proxy::{body, extract, transform};
use tollgate_shared::domain::AccountKind;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::{Basic, Gateway};
use tonic::transport::Channel;

const MODEL: &str = "gpt-5.1";
/// Records per `ReportUsage` batch: what a busy data plane sends at once.
const USAGE_BATCH: usize = 32;

/// Fields drop in order: the runtime last, after what runs on it.
struct World {
    gw: Gateway,
    basic: Basic,
    session: Session,
    store: Store,
    rt: Runtime,
}

/// A Gateway session of our own, so that Admit can be called as a data plane calls it.
struct Session {
    client: GatewayClient<Channel>,
    id: String,
    _driver: JoinSet<()>,
}

impl Session {
    async fn open(gw: &Gateway) -> Self {
        let mut client = gw.cp.gateway();
        let attach = pb::SessionUp {
            msg: Some(pb::session_up::Msg::Attach(pb::Attach {
                data_plane_id: "bench".into(),
                held_leases: vec![],
                version: "bench".into(),
            })),
        };
        let heartbeats = futures::stream::unfold(1u64, |seq| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let beat = pb::SessionUp {
                msg: Some(pb::session_up::Msg::Heartbeat(pb::Heartbeat {
                    seq,
                    in_flight: 0,
                })),
            };
            Some((beat, seq + 1))
        });
        let up = futures::stream::once(async move { attach }).chain(heartbeats);
        let mut down = client.session(up).await.unwrap().into_inner();
        let id = match down.next().await {
            Some(Ok(pb::SessionDown {
                msg: Some(pb::session_down::Msg::Attached(a)),
            })) => a.session_id,
            other => panic!("expected Attached, got {other:?}"),
        };
        let mut driver = JoinSet::new();
        driver.spawn(async move { while let Some(Ok(_)) = down.next().await {} });
        Self {
            client,
            id,
            _driver: driver,
        }
    }
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (gw, basic, session, store) = rt.block_on(async {
        let gw = Gateway::start(1).await;
        // 20 events: the Responses envelope (8) and 12 text deltas.
        gw.up
            .set_default(Script::success().text((0..12).map(|i| format!("w{i} "))));
        let user = gw.user(0, 1_000_000).await;
        let group = gw.group("1").await;
        let account = gw.api_key_account("upstream-bench", group, 10, 0).await;
        let (key_id, key) = gw.key(user, Some(group)).await;
        let basic = Basic {
            user,
            group,
            account,
            key_id,
            key,
        };
        let session = Session::open(&gw).await;
        // A second handle on the control plane's own database, for the charge engine.
        let resolved = gw.cp.config.resolve().unwrap();
        let store = Store::connect(&resolved.database_url, resolved.secrets)
            .await
            .unwrap();
        (gw, basic, session, store)
    });
    World {
        gw,
        basic,
        session,
        store,
        rt,
    }
}

fn auth_cache_hit(c: &mut Criterion, w: &World) {
    // The channel spawns its connection task on the current runtime.
    let _rt = w.rt.enter();
    let pki = tollgate_tests::cluster::test_pki();
    let tls = tollgate_shared::tls::client_config(
        pki.ca_cert.as_bytes(),
        Some((
            pki.data_plane_cert.as_bytes(),
            pki.data_plane_key.as_bytes(),
        )),
    )
    .unwrap();
    let targets = tollgate_data_plane::control::targets::Targets::new(
        &[w.gw.cp.url()],
        Some(tollgate_shared::tls::TlsConnector::new(
            tollgate_shared::tls::Reloading::fixed(tls),
        )),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let client = ControlClient::new(targets, metrics.clone(), Duration::from_secs(5));
    let cache = AuthCache::new(client, 10_000, metrics);
    let hash = extract::key_hash(&w.basic.key);
    let warm = w.rt.block_on(cache.lookup(&hash)).unwrap();
    assert!(warm.is_some(), "the key is known");
    let (cache, hash) = (&cache, hash.as_str());
    c.bench_function("auth_cache_hit", |b| {
        b.to_async(&w.rt).iter(move || async move {
            black_box(cache.lookup(black_box(hash)).await.unwrap());
        });
    });
}

fn admit_and_release(c: &mut Criterion, w: &World) {
    let mut n = 0u64;
    c.bench_function("admit_and_release_grpc", |b| {
        b.to_async(&w.rt).iter(|| {
            n += 1;
            let mut client = w.session.client.clone();
            let session_id = w.session.id.clone();
            let key_id = w.basic.key_id;
            let request_id = format!("bench-admit-{n}");
            async move {
                let answer = client
                    .admit(pb::AdmitRequest {
                        session_id: session_id.clone(),
                        request_id,
                        key_id,
                        model: MODEL.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .result;
                let lease = match answer {
                    Some(pb::admit_response::Result::Lease(lease)) => lease,
                    other => panic!("Admit refused: {other:?}"),
                };
                client
                    .release(pb::ReleaseRequest {
                        session_id,
                        lease_ids: vec![lease.lease_id],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
    });
}

/// A 20-event stream as the fake upstream sends it, split into its events.
fn sse_events(w: &World) -> Vec<Bytes> {
    let raw = w.rt.block_on(async {
        w.gw.http
            .post(w.gw.up.responses_url())
            .bearer_auth("upstream-bench")
            .json(&json!({"model": MODEL, "input": "hello", "stream": true}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let mut events = Vec::new();
    let mut splitter = Splitter::new(1 << 20);
    splitter.push(&raw, &mut events).unwrap();
    assert!(events.len() >= 9, "a whole stream: {} events", events.len());
    events
}

fn sse_usage(c: &mut Criterion, w: &World) {
    let events = sse_events(w);
    c.bench_function("sse_split_and_observe_stream", |b| {
        b.iter(|| {
            let mut splitter = Splitter::new(1 << 20);
            let mut observer = Observer::new(MODEL, MODEL);
            let mut out = Vec::with_capacity(4);
            for event in &events {
                splitter.push(event, &mut out).unwrap();
                for e in out.drain(..) {
                    black_box(observer.observe(e));
                }
            }
            assert!(observer.usage.is_some());
        });
    });
}

/// A Codex CLI request of about 40 KB: long instructions, a conversation with tool
/// calls, and the tool definitions.
fn codex_body() -> Vec<u8> {
    let para = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. ";
    let mut input = Vec::new();
    for i in 0..36 {
        input.push(json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": para.repeat(6)}]}));
        input.push(json!({"type": "function_call", "id": format!("fc_{i}"),
            "call_id": format!("call_{i}"), "name": "shell",
            "arguments": json!({"command": ["bash", "-lc", "ls -la"]}).to_string()}));
        input.push(
            json!({"type": "function_call_output", "call_id": format!("call_{i}"),
            "output": para.repeat(3)}),
        );
    }
    let tools: Vec<Value> = (0..8)
        .map(|i| {
            json!({"type": "function", "name": format!("tool_{i}"), "description": para,
                "strict": false, "parameters": {"type": "object", "properties": {
                    "command": {"type": "array", "items": {"type": "string"}},
                    "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}},
                "required": ["command"]}})
        })
        .collect();
    let body = json!({
        "model": "gpt-5.1-codex", "instructions": para.repeat(40), "input": input,
        "tools": tools, "tool_choice": "auto", "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": false,
        "stream": true, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b",
    });
    let raw = serde_json::to_vec(&body).unwrap();
    assert!((35_000..50_000).contains(&raw.len()), "{} bytes", raw.len());
    raw
}

fn body_transform(c: &mut Criterion) {
    let raw = codex_body();
    let mapping = HashMap::new();
    let target = |kind| transform::Target {
        kind,
        model_mapping: &mapping,
        codex_client: true,
        default_codex_model: "gpt-5.1-codex",
    };
    let (oauth, api_key) = (target(AccountKind::OAuth), target(AccountKind::ApiKey));
    let parsed = body::parse(&raw).unwrap();
    let mut group = c.benchmark_group("codex_body_40kb");
    group.bench_function("validate", |b| {
        b.iter(|| black_box(body::parse(black_box(&raw)).unwrap()));
    });
    // What each upstream attempt does with the validated body.
    let copy_transform_encode = |t: &transform::Target<'_>| {
        let mut copy = parsed.json.clone();
        black_box(transform::body(&mut copy, &parsed.model, t));
        black_box(serde_json::to_vec(&copy).unwrap());
    };
    group.bench_function("oauth_copy_transform_encode", |b| {
        b.iter(|| copy_transform_encode(&oauth));
    });
    group.bench_function("api_key_copy_transform_encode", |b| {
        b.iter(|| copy_transform_encode(&api_key));
    });
    group.bench_function("api_key_untouched_encode", |b| {
        b.iter(|| {
            let model = transform::untouched(&parsed.json, &parsed.model, &api_key).unwrap();
            black_box(model);
            black_box(serde_json::to_vec(&parsed.json).unwrap());
        });
    });
    group.finish();
}

fn usage_batch(c: &mut Criterion, w: &World) {
    let invalidations = Invalidations::new();
    let billing_metrics = tollgate_control_plane::metrics::Metrics::new();
    let settings = BillingSettings::default();
    let mut n = 0u64;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let record = |id: String| pb::UsageReport {
        request_id: id,
        key_id: w.basic.key_id,
        user_id: w.basic.user,
        group_id: Some(w.basic.group),
        subscription_id: None,
        account_id: w.basic.account,
        model: MODEL.into(),
        upstream_model: MODEL.into(),
        input_tokens: 1_200,
        output_tokens: 300,
        cached_tokens: 1_000,
        reasoning_tokens: 64,
        stream: true,
        duration_ms: 900,
        first_token_ms: Some(120),
        user_agent: "bench".into(),
        client_ip: "127.0.0.1".into(),
        reasoning_effort: "medium".into(),
        estimated: false,
        started_at_ms: now_ms(),
        billing_mode: "balance".into(),
        rate_multiplier: "1".into(),
        account_cost_multiplier: "1".into(),
        // As a client's request that sent its own id, answered by an upstream that did.
        client_request_id: "bench-client".into(),
        upstream_request_id: "req_bench".into(),
    };
    let mut group = c.benchmark_group("usage_charge");
    group.throughput(criterion::Throughput::Elements(USAGE_BATCH as u64));
    group.bench_function(format!("batch_of_{USAGE_BATCH}_sqlite"), |b| {
        b.to_async(&w.rt).iter(|| {
            n += 1;
            let batch: Vec<_> = (0..USAGE_BATCH)
                .map(|i| record(format!("bench-usage-{n}-{i}")))
                .collect();
            let (store, invalidations, settings) = (&w.store, &invalidations, &settings);
            let billing_metrics = &billing_metrics;
            async move {
                let resp = billing::report_usage(
                    store,
                    invalidations,
                    settings,
                    &billing_metrics.billing,
                    batch,
                    now_ms(),
                )
                .await
                .unwrap();
                assert_eq!(resp.acked_request_ids.len(), USAGE_BATCH);
            }
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    body_transform(c);
    let w = world();
    auth_cache_hit(c, &w);
    sse_usage(c, &w);
    admit_and_release(c, &w);
    usage_batch(c, &w);
    // Stopped inside the runtime, which goes last.
    let World {
        gw,
        basic: _,
        session,
        store,
        rt,
    } = w;
    rt.block_on(async move {
        drop(session);
        store.close().await;
        gw.cp.stop().await;
    });
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(hot_path);
