//! What admission says when it refuses: the [`Rejection`] the data plane turns into a
//! client response (`Rejection` on the wire), and the key and user checks Admit repeats
//! from Authorize.

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::{KeyStatus, UserStatus};

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

    pub(super) fn too_many_pending() -> Self {
        Self::new(
            ErrorCode::TooManyPending,
            "Too many pending requests, please retry later",
        )
    }

    pub(super) fn billing_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "billing re-check failed");
        Self::new(
            ErrorCode::BillingUnavailable,
            "Billing service temporarily unavailable. Please retry later.",
        )
    }

    pub(super) fn storage_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "admission storage read failed");
        Self::new(
            ErrorCode::Unavailable,
            "Service temporarily unavailable, please retry later",
        )
    }

    pub(super) fn account_timeout() -> Self {
        Self::new(
            ErrorCode::AccountConcurrencyExceeded,
            "Concurrency limit exceeded for account, please retry later",
        )
    }
}

/// The key's user, if it may make requests.
pub(super) fn active_user(read: Result<User>) -> Result<User, AdmitError> {
    match read {
        Ok(u) if u.status == UserStatus::Active => Ok(u),
        Ok(_) => Err(Rejection::new(ErrorCode::UserInactive, "User is not active").into()),
        Err(Error::NotFound(_)) => {
            Err(Rejection::new(ErrorCode::UserNotFound, "User not found").into())
        }
        Err(e) => Err(Rejection::storage_unavailable(&e).into()),
    }
}

/// The key checks Admit repeats from Authorize (the data plane's copy may be stale).
pub(super) fn check_key(key: &ApiKey, now: i64) -> Result<(), Rejection> {
    match key.status {
        KeyStatus::Active => {}
        KeyStatus::Disabled => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyDisabled,
                "API key is disabled",
            ));
        }
        KeyStatus::QuotaExhausted => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyQuotaExhausted,
                "API key quota exhausted",
            ));
        }
        KeyStatus::Expired => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyExpired,
                "API key has expired",
            ));
        }
    }
    if key.quota_nanos > 0 && key.quota_used_nanos >= key.quota_nanos {
        return Err(Rejection::new(
            ErrorCode::ApiKeyQuotaExhausted,
            "API key quota exhausted",
        ));
    }
    if key.expires_at_ms.is_some_and(|t| t <= now) {
        return Err(Rejection::new(
            ErrorCode::ApiKeyExpired,
            "API key has expired",
        ));
    }
    Ok(())
}
