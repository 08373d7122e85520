//! What the fake upstream received.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use serde_json::Value;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// Arrival order over all requests to this fake (also in the ids it hands out).
    pub seq: u64,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    /// All request headers (names are lower-case).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body parsed as JSON, `Value::Null` when it is not JSON.
    pub body_json: Value,
    /// The token of `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    pub at: Instant,
    /// The `x-request-id` the fake answered with.
    pub request_id: String,
}

impl Received {
    pub(crate) fn new(parts: &http::request::Parts, body: Bytes, seq: u64) -> Self {
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let v = v.trim();
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
        Self {
            seq,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            version: parts.version,
            headers: parts.headers.clone(),
            body_json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body,
            bearer,
            at: Instant::now(),
            request_id: format!("req_fake{seq:024x}"),
        }
    }

    /// A header's value (first one) as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The lower-case names of all headers received, sorted, deduplicated.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Sent to the subscription (codex) path rather than the API-key path.
    pub fn is_codex(&self) -> bool {
        self.path.starts_with(super::CODEX_PATH_PREFIX)
    }

    /// `body.model`
    pub fn model(&self) -> Option<&str> {
        self.body_json.get("model").and_then(Value::as_str)
    }

    /// `body.stream == true`
    pub fn stream_requested(&self) -> bool {
        self.body_json.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Whether the fake answered (or will answer) with SSE: streaming requested, or the
    /// codex path.
    pub fn answered_as_stream(&self) -> bool {
        self.is_codex() || self.stream_requested()
    }
}
