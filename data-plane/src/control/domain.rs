//! What the data plane and its control plane say to each other, as domain types. The
//! generated wire types stop in `control/`: `convert.rs` turns them into these (with
//! validation) and back, and the proxy works only on these.

use std::collections::HashMap;
use std::fmt;

use tollgate_shared::ErrorCode;
pub use tollgate_shared::domain::AccountKind;

use crate::proxy::auth_info::KeyInfo;

/// A secret that travels from the control plane to the upstream (a bearer credential,
/// a proxy URL with credentials). `Debug` never shows it; read it with `expose`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(empty)")
        } else {
            f.write_str("Secret(redacted)")
        }
    }
}

/// The control plane's answer about a key, and how long it may be cached.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// `None` = the control plane does not know this key.
    pub key: Option<KeyInfo>,
    pub ttl: std::time::Duration,
}

/// One Admit call, as the flow asks it.
#[derive(Debug, Clone)]
pub struct AdmitRequest {
    pub session_id: String,
    pub request_id: String,
    pub key_id: i64,
    pub model: String,
    pub session_hash: String,
    pub excluded_account_ids: Vec<i64>,
    /// The lease already holding this request's user slot (re-admission after failover).
    pub user_lease_id: Option<String>,
    pub stream: bool,
    /// The model subscription accounts are asked for outside the Codex family, so the
    /// control plane prices what will be served.
    pub default_codex_model: String,
    /// The body's size in bytes: the control plane's estimate if this process dies
    /// before reporting the request's usage.
    pub request_bytes: u64,
    /// `previous_response_id`, or the response of a response operation: the control
    /// plane routes to the account that created it. Empty = none.
    pub response_id: String,
    /// Retrieve / delete / cancel / input items of `response_id`: nothing is billed.
    pub response_operation: bool,
}

/// A response id the upstream created, with the account and user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRecord {
    pub response_id: String,
    pub account_id: i64,
    pub user_id: i64,
    pub request_id: String,
}

/// A record the control plane refused as invalid (it is never recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRefused {
    pub response_id: String,
    pub request_id: String,
    pub reason: String,
}

/// The answer to Admit.
#[derive(Debug)]
pub enum Admission {
    Granted(Box<Lease>),
    /// Refused with one of the shared codes (an unknown code is `Internal`).
    Refused {
        code: ErrorCode,
        message: String,
    },
    /// The control plane's answer could not be used. A lease it names was granted all
    /// the same and must be given back (`lease_id`).
    Malformed {
        lease_id: Option<String>,
        reason: &'static str,
    },
}

/// A granted lease: the user slot and the account slot, and the billing snapshot.
#[derive(Debug, Clone)]
pub struct Lease {
    pub lease_id: String,
    pub account: AccountLease,
    pub user_id: i64,
    pub group_id: Option<i64>,
    pub subscription_id: Option<i64>,
    pub billing_mode: String,
    pub rate_multiplier: String,
    /// How long the Admit call waited in the control plane's slot queues.
    pub queued: std::time::Duration,
}

/// The account a lease is for, with what it takes to call its upstream.
#[derive(Debug, Clone)]
pub struct AccountLease {
    pub account_id: i64,
    pub kind: AccountKind,
    pub upstream_url: String,
    pub bearer: Secret,
    pub chatgpt_account_id: String,
    pub model_mapping: HashMap<String, String>,
    /// Empty = direct.
    pub proxy_url: Secret,
    pub user_agent: String,
    pub cost_multiplier: String,
}

/// A lease this process holds, declared on (re)attach for re-adoption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub lease_id: String,
    pub user_id: i64,
    pub account_id: i64,
}

/// Which cached entries an invalidation drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationScope {
    All,
    Keys,
    Users,
    Groups,
    Accounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub scope: InvalidationScope,
    pub ids: Vec<i64>,
}

/// What happened on an upstream, for the account's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// An HTTP answer (`status` says which).
    HttpStatus,
    /// No answer at all.
    ConnectError,
    /// The stream went quiet past the idle timeout.
    StreamTimeout,
    /// A success worth reporting (it carried `x-codex-*` usage headers).
    Success,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub account_id: i64,
    pub request_id: String,
    pub kind: OutcomeKind,
    /// The upstream's HTTP status; `None` when there was no answer.
    pub status: Option<u16>,
    /// The upstream's error message (never shown to clients).
    pub message: String,
    /// Health headers (`x-codex-*`, `retry-after`), lower-case names.
    pub headers: HashMap<String, String>,
    /// A prefix of the upstream's error body.
    pub body: String,
}

/// One request's usage, queued until the control plane acknowledges it (serialized as
/// it is into the spill file when the queue is over its memory cap).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageReport {
    pub request_id: String,
    pub key_id: i64,
    pub user_id: i64,
    pub group_id: Option<i64>,
    pub subscription_id: Option<i64>,
    pub account_id: i64,
    pub model: String,
    pub upstream_model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub stream: bool,
    pub duration_ms: i64,
    pub first_token_ms: Option<i64>,
    pub user_agent: String,
    pub client_ip: String,
    pub reasoning_effort: String,
    pub estimated: bool,
    pub started_at_ms: i64,
    pub billing_mode: String,
    pub rate_multiplier: String,
    pub account_cost_multiplier: String,
    /// The client's own x-request-id, sanitised; empty = none. (Absent in spill files
    /// written before it existed.)
    #[serde(default)]
    pub client_request_id: String,
    /// The upstream's x-request-id of the answer billed; empty = none.
    #[serde(default)]
    pub upstream_request_id: String,
}

#[cfg(test)]
impl UsageReport {
    /// A minimal valid record with request id `id`, for the queue's and spill file's tests.
    pub(crate) fn sample(id: &str) -> Self {
        Self {
            request_id: id.into(),
            key_id: 1,
            user_id: 1,
            group_id: None,
            subscription_id: None,
            account_id: 1,
            model: "m".into(),
            upstream_model: "m".into(),
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            reasoning_tokens: 0,
            stream: false,
            duration_ms: 1,
            first_token_ms: None,
            user_agent: String::new(),
            client_ip: String::new(),
            reasoning_effort: String::new(),
            estimated: false,
            started_at_ms: 1,
            billing_mode: "balance".into(),
            rate_multiplier: "1".into(),
            account_cost_multiplier: "1".into(),
            client_request_id: String::new(),
            upstream_request_id: String::new(),
        }
    }
}

/// The control plane's answer to a batch of usage records.
#[derive(Debug, Clone, Default)]
pub struct UsageAck {
    /// Committed (now or earlier).
    pub acked: Vec<String>,
    /// Refused for good (older control planes): (request id, reason).
    pub rejected: Vec<(String, String)>,
    /// Stored in the control plane's dead-letter table for operators: (request id,
    /// reason). Done here, like acknowledged ones.
    pub dead_lettered: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let account = AccountLease {
            account_id: 1,
            kind: AccountKind::ApiKey,
            upstream_url: "https://api.example".into(),
            bearer: Secret::new("sk-very-secret"),
            chatgpt_account_id: String::new(),
            model_mapping: HashMap::new(),
            proxy_url: Secret::new("http://user:pw@proxy:8080"),
            user_agent: String::new(),
            cost_multiplier: "1".into(),
        };
        let shown = format!("{account:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(!shown.contains("pw@proxy"), "{shown}");
        assert!(shown.contains("Secret(redacted)"), "{shown}");
        assert_eq!(account.bearer.expose(), "sk-very-secret");
    }
}
