//! Responses stream events translated, one at a time, into `chat.completion.chunk`
//! events: a first chunk with the assistant role, content / refusal / tool-call deltas,
//! a last chunk with the finish reason, the usage chunk when the client asked for it,
//! then `data: [DONE]`. Errors stay OpenAI-shaped `error` events.

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_shared::ErrorCode;

use super::response::{completion_id, failed, finish_reason, usage};
use crate::proxy::errors::ClientError;
use crate::proxy::sse::fields;

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The translation state of one streamed answer.
#[derive(Debug)]
pub struct Chunks {
    include_usage: bool,
    id: String,
    created: i64,
    model: Value,
    started: bool,
    /// The `output_index` of each function call, in order: its position here is the
    /// call's `index` in `tool_calls`.
    tool_outputs: Vec<i64>,
    finished: bool,
}

impl Chunks {
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            id: completion_id(""),
            created: 0,
            model: Value::Null,
            started: false,
            tool_outputs: Vec::new(),
            finished: false,
        }
    }

    /// The chunks (zero or more whole SSE events) for one upstream event.
    pub fn translate(&mut self, raw: &[u8]) -> Vec<Bytes> {
        let (event, data) = fields(raw);
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return Vec::new();
        };
        let ty = event
            .map(str::to_owned)
            .or_else(|| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let Some(r) = v.get("response") {
            self.learn(r);
        }
        if ty == "error" {
            out.push(upstream_error(&v).sse_event());
            return out;
        }
        if ty == "response.failed" {
            out.push(failed(v.get("response").unwrap_or(&Value::Null)).sse_event());
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(self.chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ));
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        match ty.as_str() {
            "response.output_text.delta" => {
                out.push(self.chunk(json!({"content": s("delta")}), None));
            }
            "response.refusal.delta" => {
                out.push(self.chunk(json!({"refusal": s("delta")}), None));
            }
            "response.output_item.added"
                if v.pointer("/item/type").and_then(Value::as_str) == Some("function_call") =>
            {
                let index = self.tool_outputs.len();
                self.tool_outputs
                    .push(v.get("output_index").and_then(Value::as_i64).unwrap_or(-1));
                let item = |k: &str| {
                    v.pointer(&format!("/item/{k}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                };
                out.push(self.chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "id": item("call_id"),
                        "type": "function",
                        "function": {"name": item("name"), "arguments": ""},
                    }]}),
                    None,
                ));
            }
            "response.function_call_arguments.delta" => {
                let output_index = v.get("output_index").and_then(Value::as_i64).unwrap_or(-1);
                let index = self
                    .tool_outputs
                    .iter()
                    .position(|o| *o == output_index)
                    .unwrap_or(self.tool_outputs.len().saturating_sub(1));
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": s("delta")}}]}),
                    None,
                ));
            }
            "response.completed" | "response.done" | "response.incomplete" => {
                self.finished = true;
                let response = v.get("response").unwrap_or(&Value::Null);
                let reason = finish_reason(response, !self.tool_outputs.is_empty());
                out.push(self.chunk(json!({}), Some(reason)));
                if self.include_usage
                    && let Some(u) = response.get("usage").filter(|u| u.is_object())
                {
                    out.push(self.usage_chunk(usage(u)));
                }
                out.push(Bytes::from_static(DONE));
            }
            _ => {}
        }
        out
    }

    /// The id, creation time and model, from any event carrying the response object.
    fn learn(&mut self, r: &Value) {
        if let Some(id) = r.get("id").and_then(Value::as_str) {
            self.id = completion_id(id);
        }
        if let Some(t) = r.get("created_at").and_then(Value::as_i64) {
            self.created = t;
        }
        if let Some(m) = r.get("model").filter(|m| m.is_string()) {
            self.model = m.clone();
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let c = self.envelope(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]));
        event(&c)
    }

    fn usage_chunk(&self, usage: Value) -> Bytes {
        let mut c = self.envelope(json!([]));
        c["usage"] = usage;
        event(&c)
    }
}

fn event(chunk: &Value) -> Bytes {
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// A Responses `error` event (`{type: "error", code, message}`) as an OpenAI error.
fn upstream_error(v: &Value) -> ClientError {
    let message = v
        .get("message")
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or("The upstream reported an error");
    ClientError::new(ErrorCode::UpstreamFailed, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: &str, data: Value) -> Vec<u8> {
        let mut data = data;
        data["type"] = ty.into();
        format!("event: {ty}\ndata: {data}\n\n").into_bytes()
    }

    /// The chunks' JSON (`[DONE]` as a string).
    fn run(c: &mut Chunks, events: &[Vec<u8>]) -> Vec<Value> {
        events
            .iter()
            .flat_map(|e| c.translate(e))
            .map(|b| {
                let s = String::from_utf8(b.to_vec()).unwrap();
                let data = s
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
            })
            .collect()
    }

    fn created() -> Vec<u8> {
        ev(
            "response.created",
            json!({"response": {"id": "resp_1", "created_at": 5, "model": "gpt-5.1", "status": "in_progress"}}),
        )
    }

    fn completed(output: Value) -> Vec<u8> {
        ev(
            "response.completed",
            json!({"response": {"id": "resp_1", "status": "completed", "output": output,
            "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10, "input_tokens_details": {"cached_tokens": 2}}}}),
        )
    }

    #[test]
    fn text_stream_with_usage() {
        let mut c = Chunks::new(true);
        let out = run(
            &mut c,
            &[
                created(),
                ev(
                    "response.in_progress",
                    json!({"response": {"id": "resp_1"}}),
                ),
                ev(
                    "response.output_text.delta",
                    json!({"output_index": 0, "delta": "Hel"}),
                ),
                ev(
                    "response.output_text.delta",
                    json!({"output_index": 0, "delta": "lo"}),
                ),
                ev("response.output_text.done", json!({"text": "Hello"})),
                completed(json!([])),
            ],
        );
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(out[0]["object"], "chat.completion.chunk");
        assert_eq!(
            (&out[0]["id"], &out[0]["model"], &out[0]["created"]),
            (&json!("chatcmpl-1"), &json!("gpt-5.1"), &json!(5))
        );
        assert!(
            out[0]["usage"].is_null() && out[0].get("usage").is_some(),
            "usage: null on every chunk"
        );
        assert_eq!(out[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(out[2]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(out[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(out[3]["choices"][0]["delta"], json!({}));
        assert_eq!(out[4]["choices"], json!([]));
        assert_eq!(out[4]["usage"]["prompt_tokens"], 7);
        assert_eq!(out[4]["usage"]["completion_tokens"], 3);
        assert_eq!(out[4]["usage"]["total_tokens"], 10);
        assert_eq!(out[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(out[5], "[DONE]");
        // Nothing after the end.
        assert!(c.translate(&created()).is_empty());
    }

    #[test]
    fn tool_call_stream() {
        let mut c = Chunks::new(false);
        let out = run(
            &mut c,
            &[
                created(),
                ev(
                    "response.output_item.added",
                    json!({"output_index": 1, "item": {"type": "function_call", "call_id": "call_7", "name": "weather", "arguments": ""}}),
                ),
                ev(
                    "response.function_call_arguments.delta",
                    json!({"output_index": 1, "delta": "{\"city\":"}),
                ),
                ev(
                    "response.function_call_arguments.delta",
                    json!({"output_index": 1, "delta": "\"Paris\"}"}),
                ),
                completed(json!([{"type": "function_call"}])),
            ],
        );
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(
            out[1]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_7", "type": "function", "function": {"name": "weather", "arguments": ""}}])
        );
        assert_eq!(
            out[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":"
        );
        assert_eq!(out[3]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(out[4]["choices"][0]["finish_reason"], "tool_calls");
        assert!(out[4].get("usage").is_none(), "no usage unless asked");
        assert_eq!(out[5], "[DONE]");
    }

    #[test]
    fn errors_stay_openai_error_events() {
        let mut c = Chunks::new(false);
        let failed = c.translate(&ev("response.failed", json!({"response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}}})));
        assert_eq!(failed.len(), 1);
        let (event, data) = fields(&failed[0]);
        assert_eq!(event, Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap()["error"]["message"],
            "boom"
        );
        let mut c = Chunks::new(false);
        let e = c.translate(&ev(
            "error",
            json!({"code": "server_error", "message": "oops", "param": null}),
        ));
        let (_, data) = fields(&e[0]);
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap()["error"]["message"],
            "oops"
        );
    }
}
