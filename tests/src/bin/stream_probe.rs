//! The benchmark's streaming client (`bench/run.sh`): what a load generator does not show.
//!
//! `stream-probe ttfe URL KEY N` sends N streaming `POST` requests one after another on one
//! keep-alive connection (after a warm-up of N/10) and prints, as one JSON line, the
//! percentiles of the time to the first SSE event and to the end of the stream, in µs.
//!
//! `stream-probe hold URL KEY N SECS` opens N streams at once, waits until each has
//! delivered its first event, prints `open OK FAILED`, keeps them open SECS seconds and
//! exits (closing them): the benchmark reads the proxy's memory while they are open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

const BODY: &str = r#"{"model":"gpt-5.1","input":"hello","stream":true}"#;
/// Connections being set up at once by `hold` (the listen backlog is finite).
const CONNECTING_AT_ONCE: usize = 256;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn first_event(
    http: &reqwest::Client,
    url: &str,
    key: &str,
) -> Result<(Duration, reqwest::Response), Error> {
    let start = Instant::now();
    let mut resp = http
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await?
        .error_for_status()?;
    let mut seen = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        seen.extend_from_slice(&chunk);
        if seen.windows(5).any(|w| w == b"data:") {
            return Ok((start.elapsed(), resp));
        }
    }
    Err("stream ended before its first event".into())
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| {
        let i = ((v.len().saturating_sub(1)) as f64 * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    format!(
        r#"{{"p50_us":{:.1},"p90_us":{:.1},"p99_us":{:.1}}}"#,
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

async fn ttfe(url: &str, key: &str, n: usize) -> Result<(), Error> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let mut first = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    for i in 0..n / 10 + n {
        let start = Instant::now();
        let (t, mut resp) = first_event(&http, url, key).await?;
        while resp.chunk().await?.is_some() {}
        if i >= n / 10 {
            first.push(t);
            total.push(start.elapsed());
        }
    }
    println!(
        r#"{{"first_event":{},"whole_stream":{}}}"#,
        percentiles(first),
        percentiles(total)
    );
    Ok(())
}

async fn hold(url: &str, key: &str, n: usize, secs: u64) -> Result<(), Error> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(secs + 120))
        .build()?;
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (tx, mut rx) = tokio::sync::mpsc::channel(n.max(1));
    // Dropped (every stream closed) when this function returns.
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, key, gate, tx) = (
            http.clone(),
            url.to_string(),
            key.to_string(),
            gate.clone(),
            tx.clone(),
        );
        streams.spawn(async move {
            let permit = gate.acquire_owned().await;
            let r = first_event(&http, &url, &key).await;
            drop(permit);
            match r {
                Ok((_, resp)) => {
                    let _ = tx.send(true).await;
                    // Keep the stream open until the process exits.
                    tokio::time::sleep(Duration::from_secs(secs + 60)).await;
                    drop(resp);
                }
                Err(e) => {
                    eprintln!("stream-probe: {e}");
                    let _ = tx.send(false).await;
                }
            }
        });
    }
    drop(tx);
    let (mut ok, mut failed) = (0usize, 0usize);
    while ok + failed < n {
        match rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    println!("open {ok} {failed}");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    streams.abort_all();
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok());
    let r = match (args.first().map(String::as_str), args.get(1), args.get(2)) {
        (Some("ttfe"), Some(url), Some(key)) => match number(3) {
            Some(n) => ttfe(url, key, usize::try_from(n).unwrap_or(usize::MAX)).await,
            None => Err("ttfe URL KEY N".into()),
        },
        (Some("hold"), Some(url), Some(key)) => match (number(3), number(4)) {
            (Some(n), Some(secs)) => {
                hold(url, key, usize::try_from(n).unwrap_or(usize::MAX), secs).await
            }
            _ => Err("hold URL KEY N SECS".into()),
        },
        _ => Err("usage: stream-probe ttfe URL KEY N | hold URL KEY N SECS".into()),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-probe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
