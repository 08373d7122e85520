//! Groups: rate multiplier, billing kind and subscription limits.

use super::keys::{KeyOwner, disable_keys_of};
use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::domain::GroupStatus;
use tollgate_shared::now_ms;

use super::args::{Args, page_clause, paged, where_clause};
use super::{Store, flag, multiplier, not_found, parse_stored, unique_violation};
use crate::error::Result;
use crate::model::{Group, GroupPatch, NewGroup, Page, Paged};

const GROUP_COLS: &str = "id, name, platform, rate_multiplier_ppm, kind, daily_limit_nanos, \
                          weekly_limit_nanos, monthly_limit_nanos, status, exclusive, \
                          description, created_at_ms, updated_at_ms";

fn row_to_group(row: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        platform: parse_stored("groups.platform", &row.try_get::<String, _>("platform")?)?,
        rate_multiplier: multiplier(
            "groups.rate_multiplier_ppm",
            row.try_get("rate_multiplier_ppm")?,
        )?,
        kind: parse_stored("groups.kind", &row.try_get::<String, _>("kind")?)?,
        daily_limit_nanos: row.try_get("daily_limit_nanos")?,
        weekly_limit_nanos: row.try_get("weekly_limit_nanos")?,
        monthly_limit_nanos: row.try_get("monthly_limit_nanos")?,
        status: parse_stored("groups.status", &row.try_get::<String, _>("status")?)?,
        exclusive: row.try_get::<i64, _>("exclusive")? != 0,
        description: row.try_get("description")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn name_taken(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("group named {name}")
}

impl Store {
    pub async fn create_group(&self, new: NewGroup) -> Result<Group> {
        let row = sqlx::query(&format!(
            "INSERT INTO groups (name, platform, rate_multiplier_ppm, kind, daily_limit_nanos, \
             weekly_limit_nanos, monthly_limit_nanos, status, exclusive, description, \
             created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {GROUP_COLS}"
        ))
        .bind(new.name.clone())
        .bind(new.platform.as_str())
        .bind(new.rate_multiplier.ppm())
        .bind(new.kind.as_str())
        .bind(new.daily_limit_nanos)
        .bind(new.weekly_limit_nanos)
        .bind(new.monthly_limit_nanos)
        .bind(GroupStatus::Active.as_str())
        .bind(flag(new.exclusive))
        .bind(new.description)
        .bind(now_ms())
        .one_row(&self.pool)
        .await
        .map_err(|e| unique_violation(e, name_taken(&new.name)))?;
        row_to_group(&row)
    }

    pub async fn get_group(&self, id: i64) -> Result<Group> {
        let row = sqlx::query(&format!(
            "SELECT {GROUP_COLS} FROM groups WHERE id = $1 AND deleted_at_ms IS NULL"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("group", id))?;
        row_to_group(&row)
    }

    pub async fn list_groups(&self, page: Page) -> Result<Paged<Group>> {
        let mut args = Args::default();
        let mut conds = vec!["deleted_at_ms IS NULL".to_owned()];
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {GROUP_COLS} FROM groups{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let groups = rows.iter().map(row_to_group).collect::<Result<Vec<_>>>()?;
        Ok(paged(groups, page, |g| g.id))
    }

    pub async fn update_group(&self, id: i64, patch: GroupPatch) -> Result<Group> {
        let mut args = Args::default();
        let mut sets = vec![format!("updated_at_ms = {}", args.int(now_ms()))];
        let name = patch.name.clone().unwrap_or_default();
        if let Some(v) = patch.name {
            sets.push(format!("name = {}", args.text(v)));
        }
        if let Some(v) = patch.rate_multiplier {
            sets.push(format!("rate_multiplier_ppm = {}", args.int(v.ppm())));
        }
        if let Some(v) = patch.kind {
            sets.push(format!("kind = {}", args.text(v.as_str())));
        }
        if let Some(v) = patch.daily_limit_nanos {
            sets.push(format!("daily_limit_nanos = {}", args.int(v)));
        }
        if let Some(v) = patch.weekly_limit_nanos {
            sets.push(format!("weekly_limit_nanos = {}", args.int(v)));
        }
        if let Some(v) = patch.monthly_limit_nanos {
            sets.push(format!("monthly_limit_nanos = {}", args.int(v)));
        }
        if let Some(v) = patch.status {
            sets.push(format!("status = {}", args.text(v.as_str())));
        }
        if let Some(v) = patch.exclusive {
            sets.push(format!("exclusive = {}", args.int(flag(v))));
        }
        if let Some(v) = patch.description {
            sets.push(format!("description = {}", args.text(v)));
        }
        let sql = format!(
            "UPDATE groups SET {} WHERE id = {} AND deleted_at_ms IS NULL RETURNING {GROUP_COLS}",
            sets.join(", "),
            args.int(id)
        );
        let row = args
            .bind(sqlx::query(&sql))
            .optional_row(&self.pool)
            .await
            .map_err(|e| unique_violation(e, name_taken(&name)))?
            .ok_or_else(|| not_found("group", id))?;
        row_to_group(&row)
    }

    /// Soft delete. The group's account memberships go with it, so no account is routed
    /// through a group that no longer exists. A group with keys (not deleted) is refused
    /// unless `cascade`, which disables them (they keep their `group_id` for history);
    /// returns the ids of the keys it disabled.
    pub async fn delete_group(&self, id: i64, cascade: bool) -> Result<Vec<i64>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE groups SET deleted_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("group", id));
        }
        let what = format!("group {id}");
        let disabled = disable_keys_of(&mut tx, KeyOwner::Group(id), &what, cascade).await?;
        sqlx::query("DELETE FROM account_groups WHERE group_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(disabled)
    }
}
