//! Which upstream answers move the request to another account, and what the client sees
//! when switches run out (responses-flow.md §3.6).

use http::StatusCode;
use tollgate_shared::ErrorCode;

use crate::proxy::errors::ClientError;

/// The last failed attempt: an HTTP status, or `None` for a connection that failed
/// before any response byte.
pub type LastFailure = Option<u16>;

/// 401, 402, 403, 429, 529 and every 5xx fail over; so does a 400 saying the upstream
/// organization is disabled (the account is dead, the request is fine).
pub fn is_failover(status: StatusCode, message: &str) -> bool {
    matches!(status.as_u16(), 401 | 402 | 403 | 429 | 529)
        || status.is_server_error()
        || (status == StatusCode::BAD_REQUEST && message.contains("organization has been disabled"))
}

pub fn exhausted(last: LastFailure) -> ClientError {
    let code = match last {
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
        for (last, status, ty) in cases {
            let e = exhausted(last);
            assert_eq!(e.status().as_u16(), status, "{last:?}");
            assert_eq!(e.code.error_type().as_str(), ty);
        }
        assert_eq!(
            exhausted(Some(529)).message,
            "Upstream service overloaded, please retry later"
        );
    }

    #[test]
    fn failover_set() {
        for s in [401, 402, 403, 429, 500, 502, 503, 504, 529] {
            assert!(is_failover(StatusCode::from_u16(s).unwrap(), ""), "{s}");
        }
        for s in [400, 404, 422] {
            assert!(
                !is_failover(StatusCode::from_u16(s).unwrap(), "bad input"),
                "{s}"
            );
        }
        assert!(is_failover(
            StatusCode::BAD_REQUEST,
            "Your organization has been disabled."
        ));
    }
}
