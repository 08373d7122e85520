//! The control plane's one error enum. Every variant maps to the shared error-code table;
//! `From<Error> for tonic::Status` is the only place errors become gRPC statuses.

use tollgate_shared::error::{CodedError, ErrorCode, to_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input. `field` names the offending request field (e.g. `quota_nanos`).
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("missing or invalid admin token")]
    Unauthenticated,
    /// An authenticated admin caller without the scope an RPC needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A database failure (`storage::StorageError` says whose fault it is).
    #[error("storage error: {0}")]
    Storage(crate::storage::StorageError),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("crypto error: {0}")]
    Crypto(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }
}

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::AccessDenied,
            // The database cannot take the write now (full, read-only, locked, away): the
            // caller is told it was not made and may retry.
            Self::Storage(crate::storage::StorageError::Unavailable(_)) => ErrorCode::Unavailable,
            Self::Storage(_) | Self::Config(_) | Self::Crypto(_) | Self::Internal(_) => {
                ErrorCode::Internal
            }
        }
    }

    fn public_message(&self) -> String {
        match self.code() {
            // Internal detail (SQL, paths) stays in the logs.
            ErrorCode::Internal => "internal error".to_owned(),
            ErrorCode::Unavailable => {
                "the database is unavailable (full, read-only or unreachable); the write was not \
                 confirmed, retry later"
                    .to_owned()
            }
            _ => self.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if matches!(code, ErrorCode::Internal | ErrorCode::Unavailable) {
            tracing::error!(error = %e, "request failed");
        }
        to_status(code, e.public_message())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
