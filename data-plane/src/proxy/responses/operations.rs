//! Operations on a stored response — `GET` and `DELETE /v1/responses/{id}`,
//! `POST /v1/responses/{id}/cancel`, `GET /v1/responses/{id}/input_items` — proxied to
//! the account that created the response (response-id affinity).
//!
//! Authorization is the key's, as for any request (cache, checks). Then one Admit with
//! `response_operation`: the control plane finds the response's owner (refusing another
//! user's response as not found), skips the billing re-check and pricing, and leases the
//! owning account — a user and an account slot for the call's duration, which keeps the
//! concurrency limits honest and brings the account's credential by the one path
//! credentials travel. Nothing is billed: no usage record is written.

use std::net::SocketAddr;

use futures::StreamExt;
use http::{HeaderValue, Method, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tollgate_shared::ErrorCode;

use super::deliver::{pass_through, read_prefix_of};
use super::failover::{self, UpstreamFailure};
use super::upstream::{error_message, outcome_headers};
use super::{Flow, transform};
use crate::control::domain::{AdmitRequest, Lease};
use crate::http_server::Body;
use crate::proxy::errors::ClientError;
use crate::request_id::{self, RequestIds};

/// Longest response id accepted in a path.
const MAX_ID_LEN: usize = 256;
/// How much of an upstream error body is read.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Path prefixes of the Responses API (as `route_name` accepts them).
const PREFIXES: [&str; 3] = ["/v1/responses/", "/responses/", "/openai/v1/responses/"];

/// One operation on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Retrieve,
    Delete,
    Cancel,
    InputItems,
}

impl Op {
    /// The path after the response id on the upstream.
    fn suffix(self) -> &'static str {
        match self {
            Self::Retrieve | Self::Delete => "",
            Self::Cancel => "/cancel",
            Self::InputItems => "/input_items",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Retrieve | Self::InputItems => Method::GET,
            Self::Delete => Method::DELETE,
            Self::Cancel => Method::POST,
        }
    }
}

/// The operation and response id a request's method and path name, if any.
pub fn parse<'p>(method: &Method, path: &'p str) -> Option<(Op, &'p str)> {
    let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let op = match (method, tail) {
        (&Method::GET, "") => Op::Retrieve,
        (&Method::DELETE, "") => Op::Delete,
        (&Method::POST, "cancel") => Op::Cancel,
        (&Method::GET, "input_items") => Op::InputItems,
        _ => return None,
    };
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    well_formed.then_some((op, id))
}

impl Flow {
    /// Authorizes, leases the owning account, forwards, streams the answer back.
    pub async fn handle_operation(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let ids = RequestIds::of(&req);
        let Some((op, id)) = parse(req.method(), req.uri().path()) else {
            return ClientError::new(ErrorCode::NotFound, "Unknown response route").into_response();
        };
        let id = id.to_owned();
        let (parts, _body) = req.into_parts();
        let key = match self
            .authenticate(parts.uri.query(), &parts.headers, peer)
            .await
        {
            Ok((key, _ip)) => key,
            Err(e) => return e.into_response(),
        };
        let lease = match self.admit_operation(&ids, key.key_id, &id).await {
            Ok(lease) => lease,
            Err(e) => return e.into_response(),
        };
        let guard = self
            .leases
            .hold(&lease.lease_id, lease.user_id, lease.account.account_id);
        let account = &lease.account;
        let mut url = format!(
            "{}/{id}{}",
            account.upstream_url.trim_end_matches('/'),
            op.suffix()
        );
        if let Some(q) = parts.uri.query() {
            url.push('?');
            url.push_str(q);
        }
        let headers = transform::headers(
            &parts.headers,
            account.kind,
            &account.user_agent,
            false,
            &self.settings.default_originator,
            None,
        );
        // Bounded like the Responses flow's upstream calls: the head, then an error body.
        let send = self
            .upstream
            .send_operation(account, op.method(), &url, headers);
        let timeout = self.settings.header_timeout;
        let resp = match tokio::time::timeout(timeout, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(failure)) => return unreachable(account.account_id, &failure),
            Err(_) => {
                let failure = UpstreamFailure::header_timeout(timeout);
                return unreachable(account.account_id, &failure);
            }
        };
        let status = resp.status();
        let upstream_id = resp.headers().get(request_id::HEADER).cloned();
        if !status.is_success() {
            let headers = outcome_headers(resp.headers());
            let raw = tokio::time::timeout(
                self.settings.body_timeout,
                read_prefix_of(resp, ERROR_BODY_LIMIT),
            )
            .await
            .unwrap_or_default();
            let failure = UpstreamFailure::status(status, error_message(&raw), headers, raw);
            tracing::info!(
                account_id = account.account_id,
                status = status.as_u16(),
                upstream_request_id = ?upstream_id,
                error = failure.message,
                "response operation refused by the upstream"
            );
            let err = if failure.fails_over() {
                failover::exhausted(Some(&failure))
            } else {
                pass_through(&failure)
            };
            return err.into_response();
        }
        tracing::debug!(
            account_id = account.account_id,
            ?op,
            "response operation forwarded"
        );
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        // The lease is held until the answer has been streamed out (or the client left).
        let body = resp.bytes_stream().map(move |chunk| {
            let _held = &guard;
            chunk
                .map(http_body::Frame::data)
                .map_err(std::io::Error::other)
        });
        let mut out = Response::new(BodyExt::boxed(StreamBody::new(body)));
        *out.status_mut() = status;
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            content_type.unwrap_or(HeaderValue::from_static("application/json")),
        );
        if let Some(v) = upstream_id {
            h.insert(request_id::UPSTREAM_HEADER, v);
        }
        out
    }

    async fn admit_operation(
        &self,
        ids: &RequestIds,
        key_id: i64,
        response_id: &str,
    ) -> Result<Lease, ClientError> {
        let req = AdmitRequest {
            // Set per attempt by `admit_through_failover`.
            session_id: String::new(),
            request_id: ids.id.clone(),
            key_id,
            model: String::new(),
            session_hash: String::new(),
            excluded_account_ids: Vec::new(),
            user_lease_id: None,
            stream: false,
            default_codex_model: self.settings.default_codex_model.clone(),
            // Never billed: nothing to estimate.
            request_bytes: 0,
            response_id: response_id.to_owned(),
            response_operation: true,
        };
        // Through a control-plane failover like any admission (`admit.rs`).
        let result = self.admit_through_failover(req).await;
        self.admitted(result)
    }
}

/// No answer from the owning account (connect failure, refused address, no head in time).
fn unreachable(account_id: i64, failure: &UpstreamFailure) -> Response<Body> {
    tracing::info!(
        account_id,
        error = failure.message,
        "response operation: upstream unreachable"
    );
    failover::exhausted(Some(failure)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_operation_and_the_id() {
        assert_eq!(
            parse(&Method::GET, "/v1/responses/resp_1"),
            Some((Op::Retrieve, "resp_1"))
        );
        assert_eq!(
            parse(&Method::DELETE, "/responses/resp_1"),
            Some((Op::Delete, "resp_1"))
        );
        assert_eq!(
            parse(&Method::POST, "/openai/v1/responses/resp_1/cancel"),
            Some((Op::Cancel, "resp_1"))
        );
        assert_eq!(
            parse(&Method::GET, "/v1/responses/resp_1/input_items"),
            Some((Op::InputItems, "resp_1"))
        );
        assert_eq!(parse(&Method::POST, "/v1/responses/resp_1"), None);
        assert_eq!(parse(&Method::GET, "/v1/responses/resp_1/other"), None);
        assert_eq!(parse(&Method::GET, "/v1/responses/"), None);
        assert_eq!(parse(&Method::GET, "/v1/responses/../admin"), None);
        assert_eq!(parse(&Method::GET, "/v1/responses/a%2Fb"), None);
    }
}
