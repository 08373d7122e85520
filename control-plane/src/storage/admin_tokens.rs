//! Named admin tokens: stored by SHA-256 hash with a scope, optional expiry, last use and
//! revocation. Creating and revoking a token write their audit entry in the same
//! transaction, so the log never misses a credential change.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::domain::AdminScope;
use tollgate_shared::now_ms;

use super::audit_log::{NewAuditEntry, insert_audit};
use super::{Store, not_found, parse_stored, unique_violation};
use crate::error::{Error, Result};

const TOKEN_COLS: &str = "id, name, token_hint, scope, created_by, expires_at_ms, \
                          last_used_at_ms, revoked_at_ms, created_at_ms";

/// A named admin token as stored (never the secret, never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub id: i64,
    pub name: String,
    pub token_hint: String,
    pub scope: AdminScope,
    /// Who created it (an audit actor: token name, certificate subject or `bootstrap`).
    pub created_by: String,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl AdminToken {
    /// Usable at `now`: not revoked and not expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Clone)]
pub struct NewAdminToken {
    pub name: String,
    /// Lower-case hex SHA-256 of the secret.
    pub token_hash: String,
    pub token_hint: String,
    pub scope: AdminScope,
    pub created_by: String,
    pub expires_at_ms: Option<i64>,
}

fn row_to_token(row: &AnyRow) -> Result<AdminToken> {
    Ok(AdminToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        token_hint: row.try_get("token_hint")?,
        scope: parse_stored("admin_tokens.scope", &row.try_get::<String, _>("scope")?)?,
        created_by: row.try_get("created_by")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        last_used_at_ms: row.try_get("last_used_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Creates the token and its audit entry (target = the new id) in one transaction.
    /// AlreadyExists when a live token has the name (or on a hash clash).
    pub async fn create_admin_token(
        &self,
        new: NewAdminToken,
        mut audit: NewAuditEntry,
    ) -> Result<AdminToken> {
        let name = new.name.clone();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO admin_tokens (name, token_hash, token_hint, scope, created_by, \
             expires_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING {TOKEN_COLS}"
        ))
        .bind(new.name)
        .bind(new.token_hash)
        .bind(new.token_hint)
        .bind(new.scope.as_str())
        .bind(new.created_by)
        .bind(new.expires_at_ms)
        .bind(now_ms())
        .one_row(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, || format!("admin token named {name:?}")))?;
        let token = row_to_token(&row)?;
        audit.target = token.id.to_string();
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The token with this hash, revoked or expired included (the caller decides).
    pub async fn get_admin_token_by_hash(&self, hash: &str) -> Result<Option<AdminToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens WHERE token_hash = $1"
        ))
        .bind(hash.to_owned())
        .optional_row(&self.pool)
        .await?;
        row.as_ref().map(row_to_token).transpose()
    }

    /// Every token, oldest first; revoked ones only when asked.
    pub async fn list_admin_tokens(&self, include_revoked: bool) -> Result<Vec<AdminToken>> {
        let filter = if include_revoked {
            ""
        } else {
            " WHERE revoked_at_ms IS NULL"
        };
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens{filter} ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_token).collect()
    }

    /// Revokes a live token and writes its audit entry in one transaction. NotFound for
    /// an unknown id; FailedPrecondition when it is already revoked.
    pub async fn revoke_admin_token(
        &self,
        id: i64,
        mut audit: NewAuditEntry,
    ) -> Result<AdminToken> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE admin_tokens SET revoked_at_ms = $1 \
             WHERE id = $2 AND revoked_at_ms IS NULL RETURNING {TOKEN_COLS}"
        ))
        .bind(now_ms())
        .bind(id)
        .optional_row(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            let exists = sqlx::query("SELECT 1 FROM admin_tokens WHERE id = $1")
                .bind(id)
                .optional_row(&self.pool)
                .await?
                .is_some();
            return Err(if exists {
                Error::FailedPrecondition(format!("admin token {id} is already revoked"))
            } else {
                not_found("admin token", id)
            });
        };
        let token = row_to_token(&row)?;
        audit.target = token.id.to_string();
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Records use. Never moves `last_used_at` backwards.
    pub async fn touch_admin_token(&self, id: i64, at_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE admin_tokens SET last_used_at_ms = $1 \
             WHERE id = $2 AND (last_used_at_ms IS NULL OR last_used_at_ms < $1)",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
