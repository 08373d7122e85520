//! One attempt on one account, as a sequence of named steps: build the upstream request,
//! send it, sort the answer (fail over, pass the upstream's error through, or go on),
//! deliver a success — the SSE pump for streaming clients, the JSON response otherwise
//! (collected from the forced stream for subscription accounts) — and report usage,
//! also when the client has left.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_shared::ErrorCode;

use super::affinity::Recorder;
use super::downstream::{Downstream, PING};
use super::failover::{Source, StreamFault, UpstreamFailure};
use super::upstream::{error_message, outcome_headers};
use super::{Ctx, Flow};
use crate::control::domain::{AccountLease, Lease, Outcome, OutcomeKind, UsageReport};
use crate::control::leases::LeaseGuard;
use crate::metrics::flow::OpenStream;
use crate::proxy::errors::ClientError;
use crate::proxy::sse::{LineTooLong, Observer, Splitter, Usage};
use crate::proxy::transform;
use crate::request_id;

/// How much of an error body is read (for the message and the health rules).
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Largest non-streaming JSON response accepted from an upstream.
const JSON_BODY_LIMIT: usize = 64 << 20;

pub enum Attempt {
    /// Answered (success, pass-through error, or a stream error event): stop.
    Done,
    /// A failover-class failure: try another account.
    Failed {
        failure: UpstreamFailure,
        guard: LeaseGuard,
    },
}

/// How the wait for an upstream's response head ended.
enum Head {
    Answer(reqwest::Response),
    Failed(UpstreamFailure),
    /// The client went away first.
    ClientLeft,
    /// The SIGTERM drain reached its cut first.
    Drained,
}

/// The request as this account's upstream gets it.
struct UpstreamRequest {
    headers: HeaderMap,
    payload: Vec<u8>,
    /// The model name the upstream sees (after the account's mapping).
    upstream_model: String,
    /// The upstream keeps the response (`store` is not false): its id is worth
    /// recording for response-id affinity.
    stored: bool,
}

impl Flow {
    /// One attempt on the leased account: build → send → sort the answer → deliver →
    /// report. A failover-class failure hands the lease back to the run loop.
    pub(super) async fn attempt(
        &self,
        ctx: &mut Ctx,
        lease: &Lease,
        guard: LeaseGuard,
        ds: &mut Downstream,
    ) -> Attempt {
        let account = &lease.account;
        let Some(request) = self.upstream_request(ctx, account) else {
            ds.fail(ClientError::new(
                ErrorCode::Internal,
                "Failed to encode the upstream request",
            ))
            .await;
            return Attempt::Done;
        };
        // The upstream call's own span; the upstream gets its `traceparent`.
        let span = tracing::info_span!(
            "upstream",
            otel.kind = "client",
            account_id = account.account_id
        );
        let mut headers = request.headers;
        tollgate_shared::telemetry::inject(&span, &mut headers);
        let send = tracing::Instrument::instrument(
            self.upstream.send(account, headers, request.payload),
            span,
        );
        let sent = Instant::now();
        ctx.timing.mark_sent();
        let head = self.head(send, ds).await;
        let flow = &self.metrics.flow;
        flow.upstream_response.observe(sent.elapsed().as_secs_f64());
        let resp = match head {
            Head::Answer(resp) => resp,
            Head::Failed(failure) => {
                ctx.timing.add_wait(sent.elapsed());
                return self.fail_over(ctx, account, failure, guard);
            }
            Head::ClientLeft => {
                // Nothing came back: the upstream request is dropped (its connection
                // closed), the slots are freed now, and nothing is charged.
                tracing::info!(
                    account_id = account.account_id,
                    "client left before the upstream answered; request cancelled"
                );
                drop(guard);
                return Attempt::Done;
            }
            // The drain's cut came before the upstream's answer: the request may already
            // cost something, so its usage is reported (estimated from the input).
            Head::Drained => {
                drop(guard);
                ds.fail(super::failover::shutting_down()).await;
                let observer = Observer::new(&request.upstream_model, &ctx.model);
                // No upstream answer, so no upstream request id.
                self.report_usage(ctx, lease, &request.upstream_model, &observer, "");
                return Attempt::Done;
            }
        };
        let resp = successful(resp, self.settings.body_timeout).await;
        // Reading a failure's body is upstream time too.
        ctx.timing.add_wait(sent.elapsed());
        let resp = match resp {
            Ok(resp) => {
                flow.added_latency.observe(ctx.timing.added().as_secs_f64());
                resp
            }
            Err(failure) if failure.fails_over() => {
                return self.fail_over(ctx, account, failure, guard);
            }
            Err(failure) => {
                // Outside the failover set (400, 404, 422, …): the client needs the
                // upstream's own validation message, with its status.
                tracing::info!(
                    account_id = account.account_id,
                    source = ?failure.source,
                    upstream_request_id = failure.upstream_request_id,
                    error = failure.message,
                    "upstream refused the request; passed to the client"
                );
                ds.fail(pass_through(&failure)).await;
                return Attempt::Done;
            }
        };
        let upstream_id = upstream_request_id(resp.headers());
        tracing::debug!(
            account_id = account.account_id,
            status = resp.status().as_u16(),
            upstream_request_id = upstream_id,
            "upstream answered"
        );
        ctx.release_body();
        self.report_success_headers(ctx, account, &resp);
        let observer = Observer::new(&request.upstream_model, &ctx.model);
        // Only a Responses client can continue or retrieve the response by its id.
        let mut rec = if request.stored && ds.speaks_responses() {
            Recorder::new(
                &self.records,
                account.account_id,
                lease.user_id,
                &ctx.request_id,
            )
        } else {
            Recorder::disabled()
        };
        let (obs, fault) = self.deliver(ctx, resp, observer, guard, ds, &mut rec).await;
        if let Some(outcome) = fault
            .and_then(|f| UpstreamFailure::stream(f).outcome(account.account_id, &ctx.request_id))
        {
            self.report_outcome(outcome);
        }
        self.report_usage(ctx, lease, &request.upstream_model, &obs, &upstream_id);
        Attempt::Done
    }

    /// Waits for the upstream's response head: at most the header timeout, and only as
    /// long as the client is there (a committed stream gets keep-alive pings meanwhile,
    /// which is also how a departed HTTP/2 client is noticed).
    async fn head(
        &self,
        send: impl Future<Output = Result<reqwest::Response, UpstreamFailure>>,
        ds: &mut Downstream,
    ) -> Head {
        if ds.is_gone() {
            return Head::ClientLeft;
        }
        let timeout = self.settings.header_timeout;
        let send = tokio::time::timeout(timeout, send);
        tokio::pin!(send);
        let period = self.settings.keepalive;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                r = &mut send => return match r {
                    Ok(Ok(resp)) => Head::Answer(resp),
                    Ok(Err(failure)) => Head::Failed(failure),
                    Err(_) => Head::Failed(UpstreamFailure::header_timeout(timeout)),
                },
                _ = ping.tick(), if ds.committed() => {
                    if !ds.send(PING).await {
                        return Head::ClientLeft;
                    }
                }
                () = ds.closed() => return Head::ClientLeft,
                () = self.drain_cut.cancelled() => return Head::Drained,
            }
        }
    }

    /// The body and header rules of this account's kind applied to the client's request.
    /// `None` when the body cannot be encoded.
    fn upstream_request(&self, ctx: &Ctx, account: &AccountLease) -> Option<UpstreamRequest> {
        let (kind, target) = self.upstream_target(ctx, account);
        // Only the ChatGPT backend requires instructions; an API-key upstream gets the
        // client's request as sent (injected text would change outputs and cost tokens).
        let inject = kind == transform::Kind::OAuth && !ctx.codex;
        // Most requests need no change for their account: encode the client's body as it
        // is rather than copying it (the client's body is kept for failover to another
        // account).
        let changed;
        let untouched = transform::untouched(&ctx.body, &ctx.model, &target).filter(|_| !inject);
        let (body, upstream_model) = match untouched {
            Some(model) => (&ctx.body, model),
            None => {
                let mut copy = ctx.body.clone();
                let model = transform::body(&mut copy, &ctx.model, &target);
                if inject {
                    crate::proxy::body::ensure_instructions(&mut copy, &self.settings.instructions);
                }
                changed = copy;
                (&changed, model)
            }
        };
        let prompt_cache_key = body
            .get("prompt_cache_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let headers = transform::headers(
            &ctx.headers,
            kind,
            &account.user_agent,
            ctx.codex,
            &self.settings.default_originator,
            prompt_cache_key.as_deref(),
        );
        let stored = body.get("store").and_then(Value::as_bool) != Some(false);
        // Sized once: a growing buffer would briefly hold up to twice a large body. The
        // encoding is rarely longer than the client's own bytes (only re-formatted numbers
        // grow), so a small margin is enough: the buffer is held until the upstream's
        // answer, and a fixed large margin (64 KiB) was paid by every request waiting.
        let injected = if inject {
            self.settings.instructions.len().saturating_mul(2)
        } else {
            0
        };
        let mut payload = Vec::with_capacity(payload_capacity(ctx.raw_len, injected));
        serde_json::to_writer(&mut payload, body).ok()?;
        Some(UpstreamRequest {
            headers,
            payload,
            upstream_model,
            stored,
        })
    }

    /// The account failed: its health hears why, and the run loop tries another.
    fn fail_over(
        &self,
        ctx: &Ctx,
        account: &AccountLease,
        failure: UpstreamFailure,
        guard: LeaseGuard,
    ) -> Attempt {
        tracing::info!(
            account_id = account.account_id,
            source = ?failure.source,
            error = failure.message,
            "upstream failure; failing over"
        );
        if let Some(outcome) = failure.outcome(account.account_id, &ctx.request_id) {
            self.report_outcome(outcome);
        }
        Attempt::Failed { failure, guard }
    }

    /// A success carrying subscription usage headers is worth telling the account's
    /// health about (it tracks the usage windows).
    fn report_success_headers(&self, ctx: &Ctx, account: &AccountLease, resp: &reqwest::Response) {
        let headers = outcome_headers(resp.headers());
        if headers.keys().any(|k| k.starts_with("x-codex-")) {
            self.report_outcome(Outcome {
                account_id: account.account_id,
                request_id: ctx.request_id.clone(),
                kind: OutcomeKind::Success,
                status: Some(resp.status().as_u16()),
                message: String::new(),
                headers,
                body: String::new(),
            });
        }
    }

    /// A success: streamed (SSE) or JSON. Returns what was observed, and how the stream
    /// broke if it did.
    async fn deliver(
        &self,
        ctx: &Ctx,
        resp: reqwest::Response,
        observer: Observer,
        guard: LeaseGuard,
        ds: &mut Downstream,
        rec: &mut Recorder,
    ) -> (Observer, Option<StreamFault>) {
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            self.pump(ctx, resp, observer, guard, ds, rec).await
        } else {
            self.json_response(ctx, resp, observer, guard, ds, rec)
                .await
        }
    }

    /// Streams SSE to the client (or, for a non-streaming client, collects the final
    /// response). Returns what was observed and how the stream broke, if it did.
    async fn pump(
        &self,
        ctx: &Ctx,
        resp: reqwest::Response,
        mut obs: Observer,
        guard: LeaseGuard,
        ds: &mut Downstream,
        rec: &mut Recorder,
    ) -> (Observer, Option<StreamFault>) {
        if ctx.stream {
            ds.commit_sse(resp.headers().get(request_id::HEADER).cloned());
        }
        let mut guard = Some(guard);
        let fault = self
            .relay(ctx, resp, &mut obs, &mut guard, ds, rec)
            .await
            .err();
        // Whatever happened, a started report is answered before the client's last byte.
        rec.settle().await;
        let error = match fault {
            // The upstream already told the client, with its own error event.
            Some(StreamFault::Cut) if obs.saw_error_event => None,
            f => f.map(StreamFault::client_error),
        };
        if ctx.stream {
            if let Some(e) = error {
                ds.fail(e).await;
            }
        } else {
            // A non-streaming client: the forced stream of a subscription account, or
            // an API-key upstream that streamed anyway.
            answer_collected(&obs, error, ds).await;
        }
        drop(guard);
        (obs, fault)
    }

    /// Relays the upstream's events (observed: model mapped back, usage read) to a
    /// streaming client, with keep-alive pings while the upstream is quiet. A client
    /// that leaves frees the slots at once (`guard` taken) but the upstream is still read
    /// to its end for usage. `Ok` = a final response arrived.
    async fn relay(
        &self,
        ctx: &Ctx,
        resp: reqwest::Response,
        obs: &mut Observer,
        guard: &mut Option<LeaseGuard>,
        ds: &mut Downstream,
        rec: &mut Recorder,
    ) -> Result<(), StreamFault> {
        let mut split = Splitter::new(self.settings.line_limit);
        let mut upstream = resp.bytes_stream();
        let mut events: Vec<Bytes> = Vec::new();
        let mut last_upstream = Instant::now();
        let mut last_downstream = Instant::now();
        let to_client = ctx.stream;
        let _open = to_client.then(|| OpenStream::new(&self.metrics.flow.streams_open));
        let mut first_byte = true;
        loop {
            let next_ping = last_downstream.max(last_upstream) + self.settings.keepalive;
            let idle_deadline = last_upstream + self.settings.idle_timeout;
            let wake = if to_client && !ds.is_gone() {
                next_ping.min(idle_deadline)
            } else {
                idle_deadline
            };
            tokio::select! {
                chunk = upstream.next() => match chunk {
                    Some(Ok(bytes)) => {
                        last_upstream = Instant::now();
                        if std::mem::take(&mut first_byte) {
                            self.observe_first_byte(ctx);
                        }
                        if split.push(&bytes, &mut events) == Err(LineTooLong) {
                            return Err(StreamFault::LineTooLong);
                        }
                        for ev in events.drain(..) {
                            let out = obs.observe(ev);
                            rec.saw(obs.response_id.as_deref());
                            if obs.final_response.is_some() {
                                // The client may chain on the id once it has this.
                                rec.settle().await;
                            }
                            if to_client && !ds.send_event(out).await {
                                client_left(guard);
                            }
                            last_downstream = Instant::now();
                        }
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "upstream stream broke");
                        return Err(StreamFault::Cut);
                    }
                    None => {
                        if let Some(rest) = split.finish() {
                            let out = obs.observe(rest);
                            rec.saw(obs.response_id.as_deref());
                            rec.settle().await;
                            if to_client { ds.send_event(out).await; }
                        }
                        return if obs.final_response.is_some() { Ok(()) } else { Err(StreamFault::Cut) };
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= idle_deadline {
                        return Err(StreamFault::IdleTimeout);
                    }
                    if !ds.send(PING).await {
                        client_left(guard);
                    }
                    last_downstream = Instant::now();
                }
                () = ds.closed(), if !ds.is_gone() => client_left(guard),
                // The drain's budget is running out: end the stream now (the client gets
                // the error event, usage is reported from what was seen).
                () = self.drain_cut.cancelled() => return Err(StreamFault::Drained),
            }
        }
    }

    fn observe_first_byte(&self, ctx: &Ctx) {
        self.metrics
            .flow
            .upstream_first_byte
            .observe(ctx.timing.since_sent().as_secs_f64());
    }

    /// A non-streaming JSON answer: passed through with the model mapped back. Returns
    /// what was observed and whether the body timed out.
    async fn json_response(
        &self,
        ctx: &Ctx,
        resp: reqwest::Response,
        obs: Observer,
        guard: LeaseGuard,
        ds: &mut Downstream,
        rec: &mut Recorder,
    ) -> (Observer, Option<StreamFault>) {
        let status = resp.status();
        let request_id = resp.headers().get(request_id::HEADER).cloned();
        let mut guard = Some(guard);
        let read = read_body(
            resp,
            JSON_BODY_LIMIT,
            self.settings.idle_timeout,
            self.settings.body_timeout,
            || self.observe_first_byte(ctx),
        );
        tokio::pin!(read);
        let (raw, fault) = tokio::select! {
            read = &mut read => read,
            // Client gone: release the slots now, but read the body to its end (bounded
            // by the body timeout) so the upstream's real usage is billed.
            () = ds.closed() => {
                client_left(&mut guard);
                tokio::select! {
                    read = &mut read => read,
                    () = self.drain_cut.cancelled() => (Bytes::new(), Some(StreamFault::Drained)),
                }
            }
            // The drain's budget is running out: a 503 now, usage estimated.
            () = self.drain_cut.cancelled() => (Bytes::new(), Some(StreamFault::Drained)),
        };
        drop(guard);
        let mut obs = obs;
        if let Some(fault) = fault {
            if !ds.is_gone() {
                ds.fail(fault.client_error()).await;
            }
            return (obs, Some(fault));
        }
        match serde_json::from_slice::<Value>(&raw) {
            Ok(mut v) => {
                obs.rewrite_response(&mut v);
                obs.usage = v.get("usage").and_then(Usage::from_json);
                obs.final_response = Some(v.clone());
                obs.response_id = v.get("id").and_then(Value::as_str).map(str::to_owned);
                rec.saw(obs.response_id.as_deref());
                rec.settle().await;
                if !ds.is_gone() {
                    match ds.final_body(v) {
                        Ok(body) => ds.respond(json(status, body.to_string(), request_id)),
                        Err(e) => ds.fail(e).await,
                    }
                }
            }
            Err(_) if ds.is_gone() => {}
            Err(_) => {
                ds.fail(ClientError::new(
                    ErrorCode::UpstreamFailed,
                    "Upstream returned an invalid response",
                ))
                .await
            }
        }
        (obs, None)
    }

    fn report_usage(
        &self,
        ctx: &Ctx,
        lease: &Lease,
        upstream_model: &str,
        obs: &Observer,
        upstream_request_id: &str,
    ) {
        let (usage, estimated) = match obs.usage {
            Some(u) => (u, false),
            // No usage from the upstream: estimate (≈ 4 bytes per token), flagged. The
            // output is the generated text only (see `Observer::output_text_bytes`).
            None => (
                Usage {
                    input_tokens: i64::try_from(ctx.raw_len / 4).unwrap_or(i64::MAX),
                    output_tokens: i64::try_from(obs.output_text_bytes().div_ceil(4))
                        .unwrap_or(i64::MAX),
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                },
                true,
            ),
        };
        let flow = &self.metrics.flow;
        flow.add_tokens("input", usage.input_tokens);
        flow.add_tokens("output", usage.output_tokens);
        flow.add_tokens("cached", usage.cached_tokens);
        flow.add_tokens("reasoning", usage.reasoning_tokens);
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        ctx.billed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.usage.send(UsageReport {
            request_id: ctx.request_id.clone(),
            key_id: ctx.key.key_id,
            user_id: lease.user_id,
            group_id: lease.group_id,
            subscription_id: lease.subscription_id,
            account_id: lease.account.account_id,
            model: ctx.model.clone(),
            upstream_model: upstream_model.to_owned(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            stream: ctx.stream,
            duration_ms: ms(ctx.started.elapsed()),
            first_token_ms: obs
                .first_token_at
                .map(|t| ms(t.saturating_duration_since(ctx.started))),
            user_agent: ctx.user_agent.clone(),
            client_ip: ctx.client_ip.to_string(),
            reasoning_effort: ctx.reasoning_effort.clone(),
            estimated,
            started_at_ms: ctx.started_ms,
            billing_mode: lease.billing_mode.clone(),
            rate_multiplier: lease.rate_multiplier.clone(),
            account_cost_multiplier: lease.account.cost_multiplier.clone(),
            client_request_id: ctx.client_request_id.clone(),
            upstream_request_id: upstream_request_id.to_owned(),
        });
    }
}

/// Room for the encoded upstream body: the client's bytes, what is injected, and a
/// margin for re-formatted numbers and a mapped model name (1/64 of the body, at most
/// 64 KiB, plus 1 KiB). A body that still outgrows it only costs a reallocation.
fn payload_capacity(raw_len: usize, injected: usize) -> usize {
    raw_len
        .saturating_add((raw_len / 64).min(64 << 10))
        .saturating_add(injected)
        .saturating_add(1024)
}

/// The client left mid-stream: free the slots now (the upstream is still read).
fn client_left(guard: &mut Option<LeaseGuard>) {
    drop(guard.take());
}

/// A success passes; a failure is read (a bounded prefix of its body, for at most
/// `within`) and typed.
async fn successful(
    resp: reqwest::Response,
    within: Duration,
) -> Result<reqwest::Response, UpstreamFailure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let headers = outcome_headers(resp.headers());
    let upstream_id = upstream_request_id(resp.headers());
    let raw = tokio::time::timeout(within, read_prefix(resp, ERROR_BODY_LIMIT))
        .await
        .unwrap_or_default();
    let message = error_message(&raw);
    let mut failure = UpstreamFailure::status(status, message, headers, raw);
    failure.upstream_request_id = upstream_id;
    Err(failure)
}

/// The upstream's own `x-request-id` (sanitised like a client's: it is logged and stored).
fn upstream_request_id(h: &HeaderMap) -> String {
    h.get(request_id::HEADER)
        .map(|v| request_id::sanitize(v.as_bytes()))
        .unwrap_or_default()
}

/// The final response collected from a stream, for a client that asked for JSON.
async fn answer_collected(obs: &Observer, error: Option<ClientError>, ds: &mut Downstream) {
    match (&obs.final_response, error) {
        (Some(resp), None) => match ds.final_body(resp.clone()) {
            Ok(body) => ds.respond(json(StatusCode::OK, body.to_string(), None)),
            Err(e) => ds.fail(e).await,
        },
        (_, e) => {
            ds.fail(e.unwrap_or_else(|| {
                ClientError::new(
                    ErrorCode::UpstreamFailed,
                    "Upstream returned no final response",
                )
            }))
            .await
        }
    }
}

/// A whole (bounded) body; the upstream may be silent at most `idle` between chunks and
/// take at most `total` in all, else the body timed out (`IdleTimeout`). A body that
/// breaks yields what arrived (then not valid JSON). `first_byte` runs when the first
/// chunk arrives.
async fn read_body(
    resp: reqwest::Response,
    limit: usize,
    idle: Duration,
    total: Duration,
    first_byte: impl FnOnce(),
) -> (Bytes, Option<StreamFault>) {
    let deadline = tokio::time::Instant::now() + total;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut first_byte = Some(first_byte);
    loop {
        let wait = deadline.min(tokio::time::Instant::now() + idle);
        match tokio::time::timeout_at(wait, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                if let Some(f) = first_byte.take() {
                    f();
                }
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "upstream body broke");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::info!("upstream body timed out (idle or body timeout)");
                return (Bytes::from(out), Some(StreamFault::IdleTimeout));
            }
        }
    }
    (Bytes::from(out), None)
}

/// A bounded prefix of an error body (for the response operations too).
pub(super) async fn read_prefix_of(resp: reqwest::Response, limit: usize) -> Bytes {
    read_prefix(resp, limit).await
}

async fn read_prefix(resp: reqwest::Response, limit: usize) -> Bytes {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

/// What a client is told when the upstream refused its request without an OpenAI-shaped
/// error body.
const UNREADABLE_REJECTION: &str = "The upstream rejected the request without an error description";

/// The upstream's 4xx with its own OpenAI error body (re-serialized: only the error
/// fields, never anything else the upstream sent).
/// A body that is not an OpenAI-shaped error (an HTML page from a load balancer, plain
/// text) is never shown: it gets a fixed message instead.
pub(super) fn pass_through(failure: &UpstreamFailure) -> ClientError {
    let upstream_error = serde_json::from_slice::<Value>(&failure.body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let message = match upstream_error
        .as_ref()
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
    {
        Some(_) => failure.message.as_str(),
        None => UNREADABLE_REJECTION,
    };
    let mut obj = serde_json::Map::new();
    let field = |k: &str| {
        upstream_error
            .as_ref()
            .and_then(|e| e.get(k))
            .filter(|v| !v.is_null())
            .cloned()
    };
    obj.insert(
        "type".into(),
        field("type").unwrap_or_else(|| "invalid_request_error".into()),
    );
    if let Some(code) = field("code") {
        obj.insert("code".into(), code);
    }
    obj.insert("message".into(), Value::String(message.to_owned()));
    if let Some(param) = field("param") {
        obj.insert("param".into(), param);
    }
    let mut e = ClientError::new(ErrorCode::InvalidRequest, message);
    if let Source::Status(status) = failure.source {
        e.status = Some(status);
    }
    e.error_object = Some(obj);
    e
}

fn json(
    status: StatusCode,
    body: String,
    request_id: Option<HeaderValue>,
) -> Response<crate::http_server::Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The upstream's id under its own name: `x-request-id` is the gateway's.
    if let Some(id) = request_id {
        r.headers_mut().insert(request_id::UPSTREAM_HEADER, id);
    }
    r
}
