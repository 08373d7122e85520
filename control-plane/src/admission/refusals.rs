//! What admission says when it refuses: the [`Rejection`] the data plane turns into a
//! client response (`Rejection` on the wire), and the key and user checks Admit repeats
//! from Authorize — from the rules and messages both planes share
//! (`tollgate_shared::refusal`, the error-code table): a key, user or group the data
//! plane's (possibly stale) cache let through is refused here with the code and message
//! the data plane would have given.

use std::sync::Arc;

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::UserStatus;
use tollgate_shared::refusal::{self, KeyState, Refusal};

use super::admit::AdmitError;
use crate::error::{Error, Result};
use crate::model::{ApiKey, User};

/// A refusal the data plane turns into a client response (`Rejection` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The code with its message from the error-code table.
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }

    pub(super) fn too_many_pending() -> Self {
        Self::of(ErrorCode::TooManyPending)
    }

    pub(super) fn billing_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "billing re-check failed");
        Self::of(ErrorCode::BillingUnavailable)
    }

    pub(super) fn storage_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "admission storage read failed");
        Self::of(ErrorCode::Unavailable)
    }

    pub(super) fn account_timeout() -> Self {
        Self::of(ErrorCode::AccountConcurrencyExceeded)
    }
}

/// A refusal of the authorization checks (responses-flow.md §1).
impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Self {
        Self::new(r.code(), r.message())
    }
}

/// The key's user, if it may make requests.
pub(super) fn active_user(read: Result<Arc<User>>) -> Result<Arc<User>, AdmitError> {
    match read {
        Ok(u) if u.status == UserStatus::Active => Ok(u),
        Ok(_) => Err(Rejection::from(Refusal::UserInactive).into()),
        Err(Error::NotFound(_)) => Err(Rejection::from(Refusal::UserNotFound).into()),
        Err(e) => Err(Rejection::storage_unavailable(&e).into()),
    }
}

/// The key checks Admit repeats from Authorize (the data plane's copy may be stale).
pub(super) fn check_key(key: &ApiKey, now_ms: i64) -> Result<(), Rejection> {
    let state = KeyState {
        status: Some(key.status),
        quota_nanos: key.quota_nanos,
        quota_used_nanos: key.quota_used_nanos,
        expires_at_ms: key.expires_at_ms,
    };
    refusal::check_key(&state, now_ms).map_err(Rejection::from)
}
