//! The gateway's own added latency: the same requests sent straight to the fake upstream
//! and through a data plane (auth cache warm, one Admit per request, release and usage
//! off the hot path), sequentially, on loopback. Prints percentiles; results are recorded
//! in BENCHMARKS.md. Run: `cargo bench -p tollgate-tests --bench proxy_overhead`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::fixture::Gateway;

const WARMUP: usize = 200;
const N: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn measure(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> Vec<Duration> {
    let body = json!({"model": "gpt-5.1", "input": "hello", "stream": stream});
    let mut out = Vec::with_capacity(N);
    for i in 0..WARMUP + N {
        let t = Instant::now();
        let r = http
            .post(url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await.unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

fn report(name: &str, direct: &[Duration], gateway: &[Duration]) {
    println!("{name}");
    for (label, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let d = percentile(direct, p);
        let g = percentile(gateway, p);
        println!(
            "  {label}: direct {:>8.1} µs   gateway {:>8.1} µs   added {:>8.1} µs",
            d.as_secs_f64() * 1e6,
            g.as_secs_f64() * 1e6,
            (g.as_secs_f64() - d.as_secs_f64()) * 1e6
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gw = Gateway::start(1).await;
        let b = gw.basic().await;
        let http = reqwest::Client::new();
        let direct_url = format!("{}/v1/responses", gw.up.base_url());
        for stream in [false, true] {
            let direct = measure(&http, &direct_url, "upstream-a", stream).await;
            let through = measure(&http, &gw.responses_url(0), &b.key, stream).await;
            report(
                if stream {
                    "streaming (full SSE sequence)"
                } else {
                    "non-streaming JSON"
                },
                &direct,
                &through,
            );
        }
        println!(
            "requests per series: {N} (after {WARMUP} warm-up), sequential, one client connection"
        );
    });
}
