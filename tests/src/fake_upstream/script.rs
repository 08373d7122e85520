//! What the fake upstream does with one Responses request: a [`Script`] (built with the
//! constructors and builder methods below) and the [`Gate`] that can hold requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

/// Token counts reported in `usage` (the `response.completed` event or the JSON body).
/// `total_tokens` is `input_tokens + output_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Default for Usage {
    /// input 100 (20 cached), output 50 (10 reasoning).
    fn default() -> Self {
        Self {
            input_tokens: 100,
            cached_tokens: 20,
            output_tokens: 50,
            reasoning_tokens: 10,
        }
    }
}

impl Usage {
    pub fn new(input: u64, cached: u64, output: u64, reasoning: u64) -> Self {
        Self {
            input_tokens: input,
            cached_tokens: cached,
            output_tokens: output,
            reasoning_tokens: reasoning,
        }
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// An OpenAI error answered before any response byte.
#[derive(Clone, Debug)]
pub struct ErrorSpec {
    pub status: u16,
    /// `error.type`
    pub error_type: String,
    /// `error.code` (`null` when `None`)
    pub code: Option<String>,
    /// `error.message`; `None` = the default text for the status (404 names the model).
    pub message: Option<String>,
    /// Extra members of `error` (e.g. `resets_at`, `resets_in_seconds`, `plan_type`).
    pub extra: Map<String, Value>,
    /// Replaces the whole body verbatim when set (content type stays `application/json`).
    pub raw_body: Option<String>,
}

impl ErrorSpec {
    /// The default `type`, `code` and message OpenAI uses for `status`.
    pub fn for_status(status: u16) -> Self {
        let (error_type, code): (&str, Option<&str>) = match status {
            400 => ("invalid_request_error", None),
            401 => ("invalid_request_error", Some("invalid_api_key")),
            402 => ("billing_error", Some("payment_required")),
            403 => (
                "request_forbidden",
                Some("unsupported_country_region_territory"),
            ),
            404 => ("invalid_request_error", Some("model_not_found")),
            422 => ("invalid_request_error", Some("unprocessable_entity")),
            429 => ("requests", Some("rate_limit_exceeded")),
            529 => ("overloaded_error", Some("overloaded")),
            _ => ("server_error", None),
        };
        Self {
            status,
            error_type: error_type.into(),
            code: code.map(Into::into),
            message: None,
            extra: Map::new(),
            raw_body: None,
        }
    }

    pub(crate) fn message_for(&self, model: &str) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        match self.status {
            400 => "Invalid request.".into(),
            401 => "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
            402 => "Payment required: your workspace has been deactivated.".into(),
            403 => "Country, region, or territory not supported".into(),
            404 => format!("The model `{model}` does not exist or you do not have access to it."),
            422 => "Unprocessable entity.".into(),
            429 => "Rate limit reached for requests. Please try again later.".into(),
            500 => "The server had an error while processing your request. Sorry about that!".into(),
            502 => "Bad gateway.".into(),
            503 => "The engine is currently overloaded, please try again later.".into(),
            504 => "Gateway timeout.".into(),
            529 => "Overloaded".into(),
            s => format!("Upstream error {s}."),
        }
    }

    pub(crate) fn body(&self, model: &str) -> String {
        if let Some(raw) = &self.raw_body {
            return raw.clone();
        }
        let mut error = Map::new();
        error.insert("message".into(), self.message_for(model).into());
        error.insert("type".into(), self.error_type.clone().into());
        error.insert("param".into(), Value::Null);
        error.insert(
            "code".into(),
            self.code.clone().map_or(Value::Null, Value::String),
        );
        for (k, v) in &self.extra {
            error.insert(k.clone(), v.clone());
        }
        serde_json::json!({ "error": error }).to_string()
    }
}

/// The shape of the answer.
///
/// "Stream-shaped" kinds answer with SSE when the request streams (`"stream": true`, or
/// always on the codex path); for a non-streaming request they use the JSON analogue noted
/// on each variant.
#[derive(Clone, Debug)]
pub enum Kind {
    /// 200 with the full event sequence / the full `response` object.
    Success,
    /// An HTTP error status with an OpenAI error body.
    Error(ErrorSpec),
    /// Accept the request (it is recorded), then close the connection without writing any
    /// response byte. On HTTP/2 the whole connection is dropped.
    CloseBeforeResponse,
    /// Send the first `after_events` events of the success sequence, then drop the
    /// connection (no terminating chunk / RST_STREAM). Non-streaming: the first half of the
    /// JSON body, then the drop.
    CutStream { after_events: usize },
    /// One `response.output_text.delta` event (after the first delta) whose `data:` line is
    /// exactly `line_bytes` bytes long (without the `\n`); the padding is not repeated in
    /// the later events, so exactly one line is over-long. Non-streaming: the JSON body
    /// padded to `line_bytes` bytes.
    LongLine { line_bytes: usize },
    /// The success sequence, but `response.completed` has no `usage`. Non-streaming: the
    /// body has no `usage`.
    NoUsage,
    /// Created, in-progress, item/part added, the deltas, then a clean end of stream (no
    /// done events, no `response.completed`). Non-streaming: like `NoUsage`.
    StopAfterDeltas,
    /// After the deltas, a `response.failed` event (response `status: "failed"` with
    /// `error {code, message}`), then the end. Non-streaming: 200 with that failed response.
    ResponseFailed { code: String, message: String },
    /// After the deltas, `event: error` with `{type:"error", code, message, param}`, then the
    /// end. Non-streaming: 500 with an OpenAI error body carrying that code and message.
    ErrorEvent { code: String, message: String },
    /// Verbatim: status, content type and body chunks (each flushed separately, with
    /// `event_delay` between them).
    Raw {
        status: u16,
        content_type: String,
        chunks: Vec<String>,
    },
}

/// One scripted answer. Start from a constructor, refine with the builder methods.
///
/// ```ignore
/// up.push(Script::success().text(["Hel", "lo"]).usage(Usage::new(7, 0, 3, 0)));
/// up.push_for("sk-a", Script::rate_limited().retry_after(30));
/// up.push(Script::success().hold(&gate));
/// ```
#[derive(Clone, Debug)]
pub struct Script {
    pub kind: Kind,
    /// Extra response headers (added after the defaults, may override them).
    pub headers: Vec<(String, String)>,
    /// Waited before the response head is sent.
    pub delay: Duration,
    /// Waited (after being recorded, before `delay`) until the gate lets the request pass.
    pub hold: Option<Gate>,
    pub usage: Usage,
    /// The `output_text.delta` chunks; the output text is their concatenation.
    pub text: Vec<String>,
    /// Sleep between consecutive SSE events (and raw chunks).
    pub event_delay: Duration,
    /// After this many events, stay silent for the duration, then carry on. Non-streaming:
    /// the silence falls between the response head and the body.
    pub pause: Option<(usize, Duration)>,
    /// The `model` reported back; default = the requested model.
    pub model: Option<String>,
    /// The name of the final event: `response.completed` (default) or `response.done`.
    pub final_event: String,
    /// Function calls (`name`, `arguments`) the answer makes, after its message (which
    /// is left out when `text` is empty), as OpenAI streams and returns them.
    pub tool_calls: Vec<(String, String)>,
}

impl Default for Script {
    fn default() -> Self {
        Self::success()
    }
}

impl Script {
    fn with_kind(kind: Kind) -> Self {
        Self {
            kind,
            headers: Vec::new(),
            delay: Duration::ZERO,
            hold: None,
            usage: Usage::default(),
            text: vec!["Hello".into(), ", ".into(), "world".into(), "!".into()],
            event_delay: Duration::ZERO,
            pause: None,
            model: None,
            final_event: "response.completed".into(),
            tool_calls: Vec::new(),
        }
    }

    /// 200: the full event sequence (streaming) or the `response` object (JSON).
    pub fn success() -> Self {
        Self::with_kind(Kind::Success)
    }

    /// An error status with OpenAI's usual `type`, `code` and message for it.
    pub fn error(status: u16) -> Self {
        Self::with_kind(Kind::Error(ErrorSpec::for_status(status)))
    }

    /// An error status with the given `type`, `code` and message.
    pub fn error_with(status: u16, error_type: &str, code: Option<&str>, message: &str) -> Self {
        let mut spec = ErrorSpec::for_status(status);
        spec.error_type = error_type.into();
        spec.code = code.map(Into::into);
        spec.message = Some(message.into());
        Self::with_kind(Kind::Error(spec))
    }

    /// 400 `invalid_request_error` with this message (a validation failure).
    pub fn bad_request(message: &str) -> Self {
        Self::error(400).message(message)
    }

    /// 400 "This organization has been disabled." (the account goes to `error`).
    pub fn organization_disabled() -> Self {
        Self::error_with(
            400,
            "invalid_request_error",
            Some("organization_disabled"),
            "This organization has been disabled.",
        )
    }

    /// 429 `rate_limit_exceeded` without `Retry-After` (add `.retry_after(..)`,
    /// `.codex_primary(..)`, `.resets_in_seconds(..)` as needed).
    pub fn rate_limited() -> Self {
        Self::error(429)
    }

    /// 429 as the Codex backend sends it when a plan's window is exhausted:
    /// `error {type: "usage_limit_reached", plan_type, resets_in_seconds, resets_at}`.
    pub fn usage_limit_reached(resets_in_seconds: u64) -> Self {
        let resets_at = super::unix_now() + resets_in_seconds;
        Self::error_with(
            429,
            "usage_limit_reached",
            Some("usage_limit_reached"),
            "The usage limit has been reached",
        )
        .error_field("plan_type", "plus")
        .resets_at(resets_at)
        .resets_in_seconds(resets_in_seconds)
    }

    /// 529 overloaded.
    pub fn overloaded() -> Self {
        Self::error(529)
    }

    /// See [`Kind::CloseBeforeResponse`].
    pub fn close_before_response() -> Self {
        Self::with_kind(Kind::CloseBeforeResponse)
    }

    /// See [`Kind::CutStream`].
    pub fn cut_stream(after_events: usize) -> Self {
        Self::with_kind(Kind::CutStream { after_events })
    }

    /// Head, `events_before` events, then `silence` with nothing on the wire, then the rest
    /// of the success sequence (if the connection is still there).
    pub fn silent_stream(events_before: usize, silence: Duration) -> Self {
        Self::success().pause_after(events_before, silence)
    }

    /// See [`Kind::LongLine`].
    pub fn long_line(line_bytes: usize) -> Self {
        Self::with_kind(Kind::LongLine { line_bytes })
    }

    /// See [`Kind::NoUsage`].
    pub fn no_usage() -> Self {
        Self::with_kind(Kind::NoUsage)
    }

    /// See [`Kind::StopAfterDeltas`].
    pub fn stop_after_deltas() -> Self {
        Self::with_kind(Kind::StopAfterDeltas)
    }

    /// See [`Kind::ResponseFailed`].
    pub fn response_failed() -> Self {
        Self::with_kind(Kind::ResponseFailed {
            code: "server_error".into(),
            message: "The model failed to generate a response.".into(),
        })
    }

    /// See [`Kind::ErrorEvent`].
    pub fn error_event() -> Self {
        Self::with_kind(Kind::ErrorEvent {
            code: "server_error".into(),
            message: "An error occurred while processing your request.".into(),
        })
    }

    /// See [`Kind::Raw`].
    pub fn raw<I, S>(status: u16, content_type: &str, chunks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_kind(Kind::Raw {
            status,
            content_type: content_type.into(),
            chunks: chunks.into_iter().map(Into::into).collect(),
        })
    }

    // ---- builders that apply to every kind ----

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// `Retry-After: <secs>`.
    pub fn retry_after(self, secs: u64) -> Self {
        self.header("retry-after", secs)
    }

    /// `x-codex-primary-used-percent`, `-reset-after-seconds`, `-window-minutes`
    /// (the 5-hour window is `window_minutes = 300`).
    pub fn codex_primary(
        self,
        used_percent: f64,
        reset_after_seconds: u64,
        window_minutes: u64,
    ) -> Self {
        self.header("x-codex-primary-used-percent", used_percent)
            .header("x-codex-primary-reset-after-seconds", reset_after_seconds)
            .header("x-codex-primary-window-minutes", window_minutes)
    }

    /// `x-codex-secondary-*` (the 7-day window is `window_minutes = 10080`).
    pub fn codex_secondary(
        self,
        used_percent: f64,
        reset_after_seconds: u64,
        window_minutes: u64,
    ) -> Self {
        self.header("x-codex-secondary-used-percent", used_percent)
            .header("x-codex-secondary-reset-after-seconds", reset_after_seconds)
            .header("x-codex-secondary-window-minutes", window_minutes)
    }

    /// Waits before the response head.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Holds the request (recorded and counted in flight) until `gate` lets it pass.
    pub fn hold(mut self, gate: &Gate) -> Self {
        self.hold = Some(gate.clone());
        self
    }

    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// The delta chunks.
    pub fn text<I, S>(mut self, chunks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.text = chunks.into_iter().map(Into::into).collect();
        self
    }

    pub fn event_delay(mut self, d: Duration) -> Self {
        self.event_delay = d;
        self
    }

    /// Silence for `d` after `events` events (see [`Script::pause`]).
    pub fn pause_after(mut self, events: usize, d: Duration) -> Self {
        self.pause = Some((events, d));
        self
    }

    /// The model name reported back (e.g. a dated snapshot of the requested one).
    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Adds a function call to the answer (see [`Script::tool_calls`]); combine with
    /// `.text([] as [&str; 0])` for an answer that is only tool calls.
    pub fn tool_call(mut self, name: &str, arguments: &str) -> Self {
        self.tool_calls.push((name.into(), arguments.into()));
        self
    }

    /// Ends with `response.done` instead of `response.completed`.
    pub fn final_event_done(mut self) -> Self {
        self.final_event = "response.done".into();
        self
    }

    // ---- builders for error kinds ----

    /// The message of an `Error`, `ResponseFailed` or `ErrorEvent` script.
    pub fn message(mut self, message: &str) -> Self {
        match &mut self.kind {
            Kind::Error(spec) => spec.message = Some(message.into()),
            Kind::ResponseFailed { message: m, .. } | Kind::ErrorEvent { message: m, .. } => {
                *m = message.into();
            }
            other => panic!("Script::message does not apply to {other:?}"),
        }
        self
    }

    /// The `code` of an `Error`, `ResponseFailed` or `ErrorEvent` script.
    pub fn code(mut self, code: &str) -> Self {
        match &mut self.kind {
            Kind::Error(spec) => spec.code = Some(code.into()),
            Kind::ResponseFailed { code: c, .. } | Kind::ErrorEvent { code: c, .. } => {
                *c = code.into();
            }
            other => panic!("Script::code does not apply to {other:?}"),
        }
        self
    }

    fn error_spec(&mut self) -> &mut ErrorSpec {
        match &mut self.kind {
            Kind::Error(spec) => spec,
            other => panic!("this builder only applies to error scripts, not {other:?}"),
        }
    }

    /// `error.type` of an error script.
    pub fn error_type(mut self, error_type: &str) -> Self {
        self.error_spec().error_type = error_type.into();
        self
    }

    /// An extra member of `error` in an error script.
    pub fn error_field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error_spec().extra.insert(key.into(), value.into());
        self
    }

    /// `error.resets_at` (unix seconds) in an error script.
    pub fn resets_at(self, unix_secs: u64) -> Self {
        self.error_field("resets_at", unix_secs)
    }

    /// `error.resets_in_seconds` in an error script.
    pub fn resets_in_seconds(self, secs: u64) -> Self {
        self.error_field("resets_in_seconds", secs)
    }

    /// The whole error body, verbatim.
    pub fn raw_body(mut self, body: &str) -> Self {
        self.error_spec().raw_body = Some(body.into());
        self
    }
}

/// Holds scripted requests in flight until the test lets them go.
///
/// Requests whose script has `.hold(&gate)` wait (after being recorded) until a permit is
/// released or the gate is opened.
#[derive(Clone, Debug)]
pub struct Gate {
    sem: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self {
            sem: Arc::new(Semaphore::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Lets `n` held requests (present or future) through.
    pub fn release(&self, n: usize) {
        self.sem.add_permits(n);
    }

    /// Lets every held request through, now and from now on.
    pub fn open(&self) {
        self.sem.close();
    }

    /// Requests waiting at the gate right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s, else panics) until at least `n` requests wait at the gate.
    pub async fn wait_for_waiting(&self, n: usize) {
        crate::eventually(
            &format!("{n} requests waiting at the gate"),
            Duration::from_secs(10),
            || async { self.waiting() >= n },
        )
        .await;
    }

    pub(crate) async fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.waiting);
        if let Ok(permit) = self.sem.acquire().await {
            permit.forget();
        }
    }
}
