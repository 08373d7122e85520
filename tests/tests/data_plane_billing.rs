//! Billing integrity, data-plane side (issue 9), against the scriptable fake control
//! plane and the fake upstream: `model` validated at the edge, every usage record lands
//! (no head-of-line blocking, bounded memory with a spill file, dead-lettered records
//! leave the queue), estimates from the generated text, and the real usage of a
//! non-streaming answer billed after the client left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::fake_control_plane::Poison;
use tollgate_tests::fake_upstream::{Script, Usage};
use tollgate_tests::stage::Stage;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_bad_model_name_is_refused_at_the_edge_before_admission() {
    let s = Stage::start_with(|_| {}).await;
    let cases = [
        ("x".repeat(10 << 10), "model must be at most 128 bytes"),
        (
            "gpt-5\u{7}".to_owned(),
            "model must contain only printable ASCII",
        ),
        (
            "gpt-5\u{0}".to_owned(),
            "model must contain only printable ASCII",
        ),
        (
            "gpt-5.1-codex \nInjected: line".to_owned(),
            "model must contain only printable ASCII",
        ),
        (
            format!("gpt-5.1-codex-{}", "a".repeat(300)),
            "model must be at most 128 bytes",
        ),
    ];
    for (model, message) in cases {
        for stream in [false, true] {
            let r = s
                .post(json!({"model": model, "input": "hi", "stream": stream}))
                .await;
            assert_eq!(r.status(), 400, "{model:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            let got = body["error"]["message"].as_str().unwrap();
            assert!(got.starts_with(message), "{model:?}: {got}");
        }
    }
    assert!(s.cp.admits().is_empty(), "nothing reached admission");
    assert_eq!(s.up.count(), 0, "nothing reached the upstream");
    assert!(s.cp.usage_sent().is_empty(), "nothing to bill");
    // The longest accepted name still goes through.
    let r = s
        .post(json!({"model": "m".repeat(128), "input": "hi"}))
        .await;
    assert_eq!(r.status(), 200);
}

fn spill_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("usage-spill.jsonl")
}

/// 100 requests for the poison model, then 100 good ones; returns the good ids.
async fn poison_then_good(s: &Stage) -> (Vec<String>, Vec<String>) {
    for _ in 0..100 {
        let r = s
            .post(json!({"model": "poison-model", "input": "hi"}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let poison: Vec<String> = s.cp.admits().iter().map(|a| a.request_id.clone()).collect();
    for _ in 0..100 {
        let r = s.post(json!({"model": "gpt-5.1", "input": "hi"})).await;
        assert_eq!(r.status(), 200);
    }
    let good: Vec<String> = s.cp.admits()[100..]
        .iter()
        .map(|a| a.request_id.clone())
        .collect();
    assert_eq!((poison.len(), good.len()), (100, 100));
    (poison, good)
}

fn ids(records: &[tollgate_shared::proto::gateway::v1::UsageReport]) -> Vec<String> {
    records.iter().map(|r| r.request_id.clone()).collect()
}

#[tokio::test]
async fn records_the_control_plane_keeps_failing_never_hold_back_the_others() {
    const CAP: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let path = spill_path(&dir);
    let spill = path.clone();
    let s = Stage::start_with(move |c| {
        c.usage_memory_cap = CAP;
        c.usage_spill_path = Some(spill);
    })
    .await;
    // Every record of the poison model is left unacknowledged, for ever.
    s.cp.poison_usage(Some(("poison-", Poison::Unacked)));
    let (poison, good) = poison_then_good(&s).await;

    s.cp.wait_for("the 100 good records committed", WAIT, |cp| {
        let committed: HashSet<String> = ids(&cp.usage_committed()).into_iter().collect();
        good.iter().all(|id| committed.contains(id))
    })
    .await;
    assert_eq!(s.cp.usage_committed().len(), 100, "no poison stored");
    let peak = s
        .metric("tollgate_dp_usage_queue_memory_peak_records")
        .await;
    assert!(peak <= CAP as f64, "memory held {peak} records, cap {CAP}");
    assert!(
        s.metric("tollgate_dp_usage_spilled_records_total").await > 0.0,
        "over the cap, records went to the spill file"
    );
    assert_eq!(s.metric("tollgate_dp_usage_queue_records").await, 100.0);
    assert!(s.metric("tollgate_dp_usage_retries_total").await > 0.0);

    // The control plane recovers: every poison record arrives, each committed once,
    // and the spill file is gone once everything is stored.
    s.cp.poison_usage(None);
    s.cp.wait_for("all 200 records committed", WAIT, |cp| {
        cp.usage_committed().len() == 200
    })
    .await;
    let committed = ids(&s.cp.usage_committed());
    let unique: HashSet<&String> = committed.iter().collect();
    assert_eq!(unique.len(), 200, "each record committed once");
    assert!(poison.iter().chain(&good).all(|id| unique.contains(id)));
    tollgate_tests::eventually(
        "the queue empty and the spill file removed",
        WAIT,
        || async { s.metric("tollgate_dp_usage_queue_records").await == 0.0 && !path.exists() },
    )
    .await;
    let peak = s
        .metric("tollgate_dp_usage_queue_memory_peak_records")
        .await;
    assert!(peak <= CAP as f64, "memory held {peak} records, cap {CAP}");
}

#[tokio::test]
async fn dead_lettered_records_leave_the_queue_and_are_not_sent_again() {
    const CAP: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let spill = spill_path(&dir);
    let s = Stage::start_with(move |c| {
        c.usage_memory_cap = CAP;
        c.usage_spill_path = Some(spill);
    })
    .await;
    s.cp.poison_usage(Some(("poison-", Poison::DeadLetter)));
    let (poison, good) = poison_then_good(&s).await;
    s.cp.wait_for("good records committed, poison dead-lettered", WAIT, |cp| {
        cp.usage_committed().len() == 100 && cp.usage_dead_lettered().len() == 100
    })
    .await;
    let committed: HashSet<String> = ids(&s.cp.usage_committed()).into_iter().collect();
    assert!(good.iter().all(|id| committed.contains(id)));
    let dead: HashSet<String> = ids(&s.cp.usage_dead_lettered()).into_iter().collect();
    assert!(poison.iter().all(|id| dead.contains(id)));
    tollgate_tests::eventually("the queue empty", WAIT, || async {
        s.metric("tollgate_dp_usage_queue_records").await == 0.0
    })
    .await;
    assert_eq!(
        s.metric("tollgate_dp_usage_dead_lettered_records_total")
            .await,
        100.0
    );
    let sent_poison =
        s.cp.usage_sent()
            .iter()
            .filter(|r| r.model.starts_with("poison-"))
            .count();
    assert_eq!(
        sent_poison, 100,
        "a dead-lettered record is never sent again"
    );
    let peak = s
        .metric("tollgate_dp_usage_queue_memory_peak_records")
        .await;
    assert!(peak <= CAP as f64, "memory held {peak} records, cap {CAP}");
}

#[tokio::test]
async fn records_left_at_shutdown_wait_in_the_spill_file_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = spill_path(&dir);
    let spill = path.clone();
    let configure = move |c: &mut tollgate_data_plane::Config| {
        c.usage_memory_cap = 3;
        c.usage_spill_path = Some(spill.clone());
        c.drain_timeout_secs = 1;
    };
    let s = Stage::start_with(configure.clone()).await;
    // The control plane stores nothing while this data plane runs.
    s.cp.poison_usage(Some(("", Poison::Unacked)));
    for _ in 0..10 {
        let r = s.post(json!({"model": "gpt-5.1", "input": "hi"})).await;
        assert_eq!(r.status(), 200);
    }
    let expected: HashSet<String> = s.cp.admits().iter().map(|a| a.request_id.clone()).collect();
    s.cp.wait_for("every record tried", WAIT, |cp| {
        let sent: HashSet<String> = ids(&cp.usage_sent()).into_iter().collect();
        sent == expected
    })
    .await;
    let Stage { cp, up, dp, .. } = s;
    dp.stop().await;
    assert!(cp.usage_committed().is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 10, "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the spill file is private");
    }

    // A new process on the same file delivers them, then removes the file.
    cp.poison_usage(None);
    let s = Stage::on(cp, up, configure).await;
    s.cp.wait_for("the spilled records committed", WAIT, |cp| {
        cp.usage_committed().len() == 10
    })
    .await;
    let committed: HashSet<String> = ids(&s.cp.usage_committed()).into_iter().collect();
    assert_eq!(committed, expected);
    tollgate_tests::eventually("the spill file removed", WAIT, || async { !path.exists() }).await;
}

/// Tokens of `text` as OpenAI's GPT-4o/GPT-5 tokenizer (o200k_base) counts them.
fn real_tokens(text: &str) -> u64 {
    let bpe = tiktoken_rs::o200k_base().unwrap();
    bpe.encode_ordinary(text).len() as u64
}

/// A typical assistant answer (prose, a list, a code block; several hundred words),
/// split into deltas the way a model streams it (a word or so per event).
fn answer() -> Vec<String> {
    let text = ANSWER.repeat(2);
    let mut out: Vec<String> = Vec::new();
    for (i, word) in text.split_inclusive(' ').enumerate() {
        match out.last_mut() {
            Some(last) if i % 2 == 1 => last.push_str(word),
            _ => out.push(word.to_owned()),
        }
    }
    out
}

const ANSWER: &str = r#"Sure! Here's how to read a large CSV file in Python without loading it all into memory at once.

## Option 1: the `csv` module

The standard library's `csv` module reads one row at a time, so memory use stays flat no matter how big the file is:

```python
import csv

def total_by_region(path):
    totals = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            region = row["region"]
            totals[region] = totals.get(region, 0) + float(row["amount"])
    return totals
```

A few things to note:

1. `newline=""` lets the reader handle line endings inside quoted fields correctly.
2. `DictReader` gives you each row as a dictionary keyed by the header, which makes the code easier to read (at a small cost in speed).
3. Converting with `float()` will raise a `ValueError` on an empty cell; wrap it in a `try` block if your data has gaps.

## Option 2: pandas in chunks

If you already use pandas, pass `chunksize` to `read_csv`. It returns an iterator of DataFrames, each with at most that many rows:

```python
import pandas as pd

totals = None
for chunk in pd.read_csv("sales.csv", chunksize=100_000):
    part = chunk.groupby("region")["amount"].sum()
    totals = part if totals is None else totals.add(part, fill_value=0)
print(totals.sort_values(ascending=False).head(10))
```

This is usually much faster than the pure-Python loop, because the grouping runs in compiled code. Pick a chunk size that keeps each piece comfortably within your available RAM; 50,000 to 500,000 rows is a reasonable starting range for typical column counts.

## Which one should you use?

- For a quick script with simple logic, the `csv` module is enough and has no dependencies.
- For aggregations, joins or anything numeric, pandas (or Polars, which streams natively with `scan_csv`) will save you a lot of time.
- If the file is truly huge (tens of gigabytes), consider loading it into SQLite or DuckDB once and querying it with SQL instead.

Let me know the size of your file and what you need to compute, and I can suggest the best approach for your case.
"#;

#[tokio::test]
async fn an_estimate_from_the_streamed_text_is_close_to_the_real_usage() {
    let s = Stage::start_with(|_| {}).await;
    let chunks = answer();
    let text = chunks.concat();
    let words = text.split_whitespace().count();
    assert!(words > 500, "{words} words");
    let real = real_tokens(&text);
    // The same stream twice: with the upstream's usage, and with it removed.
    s.up.push(
        Script::success()
            .text(chunks.clone())
            .usage(Usage::new(40, 0, real, 0)),
    );
    s.up.push(Script::no_usage().text(chunks.clone()));
    // And a stream cut off after its deltas (no final event at all).
    s.up.push(Script::stop_after_deltas().text(chunks));
    for _ in 0..3 {
        let r = s
            .post(json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
    }
    s.cp.wait_for("three usage records", WAIT, |cp| {
        cp.usage_committed().len() == 3
    })
    .await;
    let admits = s.cp.admits();
    let usage = |i: usize| {
        s.cp.usage_committed()
            .into_iter()
            .find(|u| u.request_id == admits[i].request_id)
            .unwrap()
    };
    let reported = usage(0);
    assert!(!reported.estimated);
    assert_eq!(reported.output_tokens as u64, real);
    for i in [1, 2] {
        let estimate = usage(i);
        assert!(estimate.estimated, "{estimate:?}");
        let est = estimate.output_tokens as f64;
        let error = (est - real as f64).abs() / real as f64;
        assert!(
            error <= 0.25,
            "estimate {est} vs real {real} output tokens: {:.0} % off",
            error * 100.0
        );
    }
}

#[tokio::test]
async fn a_non_streaming_client_that_leaves_is_billed_the_upstreams_real_usage() {
    let s = Stage::start_with(|_| {}).await;
    // The head comes at once, the body a second later.
    s.up.push(
        Script::success()
            .usage(Usage::new(1234, 200, 567, 89))
            .pause_after(0, Duration::from_millis(1500)),
    );
    let send = s.post(json!({"model": "gpt-5.1", "input": "hi"}));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), send)
            .await
            .is_err(),
        "the client leaves before the answer"
    );
    let lease = s.cp.granted()[0].clone();
    s.cp.wait_for("the lease released when the client left", WAIT, |cp| {
        cp.released_leases().contains(&lease)
    })
    .await;
    s.cp.wait_for("the usage committed", WAIT, |cp| {
        cp.usage_committed().len() == 1
    })
    .await;
    let u = &s.cp.usage_committed()[0];
    assert!(!u.estimated, "{u:?}");
    assert_eq!(
        (
            u.input_tokens,
            u.cached_tokens,
            u.output_tokens,
            u.reasoning_tokens
        ),
        (1234, 200, 567, 89)
    );
}
