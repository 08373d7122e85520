//! A failed upstream attempt as a typed value — where it failed and whether another
//! account should be tried (decided once, where the failure is made) — and what the
//! client sees when switches run out (responses-flow.md §3.6).

use std::collections::HashMap;

use bytes::Bytes;
use http::StatusCode;
use tollgate_shared::ErrorCode;

use crate::control::domain::{Outcome, OutcomeKind};
use crate::proxy::errors::ClientError;

/// The largest error-body prefix sent with a health report.
const OUTCOME_BODY_CHARS: usize = 4096;

/// Where an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No answer at all: connect refused, TLS, reset before the head, a proxy's 407.
    Connect,
    /// No response head within the header timeout (the request was sent; nothing came
    /// back): the account's fault, like a 5xx.
    HeaderTimeout,
    /// The upstream answered with this non-success status.
    Status(StatusCode),
    /// The stream broke after the response was under way.
    Stream(StreamFault),
}

/// How a stream that had started went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// It ended (or broke) without a final response.
    Cut,
    /// It went quiet past the idle timeout.
    IdleTimeout,
    /// One SSE line exceeded the line limit.
    LineTooLong,
    /// Still open when the SIGTERM drain reached its cut (`drain::Plan::cut_at`).
    Drained,
}

/// Whether another account should be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// The account's fault (auth, rate limit, outage): try another.
    Yes,
    /// The request's fault, or too late (the client already has bytes).
    No,
}

#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    pub source: Source,
    pub failover: Failover,
    /// The upstream's own message; for logs and the health report, never for clients.
    pub message: String,
    /// Health headers of the failed answer (`x-codex-*`, `retry-after`).
    pub headers: HashMap<String, String>,
    /// A prefix of the failed answer's body.
    pub body: Bytes,
    /// The outbound address rule refused the connection (the client is told so).
    pub refused: bool,
    /// The upstream's `x-request-id` of the failed answer (for logs); empty = none.
    pub upstream_request_id: String,
}

impl UpstreamFailure {
    /// No answer: always the account's (or its proxy's) problem.
    pub fn connect(message: impl Into<String>) -> Self {
        Self {
            source: Source::Connect,
            failover: Failover::Yes,
            message: message.into(),
            headers: HashMap::new(),
            body: Bytes::new(),
            refused: false,
            upstream_request_id: String::new(),
        }
    }

    /// No response head within `after`: fails over, reported as a timeout.
    pub fn header_timeout(after: std::time::Duration) -> Self {
        Self {
            source: Source::HeaderTimeout,
            ..Self::connect(format!(
                "upstream response header timeout: no response head within {} ms",
                after.as_millis()
            ))
        }
    }

    /// The account's upstream address is loopback/private/link-local and such
    /// addresses are not allowed: a connect failure of that account.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            refused: true,
            ..Self::connect(message)
        }
    }

    /// A non-success answer; `message` is the upstream's `error.message`.
    pub fn status(
        status: StatusCode,
        message: String,
        headers: HashMap<String, String>,
        body: Bytes,
    ) -> Self {
        let failover = if account_is_at_fault(status, &message) {
            Failover::Yes
        } else {
            Failover::No
        };
        Self {
            source: Source::Status(status),
            failover,
            message,
            headers,
            body,
            refused: false,
            upstream_request_id: String::new(),
        }
    }

    /// A stream that broke: the client already has bytes, so never a failover.
    pub fn stream(fault: StreamFault) -> Self {
        let message = match fault {
            StreamFault::Cut => "stream ended unexpectedly",
            StreamFault::IdleTimeout => "stream idle timeout",
            StreamFault::LineTooLong => "stream line too long",
            StreamFault::Drained => "stream cut by the shutdown drain",
        };
        Self {
            source: Source::Stream(fault),
            failover: Failover::No,
            message: message.to_owned(),
            headers: HashMap::new(),
            body: Bytes::new(),
            refused: false,
            upstream_request_id: String::new(),
        }
    }

    pub fn fails_over(&self) -> bool {
        self.failover == Failover::Yes
    }

    /// The report for the account's health, if this kind of failure is one.
    pub fn outcome(&self, account_id: i64, request_id: &str) -> Option<Outcome> {
        let (kind, status) = match self.source {
            Source::Connect => (OutcomeKind::ConnectError, None),
            Source::Status(s) => (OutcomeKind::HttpStatus, Some(s.as_u16())),
            // The control plane counts both as timeouts (status 0 for operator rules);
            // the message tells them apart.
            Source::HeaderTimeout | Source::Stream(StreamFault::IdleTimeout) => {
                (OutcomeKind::StreamTimeout, None)
            }
            // A cut, an oversized line or our own shutdown says nothing about the account.
            Source::Stream(StreamFault::Cut | StreamFault::LineTooLong | StreamFault::Drained) => {
                return None;
            }
        };
        Some(Outcome {
            account_id,
            request_id: request_id.to_owned(),
            kind,
            status,
            message: self.message.clone(),
            headers: self.headers.clone(),
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(OUTCOME_BODY_CHARS)
                .collect(),
        })
    }
}

/// 401, 402, 403, 429, 529 and every 5xx fail over; so does a 400 saying the upstream
/// organization is disabled (the account is dead, the request is fine).
fn account_is_at_fault(status: StatusCode, message: &str) -> bool {
    matches!(status.as_u16(), 401 | 402 | 403 | 429 | 529)
        || status.is_server_error()
        || (status == StatusCode::BAD_REQUEST && message.contains("organization has been disabled"))
}

impl StreamFault {
    /// The SSE `error` event (or JSON error) the client gets.
    pub fn client_error(self) -> ClientError {
        match self {
            Self::Cut => ClientError::new(
                ErrorCode::UpstreamFailed,
                "Upstream stream ended unexpectedly",
            ),
            Self::IdleTimeout => ClientError::of(ErrorCode::StreamTimeout),
            Self::LineTooLong => ClientError::of(ErrorCode::ResponseTooLarge),
            Self::Drained => shutting_down(),
        }
    }
}

/// What a request still open at the drain's cut gets: a 503 before its response
/// started, else an SSE `error` event (which the OpenAI SDKs raise as an `APIError`).
pub fn shutting_down() -> ClientError {
    ClientError::new(
        ErrorCode::Unavailable,
        "The gateway is shutting down and ended this response early, please retry",
    )
}

/// What the client sees when the switches ran out, by the last failure.
pub fn exhausted(last: Option<&UpstreamFailure>) -> ClientError {
    if last.is_some_and(|f| f.refused) {
        return ClientError::new(
            ErrorCode::UpstreamFailed,
            "Upstream address refused: the account's upstream resolves to a private address",
        );
    }
    let status = match last.map(|f| f.source) {
        Some(Source::Status(s)) => Some(s.as_u16()),
        Some(Source::HeaderTimeout) => return ClientError::of(ErrorCode::UpstreamTimeout),
        _ => None,
    };
    let code = match status {
        Some(401) => ErrorCode::UpstreamAuthFailed,
        Some(403) => ErrorCode::UpstreamForbidden,
        Some(429) => ErrorCode::UpstreamRateLimited,
        Some(529) => ErrorCode::UpstreamOverloaded,
        Some(500 | 502 | 503 | 504) => ErrorCode::UpstreamUnavailable,
        _ => ErrorCode::UpstreamFailed,
    };
    ClientError::of(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16, message: &str) -> UpstreamFailure {
        UpstreamFailure::status(
            StatusCode::from_u16(s).unwrap(),
            message.into(),
            HashMap::new(),
            Bytes::new(),
        )
    }

    #[test]
    fn mapping_table() {
        let cases = [
            (Some(401), 502, "upstream_error"),
            (Some(403), 502, "upstream_error"),
            (Some(429), 429, "rate_limit_error"),
            (Some(529), 503, "upstream_error"),
            (Some(500), 502, "upstream_error"),
            (Some(504), 502, "upstream_error"),
            (Some(402), 502, "upstream_error"),
            (None, 502, "upstream_error"),
        ];
        for (last, code, ty) in cases {
            let failure = match last {
                Some(s) => status(s, ""),
                None => UpstreamFailure::connect("refused"),
            };
            let e = exhausted(Some(&failure));
            assert_eq!(e.status().as_u16(), code, "{last:?}");
            assert_eq!(e.code.error_type().as_str(), ty);
        }
        assert_eq!(exhausted(None).status().as_u16(), 502);
        let timeout = UpstreamFailure::header_timeout(std::time::Duration::from_secs(2));
        assert!(timeout.fails_over());
        let e = exhausted(Some(&timeout));
        assert_eq!(
            (e.status().as_u16(), e.code),
            (504, ErrorCode::UpstreamTimeout)
        );
        assert_eq!(
            exhausted(Some(&status(529, ""))).message,
            "Upstream service overloaded, please retry later"
        );
    }

    #[test]
    fn failover_set() {
        for s in [401, 402, 403, 429, 500, 502, 503, 504, 529] {
            assert!(status(s, "").fails_over(), "{s}");
        }
        for s in [400, 404, 422] {
            assert!(!status(s, "bad input").fails_over(), "{s}");
        }
        assert!(status(400, "Your organization has been disabled.").fails_over());
        assert!(UpstreamFailure::connect("refused").fails_over());
        for fault in [
            StreamFault::Cut,
            StreamFault::IdleTimeout,
            StreamFault::LineTooLong,
            StreamFault::Drained,
        ] {
            assert!(!UpstreamFailure::stream(fault).fails_over(), "{fault:?}");
        }
    }

    #[test]
    fn health_reports_by_source() {
        let kind = |f: UpstreamFailure| f.outcome(1, "r").map(|o| (o.kind, o.status));
        assert_eq!(
            kind(UpstreamFailure::connect("x")),
            Some((OutcomeKind::ConnectError, None))
        );
        assert_eq!(
            kind(status(429, "")),
            Some((OutcomeKind::HttpStatus, Some(429)))
        );
        assert_eq!(
            kind(UpstreamFailure::stream(StreamFault::IdleTimeout)),
            Some((OutcomeKind::StreamTimeout, None))
        );
        assert_eq!(kind(UpstreamFailure::stream(StreamFault::Cut)), None);
        assert_eq!(kind(UpstreamFailure::stream(StreamFault::Drained)), None);
        let timeout = UpstreamFailure::header_timeout(std::time::Duration::from_secs(2))
            .outcome(1, "r")
            .unwrap();
        assert_eq!(timeout.kind, OutcomeKind::StreamTimeout);
        assert!(
            timeout.message.contains("header timeout"),
            "{}",
            timeout.message
        );
    }
}
