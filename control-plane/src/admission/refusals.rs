//! Admit's refusals from the rules and messages both planes share
//! (`tollgate_shared::refusal`, the error-code table): a key, user or group the data
//! plane's (possibly stale) cache let through is refused here with the code and message
//! the data plane would have given.

use tollgate_shared::ErrorCode;
use tollgate_shared::refusal::{self, KeyState, Refusal};

use super::Rejection;
use crate::model::ApiKey;

impl Rejection {
    /// The code with its message from the error-code table.
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }
}

/// A refusal of the authorization checks (responses-flow.md §1).
impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Self {
        Self::new(r.code(), r.message())
    }
}

/// The key checks Admit repeats from Authorize (the data plane's copy may be stale).
pub fn check_key(key: &ApiKey, now_ms: i64) -> Result<(), Rejection> {
    let state = KeyState {
        status: Some(key.status),
        quota_nanos: key.quota_nanos,
        quota_used_nanos: key.quota_used_nanos,
        expires_at_ms: key.expires_at_ms,
    };
    refusal::check_key(&state, now_ms).map_err(Rejection::from)
}
