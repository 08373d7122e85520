//! One attempt on one account, and delivering its success: the SSE pump for streaming
//! clients, the JSON response otherwise (built from the forced stream for subscription
//! accounts). Usage is reported at the end, also when the client has left.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_shared::ErrorCode;
use tollgate_shared::proto::gateway::v1 as pb;

use super::downstream::{Downstream, PING};
use super::failover::{self, LastFailure};
use super::upstream::{error_message, outcome_headers};
use super::{Ctx, Flow};
use crate::control::leases::LeaseGuard;
use crate::proxy::errors::ClientError;
use crate::proxy::sse::{LineTooLong, Observer, Splitter, Usage};
use crate::proxy::transform::{self, Kind};

/// How much of an error body is read (for the message and the health rules).
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Largest non-streaming JSON response accepted from an upstream.
const JSON_BODY_LIMIT: usize = 64 << 20;

pub enum Attempt {
    /// Answered (success, pass-through error, or a stream error event): stop.
    Done,
    /// A failover-class failure: try another account.
    Failed {
        status: LastFailure,
        guard: LeaseGuard,
    },
}

enum StreamEnd {
    Completed,
    Cut,
    IdleTimeout,
    LineTooLong,
}

impl Flow {
    pub(super) async fn attempt(
        &self,
        ctx: &Ctx,
        lease: &pb::Lease,
        account: &pb::AccountLease,
        guard: LeaseGuard,
        ds: &mut Downstream,
    ) -> Attempt {
        let (kind, target) = self.upstream_target(ctx, account);
        let mut body = ctx.body.clone();
        let upstream_model = transform::body(&mut body, &ctx.model, &target);
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
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => p,
            Err(_) => {
                ds.fail(ClientError::new(
                    ErrorCode::Internal,
                    "Failed to encode the upstream request",
                ))
                .await;
                return Attempt::Done;
            }
        };
        let resp = match self.upstream.send(account, headers, payload).await {
            Ok(r) => r,
            Err(msg) => {
                tracing::info!(
                    account_id = account.account_id,
                    error = msg,
                    "upstream connect failed; failing over"
                );
                self.report_outcome(outcome(
                    ctx,
                    account,
                    0,
                    pb::report_outcome_request::Kind::ConnectError,
                    msg,
                    Default::default(),
                    String::new(),
                ));
                return Attempt::Failed {
                    status: None,
                    guard,
                };
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let headers = outcome_headers(resp.headers());
            let raw = read_prefix(resp, ERROR_BODY_LIMIT).await;
            let message = error_message(&raw);
            let body_text = String::from_utf8_lossy(&raw).into_owned();
            if failover::is_failover(status, &message) {
                tracing::info!(
                    account_id = account.account_id,
                    status = status.as_u16(),
                    "upstream failure; failing over"
                );
                self.report_outcome(outcome(
                    ctx,
                    account,
                    status.as_u16(),
                    pb::report_outcome_request::Kind::HttpStatus,
                    message,
                    headers,
                    body_text,
                ));
                return Attempt::Failed {
                    status: Some(status.as_u16()),
                    guard,
                };
            }
            // Outside the failover set (400, 404, 422, …): the client needs the
            // upstream's own validation message, with its status.
            ds.fail(pass_through(status, &raw, &message)).await;
            return Attempt::Done;
        }
        let snapshot = outcome_headers(resp.headers());
        if snapshot.keys().any(|k| k.starts_with("x-codex-")) {
            self.report_outcome(outcome(
                ctx,
                account,
                status.as_u16(),
                pb::report_outcome_request::Kind::Success,
                String::new(),
                snapshot,
                String::new(),
            ));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let observer = Observer::new(&upstream_model, &ctx.model);
        let (obs, end) = if is_sse {
            self.pump(ctx, resp, observer, guard, ds, kind).await
        } else {
            (
                self.json_response(resp, observer, guard, ds).await,
                StreamEnd::Completed,
            )
        };
        if matches!(end, StreamEnd::IdleTimeout) {
            self.report_outcome(outcome(
                ctx,
                account,
                0,
                pb::report_outcome_request::Kind::StreamTimeout,
                "stream idle timeout".into(),
                Default::default(),
                String::new(),
            ));
        }
        self.report_usage(ctx, lease, account, &upstream_model, &obs);
        Attempt::Done
    }

    /// Streams SSE to the client (or, for a non-streaming client of a subscription
    /// account, collects the final response). Returns what was observed.
    async fn pump(
        &self,
        ctx: &Ctx,
        resp: reqwest::Response,
        mut obs: Observer,
        guard: LeaseGuard,
        ds: &mut Downstream,
        kind: Kind,
    ) -> (Observer, StreamEnd) {
        let to_client = ctx.stream;
        if to_client {
            ds.commit_sse(resp.headers().get("x-request-id").cloned());
        }
        let mut guard = Some(guard);
        let mut split = Splitter::new(self.settings.line_limit);
        let mut upstream = resp.bytes_stream();
        let mut events: Vec<Bytes> = Vec::new();
        let mut last_upstream = Instant::now();
        let mut last_downstream = Instant::now();
        let end = loop {
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
                        if split.push(&bytes, &mut events) == Err(LineTooLong) {
                            break StreamEnd::LineTooLong;
                        }
                        for ev in events.drain(..) {
                            let out = obs.observe(ev);
                            if to_client && !ds.send(out).await {
                                // Client gone: free the slots now, keep reading for usage.
                                guard = None;
                            }
                            last_downstream = Instant::now();
                        }
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "upstream stream broke");
                        break StreamEnd::Cut;
                    }
                    None => {
                        if let Some(rest) = split.finish() {
                            let out = obs.observe(rest);
                            if to_client { ds.send(out).await; }
                        }
                        break if obs.final_response.is_some() { StreamEnd::Completed } else { StreamEnd::Cut };
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= idle_deadline {
                        break StreamEnd::IdleTimeout;
                    }
                    if !ds.send(PING).await {
                        guard = None;
                    }
                    last_downstream = Instant::now();
                }
                () = ds.closed(), if !ds.is_gone() => { guard = None; }
            }
        };
        let error = match end {
            StreamEnd::Completed => None,
            StreamEnd::Cut if obs.saw_error_event => None,
            StreamEnd::Cut => Some(ClientError::new(
                ErrorCode::UpstreamFailed,
                "Upstream stream ended unexpectedly",
            )),
            StreamEnd::IdleTimeout => Some(ClientError::new(
                ErrorCode::StreamTimeout,
                "Upstream stream timed out",
            )),
            StreamEnd::LineTooLong => Some(ClientError::new(
                ErrorCode::ResponseTooLarge,
                "Upstream response line too large",
            )),
        };
        if to_client {
            if let Some(e) = error {
                ds.fail(e).await;
            }
        } else if kind == Kind::OAuth {
            match (&obs.final_response, error) {
                (Some(resp), None) => ds.respond(json(StatusCode::OK, resp.to_string(), None)),
                (_, Some(e)) => ds.fail(e).await,
                (None, None) => {
                    ds.fail(ClientError::new(
                        ErrorCode::UpstreamFailed,
                        "Upstream returned no final response",
                    ))
                    .await
                }
            }
        } else {
            // A non-streaming client whose API-key upstream streamed anyway.
            match (&obs.final_response, error) {
                (Some(resp), None) => ds.respond(json(StatusCode::OK, resp.to_string(), None)),
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
        drop(guard);
        (obs, end)
    }

    /// A non-streaming JSON answer: passed through with the model mapped back.
    async fn json_response(
        &self,
        resp: reqwest::Response,
        obs: Observer,
        guard: LeaseGuard,
        ds: &mut Downstream,
    ) -> Observer {
        let status = resp.status();
        let request_id = resp.headers().get("x-request-id").cloned();
        let raw = tokio::select! {
            raw = read_prefix(resp, JSON_BODY_LIMIT) => raw,
            // Client gone: release now; the read below still finishes for usage.
            () = ds.closed() => Bytes::new(),
        };
        drop(guard);
        let mut obs = obs;
        match serde_json::from_slice::<Value>(&raw) {
            Ok(mut v) => {
                obs.rewrite_response(&mut v);
                obs.usage = v.get("usage").and_then(Usage::from_json);
                obs.final_response = Some(v.clone());
                ds.respond(json(status, v.to_string(), request_id));
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
        obs
    }

    fn report_usage(
        &self,
        ctx: &Ctx,
        lease: &pb::Lease,
        account: &pb::AccountLease,
        upstream_model: &str,
        obs: &Observer,
    ) {
        let (usage, estimated) = match obs.usage {
            Some(u) => (u, false),
            // No usage from the upstream: estimate (≈ 4 bytes per token), flagged.
            None => (
                Usage {
                    input_tokens: i64::try_from(ctx.raw_len / 4).unwrap_or(i64::MAX),
                    output_tokens: i64::try_from(obs.output_chars / 4).unwrap_or(i64::MAX),
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                },
                true,
            ),
        };
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.usage.send(pb::UsageReport {
            request_id: ctx.request_id.clone(),
            key_id: ctx.key.key_id,
            user_id: lease.user_id,
            group_id: lease.group_id,
            subscription_id: lease.subscription_id,
            account_id: account.account_id,
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
            account_cost_multiplier: account.cost_multiplier.clone(),
        });
    }
}

fn outcome(
    ctx: &Ctx,
    account: &pb::AccountLease,
    status: u16,
    kind: pb::report_outcome_request::Kind,
    message: String,
    headers: std::collections::HashMap<String, String>,
    body: String,
) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        account_id: account.account_id,
        request_id: ctx.request_id.clone(),
        status: u32::from(status),
        kind: kind as i32,
        message,
        headers,
        body: body.chars().take(4096).collect(),
    }
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

/// The upstream's 4xx with its own OpenAI error body (re-serialized: only the error
/// fields, never anything else the upstream sent).
fn pass_through(status: StatusCode, raw: &[u8], message: &str) -> ClientError {
    let upstream_error = serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| v.get("error").cloned());
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
    e.status = Some(status);
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
    if let Some(id) = request_id {
        r.headers_mut().insert("x-request-id", id);
    }
    r
}
