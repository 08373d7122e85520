//! Durable state. The only module with SQL.
//!
//! The API (method names, signatures, semantics) is described in `storage/API.md`.
//!
//! One implementation serves both Postgres and SQLite through `sqlx::Any`: the schema
//! sticks to types both dialects share (BIGINT, TEXT; see the header of the migrations),
//! so the same statements run on both and the conformance suite
//! (`control-plane/tests/storage_conformance/`) proves it on both. Placeholders are
//! `$1..$n`, which both drivers accept. Aggregates are `CAST(... AS BIGINT)` because
//! Postgres widens `SUM(bigint)` to NUMERIC.

mod account_state;
mod accounts;
mod admin_tokens;
mod args;
mod audit;
mod audit_log;
mod charge;
mod charge_batch;
mod dead_letters;
mod error;
mod groups;
mod keys;
mod oauth;
mod prices;
mod response_owners;
mod subscriptions;
mod supersede;
mod to_end;
mod usage;
mod users;

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection};

use tollgate_shared::Multiplier;

use crate::crypto::SecretBox;
use crate::error::{Error, Result};

pub use admin_tokens::{AdminToken, NewAdminToken};
pub use audit::{KeyBooks, UsageRowRef, UserBooks};
pub use audit_log::{AuditEntry, AuditFilter, MAX_AUDIT_PAGE, NewAuditEntry};
pub use charge::ChargeOutcome;
pub use charge_batch::ChargeBatch;
pub use dead_letters::DeadLetterCounts;
pub use error::StorageError;

static PG_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(Error::Config(
                "database URL must start with postgres:// or sqlite:".into(),
            ))
        }
    }
}

/// Handle to the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    pub(crate) secrets: SecretBox,
}

impl Store {
    /// Connects, creates the SQLite file when missing, and applies pending migrations.
    pub async fn connect(url: &str, secrets: SecretBox) -> Result<Self> {
        Self::connect_with(url, secrets, ACQUIRE_TIMEOUT).await
    }

    /// [`Store::connect`] with a given wait for a pool connection: how long a call waits
    /// for a database that cannot be reached before it fails as unavailable.
    pub async fn connect_with(
        url: &str,
        secrets: SecretBox,
        acquire_timeout: std::time::Duration,
    ) -> Result<Self> {
        install_default_drivers();
        let dialect = Dialect::of_url(url)?;
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let max = match dialect {
            Dialect::Postgres => 16,
            // One file, one writer: a small pool avoids lock contention.
            Dialect::Sqlite => 4,
        };
        if dialect == Dialect::Sqlite {
            create_private_sqlite_file(&url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        for pragma in SQLITE_CONNECTION_PRAGMAS {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            // A connection whose transaction did not end cleanly (its COMMIT or ROLLBACK
            // failed, e.g. on a full disk or a dropped Postgres connection) is closed
            // instead of reused: reused, it ran the next "transaction" as a savepoint
            // inside the dead one and acknowledged writes that never committed, and on
            // SQLite it held the write lock ("database is locked" for everyone else).
            .before_acquire(|conn, _meta| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect(&url)
            .await?;
        if dialect == Dialect::Sqlite {
            // WAL: readers proceed during a write, and a commit is one append to the
            // log. Persistent in the file (see `SQLITE_CONNECTION_PRAGMAS` for the rest).
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        match dialect {
            Dialect::Postgres => PG_MIGRATIONS.run(&pool).await?,
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self {
            pool,
            dialect,
            secrets,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How long a call waits for a pool connection (sqlx's default is 30 s): with the
/// database away, an Admin write or a usage batch fails as unavailable after this
/// instead of holding its caller; data planes retry usage with backoff.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Set on every SQLite connection (ARCHITECTURE.md "Decisions": SQLite durability):
/// - `busy_timeout = 5000`: a writer waits up to 5 s for another connection's write
///   lock before failing with "database is locked" (reported to the caller, retried by
///   data planes); longer waits would hold Admit and ReportUsage calls.
/// - `synchronous = FULL`: every commit fsyncs the WAL, so an acknowledged write
///   survives a power loss (NORMAL would lose the last commits).
/// - `wal_autocheckpoint = 1000`: the committing connection copies the WAL back into the
///   database every 1000 pages (~4 MiB); a checkpoint that fails (disk full) is retried
///   at a later commit and never fails the commit itself.
/// - `journal_size_limit = 64 MiB`: the WAL is truncated back to this after a
///   checkpoint, so a burst does not keep its disk space for ever.
const SQLITE_CONNECTION_PRAGMAS: [&str; 4] = [
    "PRAGMA busy_timeout = 5000",
    "PRAGMA synchronous = FULL",
    "PRAGMA wal_autocheckpoint = 1000",
    "PRAGMA journal_size_limit = 67108864",
];

/// Creates the SQLite file (when missing) readable by its owner only: SQLite gives the
/// `-wal` and `-shm` files the mode of the database file.
fn create_private_sqlite_file(url: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Config(format!(
            "cannot create the database file {path}: {e}"
        ))),
    }
}

/// Flags are BIGINT 0/1 on both dialects.
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Parses a stored vocabulary value; a bad value in the database is an internal error.
pub(crate) fn parse_stored<T: FromStr>(column: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|_| Error::Internal(format!("bad stored value in {column}: {v:?}")))
}

/// `NotFound("user 7")`: the one message shape for a missing or soft-deleted row.
pub(crate) fn not_found(entity: &str, id: impl std::fmt::Display) -> Error {
    Error::NotFound(format!("{entity} {id}"))
}

/// Counts and limits are BIGINT in the schema and `i32` in the model.
pub(crate) fn to_i32(column: &str, v: i64) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Internal(format!("{column} out of range: {v}")))
}

pub(crate) fn multiplier(column: &str, ppm: i64) -> Result<Multiplier> {
    Multiplier::from_ppm(ppm).map_err(|_| Error::Internal(format!("bad stored {column}: {ppm}")))
}

/// Lists and maps are stored as JSON text.
pub(crate) fn to_json<T: serde::Serialize>(column: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("encoding {column}: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("bad stored {column}: {e}")))
}

/// Maps a unique-constraint violation to `AlreadyExists(what)`.
pub(crate) fn unique_violation(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return Error::AlreadyExists(what());
    }
    e.into()
}
