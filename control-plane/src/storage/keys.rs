//! API keys: stored by hash, with quota, expiry and IP lists.
//!
//! Status transitions that follow from a field change (quota raised, expiry moved into
//! the future, quota reset, expiry cleared) happen in the same UPDATE as the change, so
//! no reader ever sees the new value with the old status.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::domain::KeyStatus;
use tollgate_shared::now_ms;

use super::args::{Args, page_clause, paged, where_clause};
use super::{Store, from_json, not_found, parse_stored, to_json, unique_violation};
use crate::error::{Error, Result};
use crate::model::{ApiKey, KeyPatch, NewApiKey, Page, Paged};

/// The key's newest usage row id: `quota_used` counts the rows after it (the audit's
/// invariant), set when the quota is reset or turned on.
const QUOTA_BASELINE: &str =
    "(SELECT COALESCE(MAX(u.id), 0) FROM usage_logs u WHERE u.key_id = api_keys.id)";

const KEY_COLS: &str = "id, user_id, name, group_id, status, ip_allow, ip_deny, quota_nanos, \
                        quota_used_nanos, expires_at_ms, key_hint, created_at_ms, \
                        updated_at_ms, last_used_at_ms";

const ACTIVE: &str = "'active'";

fn row_to_key(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        group_id: row.try_get("group_id")?,
        status: parse_stored("api_keys.status", &row.try_get::<String, _>("status")?)?,
        ip_allow: from_json("api_keys.ip_allow", &row.try_get::<String, _>("ip_allow")?)?,
        ip_deny: from_json("api_keys.ip_deny", &row.try_get::<String, _>("ip_deny")?)?,
        quota_nanos: row.try_get("quota_nanos")?,
        quota_used_nanos: row.try_get("quota_used_nanos")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        key_hint: row.try_get("key_hint")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        last_used_at_ms: row.try_get("last_used_at_ms")?,
    })
}

impl Store {
    /// NotFound when the owner or the group is missing; AlreadyExists on a hash clash.
    pub async fn create_key(&self, new: NewApiKey) -> Result<ApiKey> {
        // One statement: the owner and group checks and the insert cannot be split by a
        // concurrent delete.
        let row = sqlx::query(&format!(
            "INSERT INTO api_keys (user_id, name, group_id, key_hash, key_hint, status, \
             ip_allow, ip_deny, quota_nanos, quota_used_nanos, expires_at_ms, \
             created_at_ms, updated_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $11 \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at_ms IS NULL) \
             AND ($3 IS NULL OR EXISTS \
                  (SELECT 1 FROM groups WHERE id = $3 AND deleted_at_ms IS NULL)) \
             RETURNING {KEY_COLS}"
        ))
        .bind(new.user_id)
        .bind(new.name)
        .bind(new.group_id)
        .bind(new.key_hash)
        .bind(new.key_hint)
        .bind(KeyStatus::Active.as_str())
        .bind(to_json("ip_allow", &new.ip_allow)?)
        .bind(to_json("ip_deny", &new.ip_deny)?)
        .bind(new.quota_nanos)
        .bind(new.expires_at_ms)
        .bind(now_ms())
        .optional_row(&self.pool)
        .await
        .map_err(|e| unique_violation(e, || "api key".to_owned()))?;
        match row {
            Some(row) => row_to_key(&row),
            None => {
                self.get_user(new.user_id).await?;
                match new.group_id {
                    Some(g) => Err(not_found("group", g)),
                    None => Err(not_found("user", new.user_id)),
                }
            }
        }
    }

    pub async fn get_key(&self, id: i64) -> Result<ApiKey> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = $1 AND deleted_at_ms IS NULL"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("api key", id))?;
        row_to_key(&row)
    }

    /// The live key with this hash, whatever its status (the caller decides admission).
    pub async fn get_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE key_hash = $1 AND deleted_at_ms IS NULL"
        ))
        .bind(hash.to_owned())
        .optional_row(&self.pool)
        .await?;
        row.as_ref().map(row_to_key).transpose()
    }

    pub async fn list_keys(
        &self,
        user_id: Option<i64>,
        group_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<ApiKey>> {
        let mut args = Args::default();
        let mut conds = vec!["deleted_at_ms IS NULL".to_owned()];
        if let Some(u) = user_id {
            conds.push(format!("user_id = {}", args.int(u)));
        }
        if let Some(g) = group_id {
            conds.push(format!("group_id = {}", args.int(g)));
        }
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {KEY_COLS} FROM api_keys{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let keys = rows.iter().map(row_to_key).collect::<Result<Vec<_>>>()?;
        Ok(paged(keys, page, |k| k.id))
    }

    /// Partial update: only `Some` fields change (IP lists included). A quota of 0 or
    /// above `quota_used` reactivates a `quota_exhausted` key; a future expiry
    /// reactivates an `expired` key. A new group must exist.
    pub async fn update_key(&self, id: i64, patch: KeyPatch) -> Result<ApiKey> {
        if let Some(Some(g)) = patch.group_id {
            self.get_group(g).await?;
        }
        let now = now_ms();
        let mut args = Args::default();
        let mut sets = vec![format!("updated_at_ms = {}", args.int(now))];
        // Right-hand sides of an UPDATE see the row as it was, so these conditions test
        // the old status against the new values.
        let mut reactivate = Vec::new();
        if let Some(v) = patch.name {
            sets.push(format!("name = {}", args.text(v)));
        }
        if let Some(v) = patch.group_id {
            sets.push(format!("group_id = {}", args.opt_int(v)));
        }
        if let Some(v) = patch.quota_nanos {
            let p = args.int(v);
            sets.push(format!("quota_nanos = {p}"));
            // Turned on: quota_used counts from here (the audit's baseline).
            sets.push(format!(
                "quota_baseline_usage_id = CASE WHEN quota_nanos = 0 AND {p} > 0 \
                 THEN {QUOTA_BASELINE} ELSE quota_baseline_usage_id END"
            ));
            if v == 0 {
                reactivate.push("status = 'quota_exhausted'".to_owned());
            } else {
                reactivate.push(format!(
                    "(status = 'quota_exhausted' AND quota_used_nanos < {p})"
                ));
            }
        }
        if let Some(v) = patch.expires_at_ms {
            sets.push(format!("expires_at_ms = {}", args.int(v)));
            if v > now {
                reactivate.push("status = 'expired'".to_owned());
            }
        }
        if let Some(v) = patch.ip_allow {
            sets.push(format!(
                "ip_allow = {}",
                args.text(to_json("ip_allow", &v)?)
            ));
        }
        if let Some(v) = patch.ip_deny {
            sets.push(format!("ip_deny = {}", args.text(to_json("ip_deny", &v)?)));
        }
        if !reactivate.is_empty() {
            sets.push(format!(
                "status = CASE WHEN {} THEN {ACTIVE} ELSE status END",
                reactivate.join(" OR ")
            ));
        }
        let sql = format!(
            "UPDATE api_keys SET {} WHERE id = {} AND deleted_at_ms IS NULL RETURNING {KEY_COLS}",
            sets.join(", "),
            args.int(id)
        );
        self.update_key_with(id, &sql, args).await
    }

    /// Disable / enable (or any status the caller decides).
    pub async fn set_key_status(&self, id: i64, status: KeyStatus) -> Result<ApiKey> {
        let mut args = Args::default();
        let sql = format!(
            "UPDATE api_keys SET status = {}, updated_at_ms = {} \
             WHERE id = {} AND deleted_at_ms IS NULL RETURNING {KEY_COLS}",
            args.text(status.as_str()),
            args.int(now_ms()),
            args.int(id)
        );
        self.update_key_with(id, &sql, args).await
    }

    pub async fn delete_key(&self, id: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET deleted_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("api key", id));
        }
        Ok(())
    }

    /// `quota_used = 0`; a `quota_exhausted` key becomes `active`. The audit counts the
    /// key's usage from here on (`quota_baseline_usage_id`).
    pub async fn reset_key_quota(&self, id: i64) -> Result<ApiKey> {
        let mut args = Args::default();
        let sql = format!(
            "UPDATE api_keys SET quota_used_nanos = 0, updated_at_ms = {}, \
             quota_baseline_usage_id = {QUOTA_BASELINE}, \
             status = CASE WHEN status = 'quota_exhausted' THEN {ACTIVE} ELSE status END \
             WHERE id = {} AND deleted_at_ms IS NULL RETURNING {KEY_COLS}",
            args.int(now_ms()),
            args.int(id)
        );
        self.update_key_with(id, &sql, args).await
    }

    /// `expires_at = NULL`; an `expired` key becomes `active`.
    pub async fn clear_key_expiration(&self, id: i64) -> Result<ApiKey> {
        let mut args = Args::default();
        let sql = format!(
            "UPDATE api_keys SET expires_at_ms = NULL, updated_at_ms = {}, \
             status = CASE WHEN status = 'expired' THEN {ACTIVE} ELSE status END \
             WHERE id = {} AND deleted_at_ms IS NULL RETURNING {KEY_COLS}",
            args.int(now_ms()),
            args.int(id)
        );
        self.update_key_with(id, &sql, args).await
    }

    /// Records use. Never moves `last_used_at` backwards (touches may arrive out of
    /// order from several data planes).
    pub async fn touch_key(&self, id: i64, at_ms: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET updated_at_ms = $1, last_used_at_ms = CASE \
             WHEN last_used_at_ms IS NULL OR last_used_at_ms < $2 THEN $2 \
             ELSE last_used_at_ms END \
             WHERE id = $3 AND deleted_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("api key", id));
        }
        Ok(())
    }

    async fn update_key_with(&self, id: i64, sql: &str, args: Args) -> Result<ApiKey> {
        let row = args
            .bind(sqlx::query(sql))
            .optional_row(&self.pool)
            .await?
            .ok_or_else(|| not_found("api key", id))?;
        row_to_key(&row)
    }
}

/// Which keys block the delete of their owner (a user or a group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOwner {
    User(i64),
    Group(i64),
}

impl KeyOwner {
    fn column_and_id(self) -> (&'static str, i64) {
        match self {
            Self::User(id) => ("user_id", id),
            Self::Group(id) => ("group_id", id),
        }
    }
}

/// Inside the caller's delete transaction: the owner's keys that are not deleted.
/// Without `cascade` any such key refuses the delete (FailedPrecondition naming the
/// flag); with it they are disabled, and the ids of those this call disabled are
/// returned (already-disabled keys stay as they are).
pub(crate) async fn disable_keys_of(
    conn: &mut sqlx::AnyConnection,
    owner: KeyOwner,
    what: &str,
    cascade: bool,
) -> Result<Vec<i64>> {
    let (column, id) = owner.column_and_id();
    // The write first: it locks the rows (Postgres) or the database (SQLite), so no key
    // of the owner changes between this count and the delete.
    let rows = sqlx::query(&format!(
        "UPDATE api_keys SET updated_at_ms = updated_at_ms \
         WHERE {column} = $1 AND deleted_at_ms IS NULL RETURNING id, status"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut enabled = Vec::new();
    for row in &rows {
        let status: String = row.try_get("status")?;
        if status != KeyStatus::Disabled.as_str() {
            enabled.push(row.try_get::<i64, _>("id")?);
        }
    }
    if !cascade {
        return Err(Error::FailedPrecondition(format!(
            "{what} still has {} API key(s) ({} not disabled); delete or disable them first, \
             or delete with --cascade (Admin API: cascade = true), which disables them",
            rows.len(),
            enabled.len()
        )));
    }
    for key_id in &enabled {
        sqlx::query("UPDATE api_keys SET status = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(KeyStatus::Disabled.as_str())
            .bind(now_ms())
            .bind(*key_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(enabled)
}
