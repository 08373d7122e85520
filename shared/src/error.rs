//! The one error-code table both planes use. Each code knows its HTTP status, its
//! OpenAI error `type`, the `code` string clients see (when the spec gives one), its
//! gRPC status code and its client-visible message. Add a row here rather than mapping statuses anywhere else.

use http::StatusCode;
use tonic::Code;

/// OpenAI error `type` values the gateway writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    RateLimit,
    Billing,
    BillingService,
    Upstream,
    Api,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::RateLimit => "rate_limit_error",
            Self::Billing => "billing_error",
            Self::BillingService => "billing_service_error",
            Self::Upstream => "upstream_error",
            Self::Api => "api_error",
        }
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $wire:expr, $http:expr, $ty:ident, $grpc:ident, $msg:literal) ),+ $(,)?) => {
        /// A closed set of failure kinds. `name()` is the stable identifier used on the
        /// Gateway wire (`Rejection.code`); `client_code()` is what HTTP clients see.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// Stable snake_case identifier (Gateway wire, logs, metrics labels).
            pub fn name(self) -> &'static str {
                match self { $( Self::$variant => $name, )+ }
            }

            /// The `code` field of the OpenAI-shaped error body, when the spec gives one.
            pub fn client_code(self) -> Option<&'static str> {
                match self { $( Self::$variant => $wire, )+ }
            }

            pub fn http_status(self) -> StatusCode {
                match self { $( Self::$variant => $http, )+ }
            }

            pub fn error_type(self) -> ErrorType {
                match self { $( Self::$variant => ErrorType::$ty, )+ }
            }

            pub fn grpc_code(self) -> Code {
                match self { $( Self::$variant => Code::$grpc, )+ }
            }

            /// The client-visible message (English, stable): the one source both planes
            /// write. Refusals whose message takes a parameter build it from this in
            /// [`crate::refusal::Refusal::message`].
            pub fn message(self) -> &'static str {
                match self { $( Self::$variant => $msg, )+ }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name { $( $name => Some(Self::$variant), )+ _ => None }
            }
        }
    };
}

error_codes! {
    // ----- authentication (data plane, before the body)
    ApiKeyInQuery => ("api_key_in_query", Some("api_key_in_query_deprecated"), StatusCode::BAD_REQUEST, InvalidRequest, InvalidArgument, "API keys in the query string are not supported; send them in the Authorization header"),
    ApiKeyRequired => ("api_key_required", Some("API_KEY_REQUIRED"), StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "API key is required (Authorization: Bearer <key>)"),
    InvalidApiKey => ("invalid_api_key", Some("INVALID_API_KEY"), StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "Invalid API key"),
    ApiKeyDisabled => ("api_key_disabled", Some("API_KEY_DISABLED"), StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "API key is disabled"),
    ApiKeyQuotaExhausted => ("api_key_quota_exhausted", Some("API_KEY_QUOTA_EXHAUSTED"), StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "API key quota exhausted"),
    ApiKeyExpired => ("api_key_expired", Some("API_KEY_EXPIRED"), StatusCode::FORBIDDEN, Permission, PermissionDenied, "API key has expired"),
    AccessDenied => ("access_denied", Some("ACCESS_DENIED"), StatusCode::FORBIDDEN, Permission, PermissionDenied, "Access denied: client IP is not allowed for this API key"),
    UserNotFound => ("user_not_found", Some("USER_NOT_FOUND"), StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "User not found"),
    UserInactive => ("user_inactive", Some("USER_INACTIVE"), StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "User is not active"),
    GroupDisabled => ("group_disabled", Some("GROUP_DISABLED"), StatusCode::FORBIDDEN, Permission, PermissionDenied, "Group is disabled"),
    SubscriptionNotFound => ("subscription_not_found", Some("SUBSCRIPTION_NOT_FOUND"), StatusCode::FORBIDDEN, Permission, PermissionDenied, "subscription is invalid or expired"),
    UsageLimitExceeded => ("usage_limit_exceeded", Some("USAGE_LIMIT_EXCEEDED"), StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "usage limit exceeded"),
    TooManyInvalidKeys => ("too_many_invalid_keys", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Too many invalid API keys from this address, please retry later"),
    InsufficientBalance => ("insufficient_balance", Some("INSUFFICIENT_BALANCE"), StatusCode::FORBIDDEN, Billing, FailedPrecondition, "insufficient balance"),

    // ----- request body
    InvalidRequest => ("invalid_request", None, StatusCode::BAD_REQUEST, InvalidRequest, InvalidArgument, "Invalid request"),
    BodyTooLarge => ("body_too_large", None, StatusCode::PAYLOAD_TOO_LARGE, InvalidRequest, InvalidArgument, "Request body too large"),
    UnsupportedContentEncoding => ("unsupported_content_encoding", Some("unsupported_content_encoding"), StatusCode::UNSUPPORTED_MEDIA_TYPE, InvalidRequest, InvalidArgument, "Unsupported Content-Encoding: send the body uncompressed or with gzip, deflate or zstd"),
    KeyBodyBudgetFull => ("key_body_budget_full", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Too many large request bodies in flight for this API key, please retry later"),
    BodyBudgetFull => ("body_budget_full", None, StatusCode::SERVICE_UNAVAILABLE, Api, Unavailable, "The gateway is receiving too many large request bodies, please retry later"),
    NotFound => ("not_found", None, StatusCode::NOT_FOUND, InvalidRequest, NotFound, "Not found"),

    // ----- admission (billing re-check after the wait, slots, selection)
    BillingRejected => ("billing_rejected", None, StatusCode::FORBIDDEN, Billing, FailedPrecondition, "Billing check failed"),
    BillingUnavailable => ("billing_unavailable", None, StatusCode::SERVICE_UNAVAILABLE, BillingService, Unavailable, "Billing service temporarily unavailable. Please retry later."),
    TooManyPending => ("too_many_pending", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Too many pending requests, please retry later"),
    UserConcurrencyExceeded => ("user_concurrency_exceeded", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Concurrency limit exceeded for user, please retry later"),
    AccountConcurrencyExceeded => ("account_concurrency_exceeded", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Concurrency limit exceeded for account, please retry later"),
    NoAvailableAccounts => ("no_available_accounts", None, StatusCode::SERVICE_UNAVAILABLE, Api, Unavailable, "No available accounts"),
    /// A response id this gateway does not know for the key's user (never created through
    /// it, created by another user, or past the affinity TTL).
    ResponseNotFound => ("response_not_found", Some("response_not_found"), StatusCode::NOT_FOUND, InvalidRequest, NotFound, "Response not found: it was not created through this gateway for this user, or it has expired"),
    /// The account that created a response cannot serve it now (deleted, disabled, out of
    /// the key's group, cooling down); no other account can, response ids being per account.
    ResponseAccountUnavailable => ("response_account_unavailable", Some("response_account_unavailable"), StatusCode::SERVICE_UNAVAILABLE, Api, Unavailable, "The upstream account that holds this response is unavailable; retry later, or continue without previous_response_id"),
    ModelNotPriced => ("model_not_priced", Some("model_not_priced"), StatusCode::BAD_REQUEST, InvalidRequest, InvalidArgument, "Model has no configured price"),

    // ----- upstream (after failover ran out)
    UpstreamAuthFailed => ("upstream_auth_failed", None, StatusCode::BAD_GATEWAY, Upstream, Unavailable, "Upstream authentication failed, please contact administrator"),
    UpstreamForbidden => ("upstream_forbidden", None, StatusCode::BAD_GATEWAY, Upstream, Unavailable, "Upstream access forbidden, please contact administrator"),
    UpstreamRateLimited => ("upstream_rate_limited", None, StatusCode::TOO_MANY_REQUESTS, RateLimit, ResourceExhausted, "Upstream rate limit exceeded, please retry later"),
    UpstreamOverloaded => ("upstream_overloaded", None, StatusCode::SERVICE_UNAVAILABLE, Upstream, Unavailable, "Upstream service overloaded, please retry later"),
    UpstreamUnavailable => ("upstream_unavailable", None, StatusCode::BAD_GATEWAY, Upstream, Unavailable, "Upstream service temporarily unavailable"),
    UpstreamFailed => ("upstream_failed", None, StatusCode::BAD_GATEWAY, Upstream, Unavailable, "Upstream request failed"),
    StreamTimeout => ("stream_timeout", Some("stream_timeout"), StatusCode::GATEWAY_TIMEOUT, Upstream, DeadlineExceeded, "Upstream stream timed out"),
    UpstreamTimeout => ("upstream_timeout", Some("upstream_timeout"), StatusCode::GATEWAY_TIMEOUT, Upstream, DeadlineExceeded, "Upstream did not respond in time, please retry later"),
    ResponseTooLarge => ("response_too_large", Some("response_too_large"), StatusCode::BAD_GATEWAY, Upstream, ResourceExhausted, "Upstream response line too large"),

    // ----- control plane / admin
    Unauthenticated => ("unauthenticated", None, StatusCode::UNAUTHORIZED, Authentication, Unauthenticated, "missing or invalid admin token"),
    InvalidArgument => ("invalid_argument", None, StatusCode::BAD_REQUEST, InvalidRequest, InvalidArgument, "Invalid argument"),
    AlreadyExists => ("already_exists", None, StatusCode::CONFLICT, InvalidRequest, AlreadyExists, "Already exists"),
    FailedPrecondition => ("failed_precondition", None, StatusCode::BAD_REQUEST, InvalidRequest, FailedPrecondition, "Failed precondition"),
    Unavailable => ("unavailable", None, StatusCode::SERVICE_UNAVAILABLE, Api, Unavailable, "Service temporarily unavailable, please retry later"),
    Internal => ("internal", None, StatusCode::INTERNAL_SERVER_ERROR, Api, Internal, "Internal error"),
}

/// What every crate's error enum implements so that the edges (HTTP rescue layer, gRPC
/// status conversion) map errors in one place.
pub trait CodedError: std::error::Error {
    fn code(&self) -> ErrorCode;
    /// The message safe to show a client. Defaults to the error's Display text, so
    /// implementors with internal detail must override it.
    fn public_message(&self) -> String {
        self.to_string()
    }
}

/// A gRPC status carrying the code's name in the `x-tollgate-code` metadata, so the
/// other side can recover the exact `ErrorCode` rather than only the gRPC class.
pub fn to_status(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::new(code.grpc_code(), message);
    if let Ok(v) = code.name().parse() {
        status.metadata_mut().insert(CODE_METADATA, v);
    }
    status
}

/// Recover the `ErrorCode` a status was built with by [`to_status`].
pub fn code_of(status: &tonic::Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_name)
}

pub const CODE_METADATA: &str = "x-tollgate-code";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.name()), "duplicate name {}", c.name());
            assert_eq!(ErrorCode::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn spec_statuses() {
        assert_eq!(
            ErrorCode::ApiKeyQuotaExhausted.http_status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ErrorCode::ApiKeyQuotaExhausted.client_code(),
            Some("API_KEY_QUOTA_EXHAUSTED")
        );
        assert_eq!(
            ErrorCode::ApiKeyExpired.http_status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ErrorCode::ApiKeyInQuery.client_code(),
            Some("api_key_in_query_deprecated")
        );
        assert_eq!(
            ErrorCode::NoAvailableAccounts.http_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ErrorCode::InsufficientBalance.error_type().as_str(),
            "billing_error"
        );
    }

    #[test]
    fn status_carries_code() {
        let s = to_status(ErrorCode::AlreadyExists, "key exists");
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(code_of(&s), Some(ErrorCode::AlreadyExists));
    }
}
