//! The Responses flow end to end: streaming pass-through, non-streaming, model mapping,
//! subscription accounts, upstream headers and body rules, 4xx pass-through, and the
//! one-call hot path. (Event flushing and stream errors as SSE events need no real
//! control plane: they are in `data_plane.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::eventually_some;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::Gateway;
use tollgate_tests::sse::parse_sse;

#[tokio::test]
async fn streaming_passes_events_through_with_sse_headers() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.up.push(
        Script::success()
            .text(["Hel", "lo"])
            .header("x-request-id", "req_up_1"),
    );
    let r = gw
        .post(
            0,
            &b.key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    // The upstream's id under its own name; x-request-id is the gateway's.
    assert_eq!(h["upstream-request-id"], "req_up_1");
    assert_ne!(h["x-request-id"], "req_up_1");
    let text = r.text().await.unwrap();
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    let deltas: String = events
        .iter()
        .filter(|e| e.name() == "response.output_text.delta")
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, "Hello");

    // What the upstream received: the account's key, not the client's; no injected
    // instructions (an API-key account); only allowed headers.
    let got = gw.up.last().unwrap();
    assert_eq!(got.bearer.as_deref(), Some("upstream-a"));
    assert!(got.header("x-api-key").is_none() && got.header("cookie").is_none());
    assert!(
        got.body_json.get("instructions").is_none(),
        "an API-key upstream gets the client's body without default instructions"
    );
    assert_eq!(got.path, "/v1/responses");
}

/// The client gets the upstream's stream byte for byte: CRLF and LF framing, multi-line
/// `data:`, `id:`/`retry:` fields, comments and keep-alives, chunk boundaries anywhere
/// (here even between a CR and its LF) — the data plane reads usage from the stream
/// without re-framing it.
#[tokio::test]
async fn client_receives_exactly_the_upstream_bytes() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let completed = json!({
        "type": "response.completed",
        "sequence_number": 3,
        "response": {
            "id": "resp_bytes", "object": "response", "status": "completed",
            "model": "gpt-5.1", "output": [],
            "usage": {
                "input_tokens": 11, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 18,
            },
        },
    });
    let chunks = [
        ": keep-alive\r\n\r\n".to_owned(),
        "retry: 1500\r\nid: 1\r\nevent: response.created\r\n".to_owned(),
        "data: {\"type\":\"response.created\",\r\ndata:  \"sequence_number\":0,\r".to_owned(),
        "\ndata: \"response\":{\"id\":\"resp_bytes\",\"status\":\"in_progress\"}}\r\n\r\n".to_owned(),
        ":\n\n".to_owned(),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",".to_owned(),
        "\"sequence_number\":1,\"delta\":\"two\\nlines\"}\n\n".to_owned(),
        "event: response.output_text.delta\r\n: a comment inside an event\r\ndata:{\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"delta\":\" \"}\r\n\r\n".to_owned(),
        format!("event: response.completed\r\ndata: {completed}\r\n\r\n"),
    ];
    let sent = chunks.concat();
    gw.up
        .push(Script::raw(200, "text/event-stream", chunks.clone()));
    let r = gw
        .post(
            0,
            &b.key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        sent,
        "the client gets exactly the upstream's bytes"
    );

    // Parsed by the rules, the stream means what the upstream meant.
    let sse = parse_sse(&sent);
    let names: Vec<&str> = sse.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    assert_eq!(sse[0].id.as_deref(), Some("1"));
    assert_eq!(sse[0].json()["response"]["status"], "in_progress");
    assert_eq!(sse[1].json()["delta"], "two\nlines");
    assert_eq!(sse[2].json()["delta"], " ");
    assert_eq!(
        sse.comments,
        [" keep-alive", "", " a comment inside an event"]
    );
    // And it was metered from those bytes.
    let usage = eventually_some("the usage record", Duration::from_secs(10), || async {
        let records = usage_records(&gw, b.user).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].input_tokens, 11);
    assert_eq!(usage[0].output_tokens, 7);
}

#[tokio::test]
async fn non_streaming_passes_json_and_usage_is_recorded() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let r = gw
        .post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["usage"]["input_tokens"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn model_name_is_mapped_back() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.set_mapping(b.account, &[("my-alias", "gpt-5.1")]).await;
    let r = gw
        .post(
            0,
            &b.key,
            json!({"model": "my-alias", "input": "hi", "stream": true}),
        )
        .await;
    let text = r.text().await.unwrap();
    assert_eq!(
        gw.up.last().unwrap().body_json["model"],
        "gpt-5.1",
        "upstream gets the mapped name"
    );
    for e in parse_sse(&text).iter() {
        if let Some(m) = e.json().pointer("/response/model") {
            assert_eq!(m, "my-alias", "{}", e.name());
        }
    }
    assert!(
        !text.contains("\"gpt-5.1\""),
        "the mapped name never reaches the client: {text}"
    );

    let v: Value = gw
        .post(0, &b.key, json!({"model": "my-alias", "input": "hi"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "my-alias");
}

#[tokio::test]
async fn subscription_account_non_streaming_is_built_from_the_stream() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.oauth_account("oauth-tok", group, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let r = gw
        .post(0, &key, json!({"model": "gpt-5.1-codex-high", "input": "hi", "temperature": 0.5, "store": true}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["output"].as_array().is_some_and(|o| !o.is_empty()));

    let got = gw.up.last().unwrap();
    assert!(
        got.path.ends_with("/backend-api/codex/responses"),
        "{}",
        got.path
    );
    assert_eq!(got.body_json["stream"], true, "forced stream");
    assert_eq!(got.body_json["store"], false);
    assert!(got.body_json.get("temperature").is_none());
    assert_eq!(
        got.body_json["model"], "gpt-5.1-codex",
        "normalised to the Codex family"
    );
    assert_eq!(got.bearer.as_deref(), Some("oauth-tok"));
    assert_eq!(got.header("chatgpt-account-id"), Some("chatgpt-oauth-tok"));
    assert_eq!(got.header("openai-beta"), Some("responses=experimental"));
    assert_eq!(got.header("accept"), Some("text/event-stream"));
}

/// The ChatGPT backend requires `instructions`, an API-key upstream does not: the default
/// text is added per attempt, by the kind of the account that attempt goes to (a failover
/// may switch kinds), and never for Codex CLI, which sends its own prompt.
#[tokio::test]
async fn default_instructions_only_for_subscription_accounts() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.oauth_account("oauth-first", group, 1).await;
    gw.api_key_account("sk-second", group, 2, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    // The subscription account is tried first and fails; the API-key account answers.
    gw.up.push_for("oauth-first", Script::error(500));
    let r = gw
        .post(0, &key, json!({"model": "gpt-5.1-codex", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 200);
    let default = include_str!("../../data-plane/src/proxy/responses/default_instructions.txt");
    let sub = gw.up.received_for("oauth-first");
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].body_json["instructions"], default);
    let api = gw.up.received_for("sk-second");
    assert_eq!(api.len(), 1);
    assert!(
        api[0].body_json.get("instructions").is_none(),
        "{}",
        api[0].body_json
    );

    // A client's own instructions are kept on both kinds.
    let r = gw
        .post(
            0,
            &key,
            json!({"model": "gpt-5.1-codex", "input": "hi", "instructions": "Be terse."}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        gw.up.received_for("oauth-first")[1].body_json["instructions"],
        "Be terse."
    );

    // Codex CLI on a subscription account: nothing added (its prompt is in `input`).
    let r = gw
        .http
        .post(gw.responses_url(0))
        .bearer_auth(&key)
        .header("originator", "codex_exec")
        .json(&json!({"model": "gpt-5.1-codex", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let codex = gw.up.received_for("oauth-first");
    assert_eq!(codex.len(), 3);
    assert!(codex[2].body_json.get("instructions").is_none());
}

#[tokio::test]
async fn upstream_4xx_passes_through_with_its_message() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.up.push(Script::bad_request(
        "Invalid value for 'input': expected a string",
    ));
    let r = gw
        .post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "Invalid value for 'input': expected a string"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        gw.up.count(),
        1,
        "a 4xx outside the failover set is not retried"
    );

    gw.up.push(Script::error(404));
    assert_eq!(
        gw.post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
            .await
            .status(),
        404
    );
    gw.up.push(Script::error(422));
    assert_eq!(
        gw.post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
            .await
            .status(),
        422
    );
}

#[tokio::test]
async fn uncontended_request_makes_one_control_plane_call() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    // Warm the authorization cache.
    assert_eq!(
        gw.post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
            .await
            .status(),
        200
    );
    let calls = "tollgate_dp_control_plane_calls_total{method=\"admit\"}";
    let authorize = "tollgate_dp_control_plane_calls_total{method=\"authorize\"}";
    let admits = gw.dp(0).metric(calls).await;
    let auths = gw.dp(0).metric(authorize).await;

    assert_eq!(
        gw.post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
            .await
            .status(),
        200
    );
    assert_eq!(gw.dp(0).metric(calls).await - admits, 1.0, "one Admit");
    assert_eq!(
        gw.dp(0).metric(authorize).await - auths,
        0.0,
        "no Authorize on a warm cache"
    );
}

async fn usage_records(
    gw: &Gateway,
    user: i64,
) -> Vec<tollgate_shared::proto::admin::v1::UsageRecord> {
    use tollgate_shared::proto::admin::v1 as admin;
    gw.admin
        .clone()
        .query_usage(admin::QueryUsageRequest {
            filter: Some(admin::UsageFilter {
                user_id: user,
                ..Default::default()
            }),
            page: None,
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test]
async fn every_finished_request_lands_a_usage_record() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.set_mapping(b.account, &[("alias", "gpt-5.1")]).await;
    gw.up
        .push(Script::success().event_delay(Duration::from_millis(50)));
    let r = gw
        .http
        .post(gw.responses_url(0))
        .bearer_auth(&b.key)
        .header("user-agent", "tollgate-test/1.0")
        .json(&json!({"model": "alias", "input": "hi", "stream": true, "reasoning": {"effort": "high"}}))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap();
    assert_eq!(
        gw.post(0, &b.key, json!({"model": "alias", "input": "hi"}))
            .await
            .status(),
        200
    );
    tollgate_tests::eventually("two usage records", Duration::from_secs(10), || async {
        usage_records(&gw, b.user).await.len() == 2
    })
    .await;
    let records = usage_records(&gw, b.user).await;
    let streamed = records
        .iter()
        .find(|r| r.stream)
        .expect("the streaming record");
    assert_eq!(streamed.key_id, b.key_id);
    assert_eq!(streamed.account_id, b.account);
    assert_eq!(streamed.group_id, Some(b.group));
    assert_eq!(streamed.model, "alias", "priced on the requested model");
    assert_eq!(streamed.upstream_model, "gpt-5.1");
    // The fake's default usage: 100 input (20 cached), 50 output (10 reasoning).
    assert_eq!(
        (
            streamed.input_tokens,
            streamed.cached_tokens,
            streamed.output_tokens,
            streamed.reasoning_tokens
        ),
        (100, 20, 50, 10)
    );
    assert!(!streamed.estimated);
    assert!(
        streamed
            .first_token_ms
            .is_some_and(|t| t >= 0 && t <= streamed.duration_ms),
        "{streamed:?}"
    );
    assert_eq!(streamed.user_agent, "tollgate-test/1.0");
    assert_eq!(streamed.client_ip, "127.0.0.1");
    assert_eq!(streamed.reasoning_effort, "high");
    assert_eq!(streamed.billing_mode, "balance");
    assert!(records.iter().any(|r| !r.stream));
    // Request ids are unique.
    assert_ne!(records[0].request_id, records[1].request_id);
}

#[tokio::test]
async fn client_disconnect_releases_the_slot_at_once_and_usage_is_still_billed() {
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    // A slow stream: ~2 s in total.
    gw.up.push(
        Script::success()
            .text(["a"; 10])
            .event_delay(Duration::from_millis(150)),
    );
    let mut r = gw
        .post(
            0,
            &key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    let _ = r.chunk().await.unwrap();
    drop(r);
    // The user's only slot comes back at once, long before the upstream stream ends.
    let started = std::time::Instant::now();
    let next = gw
        .post(0, &key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(next.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "waited {:?} for the slot",
        started.elapsed()
    );
    // The abandoned stream was read to its end: its usage is the upstream's, not estimated.
    tollgate_tests::eventually("both requests billed", Duration::from_secs(10), || async {
        usage_records(&gw, user).await.len() == 2
    })
    .await;
    let records = usage_records(&gw, user).await;
    let abandoned = records.iter().find(|r| r.stream).unwrap();
    assert!(!abandoned.estimated);
    assert_eq!(abandoned.output_tokens, 50);
    assert!(abandoned.actual_cost_nanos > 0, "billed: {abandoned:?}");
}

#[tokio::test]
async fn stream_without_usage_is_estimated_and_flagged() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    gw.up.push(Script::no_usage());
    let r = gw
        .post(
            0,
            &b.key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    r.text().await.unwrap();
    tollgate_tests::eventually("record", Duration::from_secs(10), || async {
        usage_records(&gw, b.user).await.len() == 1
    })
    .await;
    let rec = &usage_records(&gw, b.user).await[0];
    assert!(rec.estimated);
    assert!(rec.input_tokens > 0, "{rec:?}");
}
