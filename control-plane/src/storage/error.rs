//! Storage failures as the rest of the control plane needs to see them: whose fault and
//! whether a retry may help. The driver's error types stop here; a missing row and a
//! uniqueness clash are `Error::NotFound` / `Error::AlreadyExists` (see `not_found` and
//! `unique_violation`).

use crate::error::Error;

/// A database failure other than a missing row or a uniqueness clash.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database refused the statement for its data (a constraint, a value out of
    /// range): the same data fails again.
    #[error("the database rejected the statement: {0}")]
    Rejected(#[source] sqlx::Error),
    /// The database could not be reached or stopped answering (I/O, TLS, pool timeout
    /// or closed): a retry may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other driver failure (decoding a row, protocol): a bug or a schema mismatch.
    #[error("{0}")]
    Failed(#[source] sqlx::Error),
    /// Migrations could not be applied at start-up.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StorageError {
    /// The failure is caused by the data written rather than by the database.
    pub fn is_rejected_data(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(_) => Self::Rejected(e),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e),
            _ => Self::Failed(e),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Storage(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_classified_by_whose_fault() {
        let unavailable: Error = sqlx::Error::PoolTimedOut.into();
        assert!(matches!(
            unavailable,
            Error::Storage(StorageError::Unavailable(_))
        ));
        let failed: Error = sqlx::Error::RowNotFound.into();
        assert!(matches!(failed, Error::Storage(StorageError::Failed(_))));
        assert!(!StorageError::from(sqlx::Error::PoolClosed).is_rejected_data());
    }
}
