//! Subscriptions: a user's time-limited access to a subscription group, with the three
//! usage windows the charging path advances.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::DAY_MS;
use tollgate_shared::domain::{GroupKind, SubscriptionStatus};
use tollgate_shared::now_ms;

use super::args::{Args, page_clause, paged, where_clause};
use super::{Store, not_found, parse_stored};
use crate::error::{Error, Result};
use crate::model::{NewSubscription, Page, Paged, Subscription};

const SUB_COLS: &str = "id, user_id, group_id, starts_at_ms, expires_at_ms, status, \
                        daily_usage_nanos, weekly_usage_nanos, monthly_usage_nanos, \
                        daily_window_start_ms, weekly_window_start_ms, \
                        monthly_window_start_ms, notes, created_at_ms, updated_at_ms";

fn row_to_subscription(row: &AnyRow) -> Result<Subscription> {
    Ok(Subscription {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        group_id: row.try_get("group_id")?,
        starts_at_ms: row.try_get("starts_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        status: parse_stored("subscriptions.status", &row.try_get::<String, _>("status")?)?,
        daily_usage_nanos: row.try_get("daily_usage_nanos")?,
        weekly_usage_nanos: row.try_get("weekly_usage_nanos")?,
        monthly_usage_nanos: row.try_get("monthly_usage_nanos")?,
        daily_window_start_ms: row.try_get("daily_window_start_ms")?,
        weekly_window_start_ms: row.try_get("weekly_window_start_ms")?,
        monthly_window_start_ms: row.try_get("monthly_window_start_ms")?,
        notes: row.try_get("notes")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// NotFound for a missing user or group; InvalidArgument when the group is not a
    /// subscription group or the period is empty; AlreadyExists when the user already
    /// holds an active, unexpired subscription to the group.
    pub async fn create_subscription(&self, new: NewSubscription) -> Result<Subscription> {
        if new.expires_at_ms <= new.starts_at_ms {
            return Err(Error::invalid(
                "expires_at_ms",
                "must be after starts_at_ms",
            ));
        }
        self.get_user(new.user_id).await?;
        let group = self.get_group(new.group_id).await?;
        if group.kind != GroupKind::Subscription {
            return Err(Error::invalid(
                "group_id",
                format!("group {} is not a subscription group", group.id),
            ));
        }
        let now = now_ms();
        // The duplicate check and the insert are one statement.
        let row = sqlx::query(&format!(
            "INSERT INTO subscriptions (user_id, group_id, starts_at_ms, expires_at_ms, status, \
             notes, created_at_ms, updated_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7 WHERE NOT EXISTS \
             (SELECT 1 FROM subscriptions WHERE user_id = $1 AND group_id = $2 \
              AND status = $5 AND expires_at_ms > $7) \
             RETURNING {SUB_COLS}"
        ))
        .bind(new.user_id)
        .bind(new.group_id)
        .bind(new.starts_at_ms)
        .bind(new.expires_at_ms)
        .bind(SubscriptionStatus::Active.as_str())
        .bind(new.notes)
        .bind(now)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| {
            Error::AlreadyExists(format!(
                "active subscription of user {} to group {}",
                new.user_id, new.group_id
            ))
        })?;
        row_to_subscription(&row)
    }

    pub async fn get_subscription(&self, id: i64) -> Result<Subscription> {
        let row = sqlx::query(&format!(
            "SELECT {SUB_COLS} FROM subscriptions WHERE id = $1"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("subscription", id))?;
        row_to_subscription(&row)
    }

    pub async fn list_subscriptions(
        &self,
        user_id: Option<i64>,
        group_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<Subscription>> {
        let mut args = Args::default();
        let mut conds = Vec::new();
        if let Some(u) = user_id {
            conds.push(format!("user_id = {}", args.int(u)));
        }
        if let Some(g) = group_id {
            conds.push(format!("group_id = {}", args.int(g)));
        }
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {SUB_COLS} FROM subscriptions{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let subs = rows
            .iter()
            .map(row_to_subscription)
            .collect::<Result<Vec<_>>>()?;
        Ok(paged(subs, page, |s| s.id))
    }

    /// `expires_at += days`; an `expired` subscription whose new expiry is after `now_ms`
    /// becomes `active`. A `suspended` (revoked) one stays suspended.
    pub async fn extend_subscription(
        &self,
        id: i64,
        days: u32,
        now_ms: i64,
    ) -> Result<Subscription> {
        if days == 0 {
            return Err(Error::invalid("days", "must be at least 1"));
        }
        let add = i64::from(days) * DAY_MS;
        // The status CASE sees the old expires_at_ms, hence `+ $1` there too.
        let row = sqlx::query(&format!(
            "UPDATE subscriptions SET expires_at_ms = expires_at_ms + $1, updated_at_ms = $2, \
             status = CASE WHEN status = 'expired' AND expires_at_ms + $1 > $3 \
                      THEN 'active' ELSE status END \
             WHERE id = $4 RETURNING {SUB_COLS}"
        ))
        .bind(add)
        .bind(tollgate_shared::now_ms())
        .bind(now_ms)
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("subscription", id))?;
        row_to_subscription(&row)
    }

    /// Status `suspended`: no longer used for admission, kept for history.
    pub async fn revoke_subscription(&self, id: i64) -> Result<Subscription> {
        let row = sqlx::query(&format!(
            "UPDATE subscriptions SET status = $1, updated_at_ms = $2 \
             WHERE id = $3 RETURNING {SUB_COLS}"
        ))
        .bind(SubscriptionStatus::Suspended.as_str())
        .bind(now_ms())
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("subscription", id))?;
        row_to_subscription(&row)
    }

    /// The active subscription covering `now_ms` (started, not yet expired); the one
    /// lasting longest when there are several.
    pub async fn active_subscription(
        &self,
        user_id: i64,
        group_id: i64,
        now_ms: i64,
    ) -> Result<Option<Subscription>> {
        let row = sqlx::query(&format!(
            "SELECT {SUB_COLS} FROM subscriptions WHERE user_id = $1 AND group_id = $2 \
             AND status = $3 AND starts_at_ms <= $4 AND expires_at_ms > $4 \
             ORDER BY expires_at_ms DESC, id DESC LIMIT 1"
        ))
        .bind(user_id)
        .bind(group_id)
        .bind(SubscriptionStatus::Active.as_str())
        .bind(now_ms)
        .optional_row(&self.pool)
        .await?;
        row.as_ref().map(row_to_subscription).transpose()
    }
}
