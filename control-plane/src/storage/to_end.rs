//! Statements are read to their end, never stopped at the first row.
//!
//! On SQLite a statement outside an explicit transaction commits when it finishes. sqlx's
//! `fetch_one` / `fetch_optional` stop stepping after the first row and reset the
//! statement, and the error of that reset — the commit — is dropped: an
//! `UPDATE … RETURNING` on a full disk handed back its row as if written, and a failed
//! commit could leave the connection inside a write transaction that locked out every
//! other connection ("database is locked" until a restart). Reading every row lets the
//! commit's error reach the caller; on Postgres it waits for the server's "ready",
//! which comes after the commit too. Every statement in `storage/` goes through these.

use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::Query;

pub(crate) trait ToTheEnd {
    /// The first row, after the statement ran to its end.
    async fn optional_row<'c, E>(self, executor: E) -> Result<Option<AnyRow>, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>;

    /// The first row (`RowNotFound` when there is none), after the statement ran to its end.
    async fn one_row<'c, E>(self, executor: E) -> Result<AnyRow, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>;
}

impl<'q> ToTheEnd for Query<'q, Any, AnyArguments<'q>> {
    async fn optional_row<'c, E>(self, executor: E) -> Result<Option<AnyRow>, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        Ok(self.fetch_all(executor).await?.into_iter().next())
    }

    async fn one_row<'c, E>(self, executor: E) -> Result<AnyRow, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        self.optional_row(executor)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}
