//! Server-sent events from the upstream: split into whole events without touching their
//! bytes (framing passes through intact), enforce the single-line limit, and read what
//! the gateway needs from the events (usage, first token, the final response), rewriting
//! the model name back to the requested one when the account maps it.

use std::borrow::Cow;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Incremental splitter: feed chunks, get complete events (each ending with its blank line).
#[derive(Debug)]
pub struct Splitter {
    buf: BytesMut,
    /// Start of the line being scanned.
    line_start: usize,
    /// Scan position (everything before it has been examined).
    pos: usize,
    line_limit: usize,
}

impl Splitter {
    pub fn new(line_limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            line_start: 0,
            pos: 0,
            line_limit,
        }
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), LineTooLong> {
        self.buf.extend_from_slice(chunk);
        while let Some(off) = memchr(b'\n', &self.buf[self.pos..]) {
            let nl = self.pos + off;
            let mut line = &self.buf[self.line_start..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.len() > self.line_limit {
                return Err(LineTooLong);
            }
            if line.is_empty() {
                let event = self.buf.split_to(nl + 1).freeze();
                // A lone blank line between events carries nothing; skip it.
                if event.iter().any(|b| !b.is_ascii_whitespace()) {
                    out.push(event);
                }
                self.line_start = 0;
                self.pos = 0;
            } else {
                self.line_start = nl + 1;
                self.pos = nl + 1;
            }
        }
        self.pos = self.buf.len();
        if self.buf.len() - self.line_start > self.line_limit {
            return Err(LineTooLong);
        }
        Ok(())
    }

    /// Whatever is left when the upstream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = self.buf.split().freeze();
        self.line_start = 0;
        self.pos = 0;
        rest.iter()
            .any(|b| !b.is_ascii_whitespace())
            .then_some(rest)
    }
}

/// Every relayed byte passes here: a vectorised search, not a byte loop (a final event
/// carries the whole response, kilobytes on one line).
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// The `event:` name and joined `data:` of one raw event. The data is borrowed from
/// `raw` when it is one line (every event the upstreams send): relayed events are most
/// of a stream, and each would otherwise be copied once more.
pub fn fields(raw: &[u8]) -> (Option<&str>, Cow<'_, str>) {
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut event = None;
    let mut data: Option<Cow<'_, str>> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                None => data = Some(Cow::Borrowed(v)),
                Some(joined) => {
                    let joined = joined.to_mut();
                    joined.push('\n');
                    joined.push_str(v);
                }
            }
        }
    }
    (event, data.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
}

impl Usage {
    pub fn from_json(u: &Value) -> Option<Self> {
        let n = |v: Option<&Value>| v.and_then(Value::as_i64).unwrap_or(0).max(0);
        u.get("input_tokens")?;
        Some(Self {
            input_tokens: n(u.get("input_tokens")),
            output_tokens: n(u.get("output_tokens")),
            cached_tokens: n(u.pointer("/input_tokens_details/cached_tokens")),
            reasoning_tokens: n(u.pointer("/output_tokens_details/reasoning_tokens")),
        })
    }
}

/// Events whose data carries a whole `response` object.
fn carries_response(ty: &str) -> bool {
    matches!(
        ty,
        "response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.done"
            | "response.incomplete"
            | "response.failed"
            | "response.queued"
    )
}

fn is_final(ty: &str) -> bool {
    matches!(
        ty,
        "response.completed" | "response.done" | "response.incomplete"
    )
}

/// Delta events whose text the model generated (billed as output): the answer, a
/// refusal, reasoning (its summary where that is all that is shown) and tool-call
/// arguments.
fn counts_as_output(ty: &str) -> bool {
    matches!(
        ty,
        "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning_text.delta"
            | "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta"
    )
}

/// The length of a delta event's `delta` string, unescaped, parsed without copying it
/// when it holds no escapes.
fn delta_len(data: &str) -> usize {
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        #[serde(borrow)]
        delta: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Delta<'_>>(data).map_or(0, |d| d.delta.len())
}

/// The generated text in a `response` object: message text and refusals, reasoning
/// summaries and text, function-call arguments.
fn response_text_bytes(response: &Value) -> usize {
    let Some(output) = response.get("output").and_then(Value::as_array) else {
        return 0;
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map_or(0, str::len);
    let parts = |item: &Value, key: &str| -> usize {
        item.get(key).and_then(Value::as_array).map_or(0, |ps| {
            ps.iter()
                .map(|p| text(p, "text") + text(p, "refusal"))
                .sum()
        })
    };
    output
        .iter()
        .map(|item| {
            parts(item, "content")
                + parts(item, "summary")
                + text(item, "arguments")
                + text(item, "input")
        })
        .sum()
}

/// What the gateway learns from a stream as it passes.
#[derive(Debug)]
pub struct Observer {
    /// `Some((upstream, requested))` when names must be mapped back.
    rewrite: Option<(String, String)>,
    pub usage: Option<Usage>,
    pub first_token_at: Option<Instant>,
    pub final_response: Option<Value>,
    /// Bytes of generated text seen in delta events (the `delta` strings, unescaped),
    /// for estimating usage when the upstream sends none.
    pub delta_text_bytes: usize,
    pub saw_error_event: bool,
    /// The upstream's id of the response (from the first event carrying it, or the
    /// JSON body), for response-id affinity.
    pub response_id: Option<String>,
}

impl Observer {
    pub fn new(upstream_model: &str, requested_model: &str) -> Self {
        let rewrite = (upstream_model != requested_model)
            .then(|| (upstream_model.to_owned(), requested_model.to_owned()));
        Self {
            rewrite,
            usage: None,
            first_token_at: None,
            final_response: None,
            delta_text_bytes: 0,
            saw_error_event: false,
            response_id: None,
        }
    }

    /// Looks at one event; returns the bytes the client gets (the same bytes unless the
    /// model name is mapped back).
    pub fn observe(&mut self, raw: Bytes) -> Bytes {
        let (event, data) = fields(&raw);
        let ty_from_event = event;
        // Deltas are most of the stream: handle them without a JSON parse.
        if let Some(ty) = ty_from_event
            && ty.ends_with(".delta")
        {
            self.first_token_at.get_or_insert_with(Instant::now);
            if counts_as_output(ty) {
                self.delta_text_bytes += delta_len(&data);
            }
            return raw;
        }
        let Ok(mut json) = serde_json::from_str::<Value>(&data) else {
            return raw;
        };
        let ty = ty_from_event
            .map(str::to_owned)
            .or_else(|| json.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if ty.ends_with(".delta") {
            self.first_token_at.get_or_insert_with(Instant::now);
            if counts_as_output(&ty) {
                self.delta_text_bytes += json
                    .get("delta")
                    .and_then(Value::as_str)
                    .map_or(0, str::len);
            }
            return raw;
        }
        if ty == "error" || ty == "response.failed" {
            self.saw_error_event = true;
        }
        if !carries_response(&ty) {
            return raw;
        }
        if self.response_id.is_none() {
            self.response_id = json
                .pointer("/response/id")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        let mut changed = false;
        if let Some((upstream, requested)) = &self.rewrite
            && let Some(m) = json.pointer_mut("/response/model")
            && m.as_str() == Some(upstream.as_str())
        {
            *m = Value::String(requested.clone());
            changed = true;
        }
        // Encoded before the final response is moved out of `json` below.
        let out = changed.then(|| {
            let name = event.unwrap_or(&ty);
            Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
        });
        if is_final(&ty) {
            if let Some(u) = json.pointer("/response/usage").and_then(Usage::from_json) {
                self.usage = Some(u);
            }
            self.final_response = json.get_mut("response").map(Value::take);
        }
        out.unwrap_or(raw)
    }

    /// Bytes of generated text, for an estimate: the deltas seen, else the text of the
    /// final response (a JSON answer, or a stream whose deltas carried nothing).
    pub fn output_text_bytes(&self) -> usize {
        if self.delta_text_bytes > 0 {
            return self.delta_text_bytes;
        }
        self.final_response.as_ref().map_or(0, response_text_bytes)
    }

    /// Maps the model back in a whole (non-streaming) response object.
    pub fn rewrite_response(&self, response: &mut Value) {
        if let Some((upstream, requested)) = &self.rewrite
            && response.get("model").and_then(Value::as_str) == Some(upstream.as_str())
        {
            response["model"] = Value::String(requested.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunk_boundaries_and_keeps_bytes() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: ping\n\nevent: b\r\ndata: 2\r\n\r\n";
        for cut in 1..stream.len() {
            let mut s = Splitter::new(1024);
            let mut out = Vec::new();
            s.push(&stream[..cut], &mut out).unwrap();
            s.push(&stream[cut..], &mut out).unwrap();
            let joined: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(joined, stream.to_vec(), "cut at {cut}");
            assert_eq!(out.len(), 3);
        }
    }

    #[test]
    fn line_limit() {
        let mut s = Splitter::new(10);
        let mut out = Vec::new();
        assert_eq!(s.push(b"data: 0123456789abc", &mut out), Err(LineTooLong));
        let mut s = Splitter::new(10);
        assert!(s.push(b"data: 0123\n\n", &mut out).is_ok());
    }

    #[test]
    fn observes_usage_and_rewrites_model() {
        let mut o = Observer::new("gpt-5.1-codex", "my-alias");
        let created = Bytes::from(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5.1-codex\"}}\n\n",
        );
        let out = o.observe(created);
        let (_, data) = fields(&out);
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap()["response"]["model"],
            "my-alias"
        );
        let delta = Bytes::from(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
        );
        assert_eq!(o.observe(delta.clone()), delta);
        assert!(o.first_token_at.is_some());
        let done = Bytes::from(
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5.1-codex\",\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":2}}}}\n\n",
        );
        o.observe(done);
        assert_eq!(
            o.usage,
            Some(Usage {
                input_tokens: 10,
                output_tokens: 7,
                cached_tokens: 4,
                reasoning_tokens: 2
            })
        );
        assert_eq!(o.final_response.as_ref().unwrap()["model"], "my-alias");
    }

    #[test]
    fn the_estimate_counts_generated_text_not_event_envelopes() {
        let mut o = Observer::new("m", "m");
        let ev = |ty: &str, delta: &str| {
            let data = serde_json::json!({"type": ty, "item_id": "msg_0123456789abcdef", "output_index": 0, "content_index": 0, "delta": delta, "logprobs": [], "sequence_number": 12});
            Bytes::from(format!("event: {ty}\ndata: {data}\n\n"))
        };
        o.observe(ev("response.output_text.delta", "Hello, \"world\"\n"));
        o.observe(ev("response.reasoning_summary_text.delta", "Thinking."));
        o.observe(ev(
            "response.function_call_arguments.delta",
            "{\"city\":\"Paris\"}",
        ));
        // Not generated text: the audio transcript of an input, say.
        o.observe(ev("response.audio.transcript.delta", "ignored"));
        // An event without an `event:` line, typed in its data.
        let untyped = serde_json::json!({"type": "response.output_text.delta", "delta": "ok"});
        o.observe(Bytes::from(format!("data: {untyped}\n\n")));
        let expected =
            "Hello, \"world\"\n".len() + "Thinking.".len() + "{\"city\":\"Paris\"}".len() + 2;
        assert_eq!(o.delta_text_bytes, expected);
        assert_eq!(o.output_text_bytes(), expected);

        // A JSON answer without usage: its output text.
        let mut o = Observer::new("m", "m");
        o.final_response = Some(serde_json::json!({"output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "abc"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "hello"}]},
            {"type": "function_call", "arguments": "{}"}
        ]}));
        assert_eq!(o.output_text_bytes(), 3 + 5 + 2);
    }
}
