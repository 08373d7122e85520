//! A final Responses `response` object translated to a `chat.completion`, and the pieces
//! the stream translation shares with it (id, usage, finish reason).

use serde_json::{Value, json};
use tollgate_shared::ErrorCode;

use crate::proxy::errors::ClientError;

/// The completion id for a response id: the same suffix, the Chat Completions prefix.
pub fn completion_id(response_id: &str) -> String {
    let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("chatcmpl-{suffix}")
}

/// Responses usage → Chat Completions usage (same counts under the chat names).
pub fn usage(u: &Value) -> Value {
    let n = |p: &str| u.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let (input, output) = (n("/input_tokens"), n("/output_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_i64)
        .unwrap_or(input + output);
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": total,
        "prompt_tokens_details": {
            "cached_tokens": n("/input_tokens_details/cached_tokens"),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": n("/output_tokens_details/reasoning_tokens"),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// Why generation stopped: tool calls, the token limit, the content filter, or done.
pub fn finish_reason(response: &Value, saw_tool_call: bool) -> &'static str {
    if response.get("status").and_then(Value::as_str) == Some("incomplete") {
        return match response
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("content_filter") => "content_filter",
            _ => "length",
        };
    }
    if saw_tool_call { "tool_calls" } else { "stop" }
}

/// A response that failed upstream, as the client's error.
pub fn failed(response: &Value) -> ClientError {
    let message = response
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("The upstream failed to generate a response");
    ClientError::new(ErrorCode::UpstreamFailed, message)
}

/// The whole `chat.completion` for a final response object.
pub fn completion(response: &Value) -> Result<Value, ClientError> {
    if response.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(failed(response));
    }
    let mut text = String::new();
    let mut refusal = String::new();
    let mut tool_calls = Vec::new();
    for item in response
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let s = |k: &str| part.get(k).and_then(Value::as_str).unwrap_or("");
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => text.push_str(s("text")),
                        Some("refusal") => refusal.push_str(s("refusal")),
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
                tool_calls.push(json!({
                    "id": s("call_id"),
                    "type": "function",
                    "function": {"name": s("name"), "arguments": s("arguments")},
                }));
            }
            // Reasoning has no place in a chat message; it is billed all the same.
            _ => {}
        }
    }
    let finish = finish_reason(response, !tool_calls.is_empty());
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() },
        "refusal": if refusal.is_empty() { Value::Null } else { refusal.into() },
        "annotations": [],
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let mut out = json!({
        "id": completion_id(response.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": response.get("created_at").and_then(Value::as_i64).unwrap_or(0),
        "model": response.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "system_fingerprint": null,
    });
    if let Some(u) = response.get("usage").filter(|u| u.is_object()) {
        out["usage"] = usage(u);
    }
    if let Some(tier) = response.get("service_tier").filter(|t| t.is_string()) {
        out["service_tier"] = tier.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, output: Value) -> Value {
        json!({"id": "resp_abc", "object": "response", "created_at": 1700000000, "model": "gpt-5.1",
            "status": status, "output": output, "service_tier": "default",
            "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 20},
                      "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 150}})
    }

    #[test]
    fn text_answer() {
        let c = completion(&response("completed", json!([
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}, {"type": "output_text", "text": "!"}]}
        ]))).unwrap();
        assert_eq!(c["id"], "chatcmpl-abc");
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(
            (c["created"].as_i64(), &c["model"]),
            (Some(1_700_000_000), &json!("gpt-5.1"))
        );
        assert_eq!(c["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert!(c["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 10, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
        );
    }

    #[test]
    fn tool_calls_refusals_and_limits() {
        let c = completion(&response("completed", json!([
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"}
        ]))).unwrap();
        let m = &c["choices"][0]["message"];
        assert_eq!(m["content"], Value::Null);
        assert_eq!(
            m["tool_calls"][1],
            json!({"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}})
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");

        let c = completion(&response(
            "completed",
            json!([{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}]),
        ))
        .unwrap();
        assert_eq!(c["choices"][0]["message"]["refusal"], "No.");

        let mut r = response(
            "incomplete",
            json!([{"type": "message", "content": [{"type": "output_text", "text": "Hel"}]}]),
        );
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        assert_eq!(
            completion(&r).unwrap()["choices"][0]["finish_reason"],
            "length"
        );
        r["incomplete_details"] = json!({"reason": "content_filter"});
        assert_eq!(
            completion(&r).unwrap()["choices"][0]["finish_reason"],
            "content_filter"
        );
    }

    #[test]
    fn a_failed_response_is_an_error() {
        let mut r = response("failed", json!([]));
        r["error"] = json!({"code": "server_error", "message": "The model failed."});
        let e = completion(&r).unwrap_err();
        assert_eq!(e.status().as_u16(), 502);
        assert_eq!(e.message, "The model failed.");
    }
}
