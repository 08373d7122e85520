//! OpenAI-shaped error bodies from the shared error-code table. Before a stream starts an
//! error is a JSON response with the code's HTTP status; after, an SSE `error` event
//! (always valid JSON: serde_json does the escaping).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tollgate_shared::ErrorCode;
use tollgate_shared::refusal::Refusal;

use crate::http_server::Body;

/// A client-visible failure: a code from the table and a deliberate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides the code's status (pass-through of an upstream 4xx).
    pub status: Option<StatusCode>,
    /// The `error` object to send instead of the table's (pass-through of an upstream 4xx).
    pub error_object: Option<serde_json::Map<String, serde_json::Value>>,
    /// Seconds sent in `Retry-After` (throttled clients).
    pub retry_after_secs: Option<u64>,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
            error_object: None,
            retry_after_secs: None,
        }
    }

    /// The code with its message from the error-code table.
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.http_status())
    }

    pub fn body_json(&self) -> serde_json::Value {
        if let Some(obj) = &self.error_object {
            return serde_json::json!({ "error": obj });
        }
        let mut err = serde_json::Map::new();
        err.insert("type".into(), self.code.error_type().as_str().into());
        if let Some(c) = self.code.client_code() {
            err.insert("code".into(), c.into());
        }
        err.insert("message".into(), self.message.clone().into());
        serde_json::json!({ "error": err })
    }

    pub fn into_response(self) -> Response<Body> {
        let body = Bytes::from(self.body_json().to_string());
        let mut r = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // For the request counter (stack.rs), which labels answers by code.
        r.extensions_mut().insert(self.code);
        r
    }

    /// The SSE form, for errors after the stream has started.
    pub fn sse_event(&self) -> Bytes {
        Bytes::from(format!("event: error\ndata: {}\n\n", self.body_json()))
    }
}

/// A refusal of the authorization checks (responses-flow.md §1), as the client sees it.
impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> Self {
        Self::new(r.code(), r.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ClientError::new(ErrorCode::ApiKeyQuotaExhausted, "API key quota exhausted");
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            e.body_json(),
            serde_json::json!({"error": {"type": "rate_limit_error", "code": "API_KEY_QUOTA_EXHAUSTED", "message": "API key quota exhausted"}})
        );
    }

    #[test]
    fn sse_data_is_valid_json_even_with_quotes_and_newlines() {
        let e = ClientError::new(ErrorCode::UpstreamFailed, "bad \"thing\"\nhappened");
        let ev = String::from_utf8(e.sse_event().to_vec()).unwrap();
        let data = ev
            .strip_prefix("event: error\ndata: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!data.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["message"], "bad \"thing\"\nhappened");
    }
}
