//! `POST /v1/chat/completions` through real HTTP with the official OpenAI Python SDK
//! (plain, streaming with usage, tool calls plain and streamed, a tool result, a JSON
//! schema answer, a refused parameter), on an API-key account and on a subscription
//! account. The same conversation is then sent as the equivalent Responses requests: the
//! upstream receives the very same bodies, and the usage records bill the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Script, Usage};
use tollgate_tests::fixture::Gateway;
use tollgate_tests::sdk;

/// Requests the SDK script makes that reach the upstream (the refused one does not).
const CALLS: usize = 6;
const ARGS: &str = r#"{"city":"Paris"}"#;

/// Distinct usage per call, so records pair up by their tokens.
fn usage(i: u64) -> Usage {
    Usage::new(100 + 10 * i, 10 * i, 20 + i, i)
}

/// The fake's answers, in the order of the SDK script's calls.
fn scripts() -> Vec<Script> {
    let calls = Script::success()
        .text([] as [&str; 0])
        .tool_call("weather", ARGS);
    vec![
        Script::success().text(["Hi", " there"]).usage(usage(1)),
        Script::success().text(["Hel", "lo"]).usage(usage(2)),
        calls.clone().usage(usage(3)),
        calls.usage(usage(4)),
        Script::success().text(["It is 18C."]).usage(usage(5)),
        Script::success()
            .text([r#"{"city":"#, r#" "Paris"}"#])
            .usage(usage(6)),
    ]
}

fn text(role: &str, t: &str) -> Value {
    let part = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    json!({"type": "message", "role": role, "content": [{"type": part, "text": t}]})
}

/// What a Responses client would send for each of the SDK script's calls.
fn equivalent_responses(call_id: &str) -> Vec<Value> {
    let model = "gpt-5.1";
    let tool = json!([{"type": "function", "name": "weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let ask = text("user", "Weather in Paris?");
    vec![
        json!({"model": model, "input": [text("developer", "Be brief."), text("user", "Say hello")],
            "max_output_tokens": 64, "temperature": 0.5}),
        json!({"model": model, "input": [text("user", "Say hello")], "stream": true}),
        json!({"model": model, "input": [ask], "tools": tool, "tool_choice": "auto"}),
        json!({"model": model, "input": [ask], "tools": tool, "stream": true}),
        json!({"model": model, "tools": tool, "input": [ask,
            {"type": "function_call", "call_id": call_id, "name": "weather", "arguments": ARGS},
            {"type": "function_call_output", "call_id": call_id, "output": "18C and sunny"}]}),
        json!({"model": model, "input": [text("user", "Where is it sunny?")], "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "place", "strict": true, "schema": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                "additionalProperties": false}}}}),
    ]
}

async fn records(gw: &Gateway, key_id: i64) -> Vec<admin::UsageRecord> {
    let mut r = gw
        .admin
        .clone()
        .query_usage(admin::QueryUsageRequest {
            filter: Some(admin::UsageFilter {
                key_id,
                ..Default::default()
            }),
            page: Some(admin::PageRequest {
                limit: 100,
                page_token: String::new(),
            }),
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    r.sort_by_key(|r| r.input_tokens);
    r
}

/// The SDK's view of the chat calls.
fn assert_sdk_saw(v: &Value) {
    let u = |i: u64| {
        let x = usage(i);
        json!({"prompt": x.input_tokens, "completion": x.output_tokens, "total": x.total_tokens(),
            "cached": x.cached_tokens, "reasoning": x.reasoning_tokens})
    };
    let plain = &v["plain"];
    assert_eq!(plain["object"], "chat.completion", "{v}");
    assert!(plain["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(plain["model"], "gpt-5.1");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["content"], "Hi there");
    assert_eq!(plain["finish_reason"], "stop");
    assert_eq!(plain["usage"], u(1));

    let stream = &v["stream"];
    assert_eq!(stream["content"], "Hello");
    assert_eq!(stream["finish_reason"], "stop");
    assert_eq!(stream["usage"], u(2), "the usage chunk");
    assert_eq!(stream["ids"], 1, "one completion id across chunks");
    // role, two deltas, finish, usage.
    assert_eq!(stream["chunks"], 5, "{stream}");

    let tools = &v["tools"];
    assert_eq!(tools["finish_reason"], "tool_calls");
    assert_eq!(tools["content"], Value::Null);
    assert_eq!(
        (&tools["name"], &tools["arguments"]),
        (&json!("weather"), &json!(ARGS))
    );
    assert_eq!(tools["calls"], 1);
    assert!(tools["id"].as_str().unwrap().starts_with("call_"));
    let streamed = &v["tools_stream"];
    assert_eq!(streamed["finish_reason"], "tool_calls");
    assert_eq!(streamed["calls"].as_array().unwrap().len(), 1);
    assert_eq!(streamed["calls"][0]["name"], "weather");
    assert_eq!(streamed["calls"][0]["arguments"], ARGS);
    assert!(
        streamed["calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_")
    );

    assert_eq!(v["tool_result"]["content"], "It is 18C.");
    assert_eq!(v["tool_result"]["finish_reason"], "stop");
    assert_eq!(v["json"]["parsed"], json!({"city": "Paris"}));

    let n2 = &v["n2"];
    assert_eq!(n2["status"], 400, "{v}");
    assert_eq!(n2["param"], "n");
    assert_eq!(n2["code"], "unsupported_parameter");
    assert!(n2["message"].as_str().unwrap().contains("only n=1"), "{n2}");
}

/// The SDK's chat calls, then their Responses equivalents, on an account whose upstream
/// bearer is `bearer`; `chat_key` and `responses_key` are two keys of one user.
async fn chat_equals_responses(gw: &Gateway, bearer: &str, keys: [(i64, String); 2]) {
    let [(chat_id, chat_key), (resp_id, resp_key)] = keys;
    for s in scripts() {
        gw.up.push_for(bearer, s);
    }
    let base_url = format!("{}/v1", gw.dp(0).proxy_url());
    let v = sdk::run("check_chat_completions.py", &base_url, &chat_key).await;
    assert_sdk_saw(&v);
    assert_eq!(
        gw.up.count_for(bearer),
        CALLS,
        "the refused call never left"
    );

    for s in scripts() {
        gw.up.push_for(bearer, s);
    }
    for body in equivalent_responses(v["tools"]["id"].as_str().unwrap()) {
        let r = gw.post(0, &resp_key, body).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }

    // One flow: the upstream got the very same requests from both front ends.
    let received = gw.up.received_for(bearer);
    assert_eq!(received.len(), 2 * CALLS);
    for i in 0..CALLS {
        assert_eq!(
            received[i].body_json,
            received[i + CALLS].body_json,
            "call {i}: chat vs responses"
        );
    }

    // And billed it the same.
    eventually("usage recorded", Duration::from_secs(20), || async {
        records(gw, chat_id).await.len() == CALLS && records(gw, resp_id).await.len() == CALLS
    })
    .await;
    let (chat, resp) = (records(gw, chat_id).await, records(gw, resp_id).await);
    for (i, (c, r)) in chat.iter().zip(&resp).enumerate() {
        let want = usage(i as u64 + 1);
        assert_eq!(c.input_tokens, want.input_tokens as i64, "call {i}");
        assert!(!c.estimated, "call {i}: the upstream's own usage");
        assert!(c.actual_cost_nanos > 0, "call {i}");
        let billed = |x: &admin::UsageRecord| {
            (
                x.model.clone(),
                x.upstream_model.clone(),
                [
                    x.input_tokens,
                    x.output_tokens,
                    x.cached_tokens,
                    x.reasoning_tokens,
                ],
                [
                    x.input_cost_nanos,
                    x.output_cost_nanos,
                    x.cached_cost_nanos,
                    x.total_cost_nanos,
                    x.actual_cost_nanos,
                ],
                (
                    x.stream,
                    x.estimated,
                    x.account_id,
                    x.reasoning_effort.clone(),
                ),
            )
        };
        assert_eq!(billed(c), billed(r), "call {i}");
    }
}

async fn two_keys(gw: &Gateway, user: i64, group: i64) -> [(i64, String); 2] {
    [
        gw.key(user, Some(group)).await,
        gw.key(user, Some(group)).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_chat_completions_on_an_api_key_account() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("chat-upstream", group, 10, 5).await;
    let keys = two_keys(&gw, user, group).await;
    chat_equals_responses(&gw, "chat-upstream", keys).await;
    let first = &gw.up.received_for("chat-upstream")[0];
    assert_eq!(first.path, "/v1/responses");
    assert_eq!(first.body_json["input"][0]["role"], "developer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_chat_completions_on_a_subscription_account() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.oauth_account("chat-oauth", group, 10).await;
    let keys = two_keys(&gw, user, group).await;
    chat_equals_responses(&gw, "chat-oauth", keys).await;
    // The subscription backend only streams; non-streaming chat calls were collected.
    let received = gw.up.received_for("chat-oauth");
    assert!(
        received
            .iter()
            .all(|r| r.is_codex() && r.stream_requested())
    );
}

/// POST /v1/chat/completions with raw HTTP.
async fn chat(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.dp(0).proxy_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_errors_keep_the_openai_shape_and_the_stream_format() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let hi = json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]);

    // Refused at the edge: same error table, the parameter named, nothing sent upstream.
    let r = chat(
        &gw,
        "sk-not-a-key",
        json!({"model": "gpt-5.1", "messages": hi}),
    )
    .await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "INVALID_API_KEY");
    let r = chat(
        &gw,
        &b.key,
        json!({"model": "gpt-5.1", "messages": hi, "stop": ["\n"]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["param"], "stop");
    let r = chat(&gw, &b.key, json!({"messages": hi})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["message"],
        "model is required"
    );
    assert_eq!(gw.up.count(), 0);

    // A streamed answer: chunks, then [DONE] last; the image went up as input_image.
    let r = chat(
        &gw,
        &b.key,
        json!({"model": "gpt-5.1", "messages": hi, "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = tollgate_tests::sse::parse_sse(&text);
    let content: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "Hello, world!");
    assert!(
        events.iter().all(|e| e.event.is_none()),
        "chat chunks are bare data events"
    );
    assert_eq!(
        gw.up.last().unwrap().body_json["input"][0]["content"][1],
        json!({"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"})
    );

    // The upstream's own 4xx passes through.
    gw.up.push(Script::bad_request("Invalid image URL."));
    let r = chat(&gw, &b.key, json!({"model": "gpt-5.1", "messages": hi})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["message"],
        "Invalid image URL."
    );

    // A response that failed: an OpenAI error, as JSON or as the stream's last event.
    gw.up
        .push(Script::response_failed().message("The model broke."));
    let r = chat(&gw, &b.key, json!({"model": "gpt-5.1", "messages": hi})).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "upstream_error");
    assert_eq!(e["error"]["message"], "The model broke.");
    gw.up
        .push(Script::response_failed().message("The model broke."));
    let r = chat(
        &gw,
        &b.key,
        json!({"model": "gpt-5.1", "messages": hi, "stream": true}),
    )
    .await;
    let events = tollgate_tests::sse::parse_sse(&r.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["message"], "The model broke.");
    assert!(!events.iter().any(|e| e.data == "[DONE]"));
}
