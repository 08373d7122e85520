//! Responses API objects and the SSE event sequence, shaped like OpenAI's. (Parsing
//! streams is `crate::sse`.)

use serde_json::{Value, json};

use super::script::{Kind, Script, Usage};

/// Everything that names one answer.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub response_id: String,
    pub item_id: String,
    pub model: String,
    pub created_at: u64,
    pub text: Vec<String>,
    pub usage: Usage,
    pub final_event: String,
    /// (`call_id`, `name`, `arguments`) of each function call.
    pub tool_calls: Vec<(String, String, String)>,
    seq: u64,
}

impl Ctx {
    pub(crate) fn new(seq: u64, model: &str, script: &Script) -> Self {
        Self {
            response_id: format!("resp_fake{seq:024x}"),
            item_id: format!("msg_fake{seq:024x}"),
            model: script.model.clone().unwrap_or_else(|| model.to_string()),
            created_at: super::unix_now(),
            text: script.text.clone(),
            usage: script.usage,
            final_event: script.final_event.clone(),
            tool_calls: script
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    (format!("call_fake{seq:x}_{i}"), name.clone(), args.clone())
                })
                .collect(),
            seq,
        }
    }

    /// A message item is in the answer unless it is tool calls only.
    fn has_message(&self) -> bool {
        !self.text.is_empty() || self.tool_calls.is_empty()
    }

    /// The `function_call` item of call `i`.
    fn call_item(&self, i: usize, status: &str, with_arguments: bool) -> Value {
        let (call_id, name, args) = &self.tool_calls[i];
        json!({
            "id": format!("fc_fake{:x}_{i}", self.seq),
            "type": "function_call",
            "status": status,
            "arguments": if with_arguments { args.as_str() } else { "" },
            "call_id": call_id,
            "name": name,
        })
    }

    fn full_text(&self) -> String {
        self.text.concat()
    }
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": { "cached_tokens": u.cached_tokens },
        "output_tokens": u.output_tokens,
        "output_tokens_details": { "reasoning_tokens": u.reasoning_tokens },
        "total_tokens": u.total_tokens(),
    })
}

fn output_text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

fn message_item(ctx: &Ctx, text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        vec![output_text_part(text)]
    } else {
        Vec::new()
    };
    json!({
        "id": ctx.item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// The `response` object. `output` empty unless `completed`; `usage` omitted when `None`
/// and `omit_usage`, `null` when `None` otherwise.
fn response_object(
    ctx: &Ctx,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    omit_usage: bool,
) -> Value {
    let mut r = json!({
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": false,
        "temperature": 1.0,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "user": null,
        "metadata": {},
    });
    match usage {
        Some(u) => r["usage"] = usage_json(u),
        None if !omit_usage => r["usage"] = Value::Null,
        None => {}
    }
    r
}

/// The completed `response` object (the non-streaming body), padded text optional.
pub(crate) fn completed_response(ctx: &Ctx, with_usage: bool, text: &str) -> Value {
    let usage = with_usage.then_some(&ctx.usage);
    let mut output = Vec::new();
    if ctx.has_message() {
        output.push(message_item(ctx, text, "completed"));
    }
    output.extend((0..ctx.tool_calls.len()).map(|i| ctx.call_item(i, "completed", true)));
    response_object(ctx, "completed", output, usage, !with_usage)
}

pub(crate) fn failed_response(ctx: &Ctx, code: &str, message: &str) -> Value {
    let mut r = response_object(ctx, "failed", Vec::new(), None, false);
    r["error"] = json!({ "code": code, "message": message });
    r
}

/// The non-streaming JSON body for `kind` (`None` for kinds answered otherwise).
pub(crate) fn json_body(ctx: &Ctx, kind: &Kind) -> Option<String> {
    let full = ctx.full_text();
    Some(match kind {
        Kind::Success | Kind::CutStream { .. } => completed_response(ctx, true, &full).to_string(),
        Kind::NoUsage | Kind::StopAfterDeltas => completed_response(ctx, false, &full).to_string(),
        Kind::ResponseFailed { code, message } => failed_response(ctx, code, message).to_string(),
        Kind::LongLine { line_bytes } => {
            let base = completed_response(ctx, true, &full).to_string().len();
            let pad = line_bytes.saturating_sub(base);
            let text = format!("{full}{}", "x".repeat(pad));
            completed_response(ctx, true, &text).to_string()
        }
        Kind::Error(_) | Kind::ErrorEvent { .. } | Kind::CloseBeforeResponse | Kind::Raw { .. } => {
            return None;
        }
    })
}

/// Builds events with consecutive `sequence_number`s.
struct Seq {
    next: u64,
    out: Vec<String>,
}

impl Seq {
    fn push(&mut self, ty: &str, mut data: Value) {
        data["type"] = ty.into();
        data["sequence_number"] = self.next.into();
        self.next += 1;
        self.out.push(encode(ty, &data));
    }
}

/// `event: <type>\ndata: <json>\n\n`
pub(crate) fn encode(ty: &str, data: &Value) -> String {
    format!("event: {ty}\ndata: {data}\n\n")
}

/// The SSE events (each a complete `event:`/`data:` block) for `kind`; for `CutStream` the
/// full success sequence (the caller cuts it).
pub(crate) fn events(ctx: &Ctx, kind: &Kind) -> Vec<String> {
    let mut s = Seq {
        next: 0,
        out: Vec::new(),
    };
    let in_progress = response_object(ctx, "in_progress", Vec::new(), None, false);
    s.push("response.created", json!({ "response": in_progress }));
    s.push("response.in_progress", json!({ "response": in_progress }));
    let message = ctx.has_message();
    if message {
        s.push(
            "response.output_item.added",
            json!({ "output_index": 0, "item": message_item(ctx, "", "in_progress") }),
        );
        s.push(
            "response.content_part.added",
            json!({
                "item_id": ctx.item_id, "output_index": 0, "content_index": 0,
                "part": output_text_part(""),
            }),
        );
    }
    let delta = |d: &str| {
        json!({
            "item_id": ctx.item_id, "output_index": 0, "content_index": 0,
            "delta": d, "logprobs": [],
        })
    };
    for (i, chunk) in ctx.text.iter().enumerate() {
        s.push("response.output_text.delta", delta(chunk));
        if i == 0
            && let Kind::LongLine { line_bytes } = kind
        {
            push_long_delta(&mut s, delta(""), *line_bytes);
        }
    }
    if ctx.text.is_empty()
        && let Kind::LongLine { line_bytes } = kind
    {
        push_long_delta(&mut s, delta(""), *line_bytes);
    }
    let full = ctx.full_text();
    match kind {
        Kind::StopAfterDeltas => return s.out,
        Kind::ResponseFailed { code, message } => {
            s.push(
                "response.failed",
                json!({ "response": failed_response(ctx, code, message) }),
            );
            return s.out;
        }
        Kind::ErrorEvent { code, message } => {
            s.push(
                "error",
                json!({ "code": code, "message": message, "param": null }),
            );
            return s.out;
        }
        _ => {}
    }
    if message {
        s.push(
            "response.output_text.done",
            json!({
                "item_id": ctx.item_id, "output_index": 0, "content_index": 0,
                "text": full, "logprobs": [],
            }),
        );
        s.push(
            "response.content_part.done",
            json!({
                "item_id": ctx.item_id, "output_index": 0, "content_index": 0,
                "part": output_text_part(&full),
            }),
        );
        s.push(
            "response.output_item.done",
            json!({ "output_index": 0, "item": message_item(ctx, &full, "completed") }),
        );
    }
    push_tool_calls(&mut s, ctx, usize::from(message));
    let with_usage = !matches!(kind, Kind::NoUsage);
    let final_event = ctx.final_event.clone();
    s.push(
        &final_event,
        json!({ "response": completed_response(ctx, with_usage, &full) }),
    );
    s.out
}

/// The events of each function call: added, its arguments (one delta), done.
fn push_tool_calls(s: &mut Seq, ctx: &Ctx, first_index: usize) {
    for i in 0..ctx.tool_calls.len() {
        let output_index = first_index + i;
        let item = ctx.call_item(i, "in_progress", false);
        let item_id = item["id"].clone();
        let args = ctx.tool_calls[i].2.as_str();
        s.push(
            "response.output_item.added",
            json!({ "output_index": output_index, "item": item }),
        );
        s.push(
            "response.function_call_arguments.delta",
            json!({ "item_id": item_id, "output_index": output_index, "delta": args }),
        );
        s.push(
            "response.function_call_arguments.done",
            json!({ "item_id": item_id, "output_index": output_index, "arguments": args }),
        );
        s.push(
            "response.output_item.done",
            json!({ "output_index": output_index, "item": ctx.call_item(i, "completed", true) }),
        );
    }
}

/// A delta event whose `data:` line is exactly `line_bytes` long (or as short as possible).
fn push_long_delta(s: &mut Seq, mut data: Value, line_bytes: usize) {
    data["type"] = "response.output_text.delta".into();
    data["sequence_number"] = s.next.into();
    let base = format!("data: {data}").len();
    data["delta"] = "x".repeat(line_bytes.saturating_sub(base)).into();
    s.push("response.output_text.delta", data);
}
