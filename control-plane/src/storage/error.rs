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
            sqlx::Error::Database(ref db) if database_unavailable(db.code().as_deref()) => {
                Self::Unavailable(e)
            }
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

/// Database errors that say the database cannot take writes now rather than that the
/// data is wrong: a retry of the same statement may succeed once the fault clears.
/// SQLite primary result codes (the low byte of the extended code): BUSY 5, LOCKED 6,
/// NOMEM 7, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14. Postgres SQLSTATE classes 08
/// (connection), 53 (insufficient resources: disk full, out of memory), 57 (operator
/// intervention: shutdown), 58 (system I/O error), and 25006 (read-only transaction).
fn database_unavailable(code: Option<&str>) -> bool {
    let Some(code) = code else {
        return false;
    };
    if code.len() == 5 {
        // A Postgres SQLSTATE (SQLite's codes, extended ones included, are shorter).
        return ["08", "53", "57", "58"].iter().any(|c| code.starts_with(c)) || code == "25006";
    }
    matches!(
        code.parse::<i32>().map(|c| c & 0xff),
        Ok(5 | 6 | 7 | 8 | 10 | 13 | 14)
    )
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

    #[test]
    fn a_database_that_cannot_write_now_is_unavailable_not_rejecting() {
        // SQLite: FULL, BUSY, READONLY, an extended IOERR (FSYNC); Postgres: disk full,
        // admin shutdown, connection failure, read-only transaction.
        for code in ["13", "5", "8", "1034", "53100", "57P01", "08006", "25006"] {
            assert!(database_unavailable(Some(code)), "{code}");
        }
        // Constraint violations, a type mismatch, a unique violation: the data.
        for code in ["19", "2067", "20", "23505", "22003", "42P01"] {
            assert!(!database_unavailable(Some(code)), "{code}");
        }
        assert!(!database_unavailable(None));
    }
}
