//! The data plane alone: a real data plane on loopback against the scriptable fake
//! control plane (`fake_control_plane`) and the fake upstream. What the control plane
//! answers is scripted, so every answer the data plane must handle — refusals, malformed
//! leases, failing usage calls — is reachable, and what the data plane sends back
//! (releases, outcomes, usage) is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_tests::fake_control_plane::{
    ACCOUNT_ID, AdmitScript, BEARER, UsageScript, api_key_account,
};
use tollgate_tests::fake_upstream::{Script, refused_url};
use tollgate_tests::sse::{Sse, parse_sse};
use tollgate_tests::stage::{KEY, Stage};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn admit_refusals_reach_the_client_with_their_status_and_message() {
    // A control plane that cannot be asked is retried for the failover wait (below).
    let s = Stage::start_with(|c| c.flow.failover_wait_ms = 300).await;
    // (code the control plane refuses with, HTTP status, error type, client-visible code)
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        ("user_concurrency_exceeded", 429, "rate_limit_error", None),
        (
            "account_concurrency_exceeded",
            429,
            "rate_limit_error",
            None,
        ),
        ("too_many_pending", 429, "rate_limit_error", None),
        ("no_available_accounts", 503, "api_error", None),
        (
            "insufficient_balance",
            403,
            "billing_error",
            Some("INSUFFICIENT_BALANCE"),
        ),
        (
            "usage_limit_exceeded",
            429,
            "rate_limit_error",
            Some("USAGE_LIMIT_EXCEEDED"),
        ),
        ("billing_rejected", 403, "billing_error", None),
        ("billing_unavailable", 503, "billing_service_error", None),
        (
            "model_not_priced",
            400,
            "invalid_request_error",
            Some("model_not_priced"),
        ),
        // A code this build does not know is the control plane's bug, not the client's.
        ("code_from_the_future", 500, "api_error", None),
    ];
    for (code, status, ty, client_code) in cases {
        let message = format!("refused because {code}");
        s.cp.push_admit(AdmitScript::Refuse {
            code: (*code).into(),
            message: message.clone(),
        });
        let (got, body) = s.ask().await;
        assert_eq!(got, *status, "{code}: {body}");
        assert_eq!(body["error"]["type"], *ty, "{code}: {body}");
        assert_eq!(body["error"]["message"], message, "{code}: {body}");
        assert_eq!(
            body["error"]["code"].as_str(),
            *client_code,
            "{code}: {body}"
        );
    }
    // A streaming client refused before anything was sent gets the same JSON answer.
    s.cp.push_admit(AdmitScript::Refuse {
        code: "user_concurrency_exceeded".into(),
        message: "busy".into(),
    });
    let r = s
        .post(json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["message"], "busy");

    // A control plane that cannot be asked (past the failover wait: tried at once and
    // once more at the bound), or answers nothing usable.
    s.cp.push_admit(AdmitScript::Fail(tonic::Status::unavailable("down")));
    s.cp.push_admit(AdmitScript::Fail(tonic::Status::unavailable("down")));
    let r = s.post(json!({"model": "gpt-5.1", "input": "hi"})).await;
    assert_eq!(r.headers()["retry-after"], "2");
    let (got, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_eq!(got, 503, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Billing service temporarily unavailable. Please retry later."
    );
    s.cp.push_admit(AdmitScript::Empty);
    let (got, body) = s.ask().await;
    assert_eq!(got, 500, "{body}");
    assert_eq!(body["error"]["message"], "Admission returned no result");

    assert_eq!(s.up.count(), 0, "no refused request reached the upstream");
    assert!(
        s.cp.usage_sent().is_empty(),
        "nothing is billed for a refusal"
    );
}

#[tokio::test]
async fn a_lease_without_an_account_is_refused_and_given_back() {
    let s = Stage::start().await;
    s.cp.push_admit(AdmitScript::Grant(None));
    let (status, body) = s.ask().await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(body["error"]["message"], "Admission returned no account");
    let lease = s.cp.granted()[0].clone();
    s.cp.wait_for("the unusable lease released", WAIT, |cp| {
        cp.released_leases().contains(&lease)
    })
    .await;

    // An account of a kind this build does not know: its credential goes nowhere.
    s.cp.push_admit(AdmitScript::Grant(Some(pb::AccountLease {
        kind: "carrier_pigeon".into(),
        ..api_key_account(&s.up.responses_url())
    })));
    let r = s.post(json!({"model": "gpt-5.1", "input": "hi"})).await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(!text.contains(BEARER), "{text}");
    let lease = s.cp.granted()[1].clone();
    s.cp.wait_for("the unknown-kind lease released", WAIT, |cp| {
        cp.released_leases().contains(&lease)
    })
    .await;

    // After a failover, a malformed re-admission gives back both the new lease and the
    // one that held the user slot.
    s.up.push(Script::rate_limited());
    s.cp.push_admit(AdmitScript::Grant(Some(api_key_account(
        &s.up.responses_url(),
    ))));
    s.cp.push_admit(AdmitScript::Grant(None));
    let (status, body) = s.ask().await;
    assert_eq!(status, 500, "{body}");
    let granted = s.cp.granted();
    let (first, second) = (granted[2].clone(), granted[3].clone());
    s.cp.wait_for("both leases of the request released", WAIT, |cp| {
        let released = cp.released_leases();
        released.contains(&first) && released.contains(&second)
    })
    .await;

    assert_eq!(s.up.count(), 1, "only the rate-limited attempt went out");
    assert!(
        s.cp.usage_sent().is_empty(),
        "nothing delivered, nothing billed"
    );
}

#[tokio::test]
async fn a_client_that_leaves_releases_its_lease_while_the_upstream_is_still_read() {
    let s = Stage::start().await;
    // A slow stream: ~3 s in total.
    s.up.push(
        Script::success()
            .text(["a"; 10])
            .event_delay(Duration::from_millis(300)),
    );
    let mut r = s
        .post(json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let _ = r.chunk().await.unwrap();
    let lease = s.cp.granted()[0].clone();
    assert!(s.cp.released_leases().is_empty(), "held while streaming");
    drop(r);
    s.cp.wait_for("the lease released", WAIT, |cp| {
        cp.released_leases().contains(&lease)
    })
    .await;
    assert_eq!(
        s.up.in_flight(),
        1,
        "released before the upstream stream ended"
    );
    // The abandoned stream is read to its end: billed with the upstream's usage.
    s.cp.wait_for("the usage committed", WAIT, |cp| {
        cp.usage_committed().len() == 1
    })
    .await;
    let usage = &s.cp.usage_committed()[0];
    assert!(!usage.estimated, "{usage:?}");
    assert_eq!(usage.output_tokens, 50);
    assert_eq!(s.cp.released_leases(), vec![lease], "released exactly once");
}

#[tokio::test]
async fn usage_is_retried_until_acknowledged_and_committed_once() {
    let s = Stage::start().await;
    s.cp.push_usage(UsageScript::Fail(tonic::Status::unavailable("db down")), 2);
    s.cp.push_usage(UsageScript::AckNothing, 1);
    let (status, _) = s.ask().await;
    assert_eq!(status, 200);
    s.cp.wait_for("the usage committed", WAIT, |cp| {
        cp.usage_committed().len() == 1
    })
    .await;
    let request_id = s.cp.admits()[0].request_id.clone();
    let committed = s.cp.usage_committed();
    assert_eq!(committed[0].request_id, request_id);
    assert_eq!(committed[0].account_id, ACCOUNT_ID);
    let sent = s.cp.usage_sent();
    assert_eq!(sent.len(), 4, "two failures, one empty ack, then the ack");
    assert!(
        sent.iter().all(|r| *r == committed[0]),
        "every retry is the same record: {sent:?}"
    );

    // Once acknowledged it is never sent again: a later record goes out alone.
    let (status, _) = s.ask().await;
    assert_eq!(status, 200);
    s.cp.wait_for("the second usage committed", WAIT, |cp| {
        cp.usage_committed().len() == 2
    })
    .await;
    let resent =
        s.cp.usage_sent()
            .iter()
            .filter(|r| r.request_id == request_id)
            .count();
    assert_eq!(resent, 4, "no resend after the ack");
}

#[tokio::test]
async fn a_connect_failure_fails_over_and_is_reported_for_the_account() {
    let s = Stage::start().await;
    let dead = pb::AccountLease {
        account_id: 99,
        ..api_key_account(&refused_url().await)
    };
    s.cp.push_admit(AdmitScript::Grant(Some(dead)));
    let (status, body) = s.ask().await;
    assert_eq!(status, 200, "{body}");
    let admits = s.cp.admits();
    assert_eq!(admits.len(), 2);
    assert_eq!(admits[1].excluded_account_ids, vec![99]);
    assert_eq!(
        admits[1].user_lease_id,
        s.cp.granted()[0],
        "the re-admission shares the first lease's user slot"
    );
    s.cp.wait_for("the connect error reported", WAIT, |cp| {
        cp.outcomes().iter().any(|o| {
            o.account_id == 99
                && o.kind == pb::report_outcome_request::Kind::ConnectError as i32
                && o.status == 0
        })
    })
    .await;
    s.cp.wait_for("both leases released", WAIT, |cp| {
        cp.released_leases().len() == 2
    })
    .await;
}

// ---- converted from flow.rs: they needed a real control plane only to set the stage.

#[tokio::test]
async fn events_are_flushed_one_by_one() {
    let s = Stage::start().await;
    s.up.push(
        Script::success()
            .text(["a", "b", "c"])
            .event_delay(Duration::from_millis(300)),
    );
    let mut r = s
        .post(json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
        .await;
    // The first event arrives long before the whole stream (≥ 2.4 s) could have.
    let started = std::time::Instant::now();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "first event was buffered: {:?}",
        started.elapsed()
    );
    while r.chunk().await.unwrap().is_some() {}
}

async fn stream_error(s: &Stage, script: Script) -> (Sse, String) {
    s.up.push(script);
    let r = s
        .post(json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
        .await;
    assert_eq!(r.status(), 200, "once streaming, errors are events");
    let text = r.text().await.unwrap();
    (parse_sse(&text), text)
}

#[tokio::test]
async fn stream_errors_are_sse_events_with_valid_json() {
    let s = Stage::start_with(|c| {
        c.flow.stream_keepalive_ms = 200;
        c.flow.stream_idle_timeout_ms = 1_000;
        c.flow.stream_line_limit_bytes = 64 << 10;
    })
    .await;

    let (events, _) = stream_error(&s, Script::cut_stream(3)).await;
    let (name, data) = (events.last().unwrap().name(), events.last().unwrap().json());
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "upstream_error");

    let (events, text) = stream_error(&s, Script::silent_stream(2, Duration::from_secs(5))).await;
    let (name, data) = (events.last().unwrap().name(), events.last().unwrap().json());
    assert_eq!(name, "error");
    assert_eq!(data["error"]["code"], "stream_timeout");
    assert!(
        text.contains(":\n\n"),
        "keep-alive comments while the upstream is silent"
    );

    let (events, _) = stream_error(&s, Script::long_line(256 << 10)).await;
    let (name, data) = (events.last().unwrap().name(), events.last().unwrap().json());
    assert_eq!(name, "error");
    assert_eq!(data["error"]["code"], "response_too_large");

    // Only the idle timeout says something about the account's health.
    s.cp.wait_for("the stream timeout reported", WAIT, |cp| {
        cp.outcomes()
            .iter()
            .any(|o| o.kind == pb::report_outcome_request::Kind::StreamTimeout as i32)
    })
    .await;
    assert_eq!(s.cp.outcomes().len(), 1, "{:?}", s.cp.outcomes());
    // Every attempt was billed (estimated where the upstream sent no usage).
    s.cp.wait_for("three usage records", WAIT, |cp| {
        cp.usage_committed().len() == 3
    })
    .await;
}

/// During a control-plane failover an admission waits and is tried again rather than
/// failing: one `UNAVAILABLE` (a standby's "not the leader") costs the client nothing.
#[tokio::test]
async fn an_admission_waits_through_a_control_plane_blip() {
    let s = Stage::start().await;
    s.cp.push_admit(AdmitScript::Fail(tonic::Status::unavailable(
        "not the leader; no leader known yet",
    )));
    let (got, body) = s.ask().await;
    assert_eq!(got, 200, "{body}");
    assert_eq!(s.up.count(), 1);
}

#[tokio::test]
async fn response_records_share_calls_and_each_request_waits_for_its_own() {
    const N: usize = 8;
    let s = Stage::start().await;
    // The first record call stays in flight: every record after it waits for the next.
    s.cp.hold_records(true);
    let url = format!("{}/v1/responses", s.dp.proxy_url());
    let requests: Vec<_> = (0..N)
        .map(|_| {
            // Stored (the default): each answer's id is recorded for affinity.
            let req = s
                .http
                .post(&url)
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-5.1", "input": "hi"}));
            #[allow(clippy::disallowed_methods)] // the test awaits every handle
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    s.cp.wait_for("a record call in flight", WAIT, |cp| {
        cp.record_calls().len() == 1
    })
    .await;
    s.up.wait_for_count(N).await;
    tollgate_tests::eventually("every upstream answer sent", WAIT, || async {
        s.up.in_flight() == 0
    })
    .await;
    assert!(
        requests.iter().all(|r| !r.is_finished()),
        "no client has its body before its record is acknowledged"
    );
    assert!(s.cp.recorded_responses().is_empty());

    s.cp.hold_records(false);
    let mut ids = HashSet::new();
    for r in requests {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), N);
    let recorded: HashSet<String> =
        s.cp.recorded_responses()
            .into_iter()
            .map(|r| r.response_id)
            .collect();
    assert_eq!(recorded, ids, "every response recorded");
    let calls = s.cp.record_calls();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert!(calls.len() < N, "{N} records in fewer calls: {sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        N,
        "each record sent once: {sizes:?}"
    );
    assert_eq!(s.cp.unary_record_calls(), 0);
    let counted = s
        .metric("tollgate_dp_control_plane_calls_total{method=\"record_responses\"}")
        .await;
    assert_eq!(counted as usize, calls.len());
}

#[tokio::test]
async fn response_records_go_one_by_one_to_a_control_plane_without_the_batched_call() {
    let s = Stage::start().await;
    s.cp.serve_batched_records(false);
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let (status, body) = s.ask().await;
        assert_eq!(status, 200, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_owned());
        // Answered only after its record was acknowledged: none is lost to the refusal.
        let recorded: HashSet<String> =
            s.cp.recorded_responses()
                .into_iter()
                .map(|r| r.response_id)
                .collect();
        assert_eq!(recorded, ids);
    }
    assert_eq!(s.cp.unary_record_calls(), 3);
    assert!(s.cp.record_calls().is_empty());
}
