//! The fake upstream as its own process, for the benchmark (`bench/run.sh`): answers
//! `POST /v1/responses` (JSON, or SSE when `stream` is true) until SIGTERM or Ctrl-C, and
//! keeps no record of what arrived so long runs stay flat in memory.
//!
//! `fake-upstream [--events N] [--event-interval-ms MS] [--slow-key KEY] [--slow-hold-secs S]`
//! prints `listening on http://127.0.0.1:PORT` once serving. A stream has N events (at
//! least 9: the fixed Responses envelope plus one text delta each), MS apart. Requests
//! whose bearer token is KEY get a stream that sends its first event and then stays silent
//! for S seconds: the benchmark's open-stream memory measurement.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tollgate_tests::fake_upstream::{FakeUpstream, Script};

/// Events of a successful stream besides its text deltas: created, in_progress,
/// output_item.added, content_part.added, output_text.done, content_part.done,
/// output_item.done, completed.
const ENVELOPE_EVENTS: usize = 8;

struct Args {
    events: usize,
    event_interval: Duration,
    slow_key: String,
    slow_hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 20,
        event_interval: Duration::from_millis(5),
        slow_key: "sk-bench-slow".into(),
        slow_hold: Duration::from_secs(3600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--events" => args.events = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--event-interval-ms" => {
                args.event_interval = Duration::from_millis(number(value()?)?);
            }
            "--slow-key" => args.slow_key = value()?,
            "--slow-hold-secs" => args.slow_hold = Duration::from_secs(number(value()?)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.events <= ENVELOPE_EVENTS {
        return Err(format!("--events must be more than {ENVELOPE_EVENTS}"));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake-upstream: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let up = FakeUpstream::start().await;
    up.stop_recording();
    let deltas = args.events - ENVELOPE_EVENTS;
    let text: Vec<String> = (0..deltas).map(|i| format!("w{i} ")).collect();
    up.set_default(
        Script::success()
            .text(text.clone())
            .event_delay(args.event_interval),
    );
    up.set_default_for(
        &args.slow_key,
        Script::success().text(text).pause_after(1, args.slow_hold),
    );
    println!("listening on {}", up.base_url());
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-upstream: SIGTERM handler: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    up.shutdown().await;
    std::process::ExitCode::SUCCESS
}
