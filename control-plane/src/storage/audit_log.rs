//! The audit log of Admin writes: append-only rows, read newest first with filters.
//! What goes into `details` is decided by the Admin layer (an allow-list of request
//! fields); storage keeps it as given.

use super::to_end::ToTheEnd;
use sqlx::any::{Any, AnyRow};
use sqlx::{Executor, Row};
use tollgate_shared::now_ms;

use super::Store;
use super::args::{Args, where_clause};
use crate::error::Result;

const AUDIT_COLS: &str = "id, at_ms, actor_kind, actor, action, target, details";

/// Largest page of `list_audit`; 0 asks for the default.
pub const MAX_AUDIT_PAGE: u32 = 1000;
const DEFAULT_AUDIT_PAGE: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// `token`, `certificate` or `bootstrap`.
    pub actor_kind: String,
    /// Token name, certificate subject, or `bootstrap`.
    pub actor: String,
    /// The RPC's method name (`CreateKey`).
    pub action: String,
    /// Id (or model name) of the row written; empty when there is none.
    pub target: String,
    /// JSON object of the changed fields, secrets left out.
    pub details: String,
}

#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub actor_kind: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

/// Filters of `list_audit`; all optional. Newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Entries at or after this time.
    pub since_ms: Option<i64>,
    /// Entries with a smaller id (the next page after the last id seen).
    pub before_id: Option<i64>,
    /// 0 = default (50); at most `MAX_AUDIT_PAGE`.
    pub limit: u32,
}

fn row_to_entry(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at_ms: row.try_get("at_ms")?,
        actor_kind: row.try_get("actor_kind")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        details: row.try_get("details")?,
    })
}

/// Inserts one entry on any executor (the pool, or a transaction of the write it records).
pub(crate) async fn insert_audit<'e, E>(executor: E, entry: &NewAuditEntry) -> Result<AuditEntry>
where
    E: Executor<'e, Database = Any>,
{
    let row = sqlx::query(&format!(
        "INSERT INTO audit_log (at_ms, actor_kind, actor, action, target, details) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {AUDIT_COLS}"
    ))
    .bind(now_ms())
    .bind(entry.actor_kind.clone())
    .bind(entry.actor.clone())
    .bind(entry.action.clone())
    .bind(entry.target.clone())
    .bind(entry.details.clone())
    .one_row(executor)
    .await?;
    row_to_entry(&row)
}

impl Store {
    pub async fn record_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry> {
        insert_audit(&self.pool, entry).await
    }

    /// Entries matching every given filter, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut args = Args::default();
        let mut conds = Vec::new();
        if let Some(a) = &filter.actor {
            conds.push(format!("actor = {}", args.text(a.clone())));
        }
        if let Some(a) = &filter.action {
            conds.push(format!("action = {}", args.text(a.clone())));
        }
        if let Some(t) = filter.since_ms {
            conds.push(format!("at_ms >= {}", args.int(t)));
        }
        if let Some(b) = filter.before_id {
            conds.push(format!("id < {}", args.int(b)));
        }
        let limit = match filter.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log{} ORDER BY id DESC LIMIT {}",
            where_clause(&conds),
            args.int(i64::from(limit))
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_entry).collect()
    }
}
