//! Users and their balance ledger.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::domain::UserStatus;
use tollgate_shared::now_ms;

use super::args::{Args, page_clause, paged, where_clause};
use super::keys::{KeyOwner, disable_keys_of};
use super::{Store, not_found, parse_stored, to_i32, unique_violation};
use crate::error::{Error, Result};
use crate::model::{BalanceOp, LedgerEntry, NewUser, Page, Paged, User, UserPatch};

const USER_COLS: &str = "id, email, name, role, status, balance_nanos, concurrency, notes, \
                         created_at_ms, updated_at_ms";
const LEDGER_COLS: &str =
    "id, user_id, kind, delta_nanos, balance_after_nanos, reason, created_at_ms";

fn row_to_user(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: parse_stored("users.role", &row.try_get::<String, _>("role")?)?,
        status: parse_stored("users.status", &row.try_get::<String, _>("status")?)?,
        balance_nanos: row.try_get("balance_nanos")?,
        concurrency: to_i32("users.concurrency", row.try_get("concurrency")?)?,
        notes: row.try_get("notes")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn row_to_ledger(row: &AnyRow) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        kind: row.try_get("kind")?,
        delta_nanos: row.try_get("delta_nanos")?,
        balance_after_nanos: row.try_get("balance_after_nanos")?,
        reason: row.try_get("reason")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn email_taken(email: &str) -> impl FnOnce() -> String + '_ {
    move || format!("user with email {email}")
}

/// Inserts one ledger row inside the caller's transaction.
async fn insert_ledger(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    kind: &str,
    delta_nanos: i64,
    balance_after_nanos: i64,
    reason: &str,
    now: i64,
) -> Result<LedgerEntry> {
    let row = sqlx::query(&format!(
        "INSERT INTO balance_ledger (user_id, kind, delta_nanos, balance_after_nanos, reason, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {LEDGER_COLS}"
    ))
    .bind(user_id)
    .bind(kind.to_owned())
    .bind(delta_nanos)
    .bind(balance_after_nanos)
    .bind(reason.to_owned())
    .bind(now)
    .one_row(&mut *conn)
    .await?;
    row_to_ledger(&row)
}

impl Store {
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO users (email, name, role, status, balance_nanos, concurrency, notes, \
             created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             RETURNING {USER_COLS}"
        ))
        .bind(new.email.clone())
        .bind(new.name)
        .bind(new.role.as_str())
        .bind(UserStatus::Active.as_str())
        .bind(new.initial_balance_nanos)
        .bind(i64::from(new.concurrency))
        .bind(new.notes)
        .bind(now)
        .one_row(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, email_taken(&new.email)))?;
        let user = row_to_user(&row)?;
        if new.initial_balance_nanos != 0 {
            insert_ledger(
                &mut tx,
                user.id,
                "initial",
                new.initial_balance_nanos,
                new.initial_balance_nanos,
                "initial balance",
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    pub async fn get_user(&self, id: i64) -> Result<User> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1 AND deleted_at_ms IS NULL"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("user", id))?;
        row_to_user(&row)
    }

    pub async fn list_users(&self, status: Option<UserStatus>, page: Page) -> Result<Paged<User>> {
        let mut args = Args::default();
        let mut conds = vec!["deleted_at_ms IS NULL".to_owned()];
        if let Some(s) = status {
            conds.push(format!("status = {}", args.text(s.as_str())));
        }
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {USER_COLS} FROM users{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let users = rows.iter().map(row_to_user).collect::<Result<Vec<_>>>()?;
        Ok(paged(users, page, |u| u.id))
    }

    pub async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User> {
        let mut args = Args::default();
        let mut sets = vec![format!("updated_at_ms = {}", args.int(now_ms()))];
        let email = patch.email.clone().unwrap_or_default();
        if let Some(v) = patch.email {
            sets.push(format!("email = {}", args.text(v)));
        }
        if let Some(v) = patch.name {
            sets.push(format!("name = {}", args.text(v)));
        }
        if let Some(v) = patch.role {
            sets.push(format!("role = {}", args.text(v.as_str())));
        }
        if let Some(v) = patch.status {
            sets.push(format!("status = {}", args.text(v.as_str())));
        }
        if let Some(v) = patch.concurrency {
            sets.push(format!("concurrency = {}", args.int(i64::from(v))));
        }
        if let Some(v) = patch.notes {
            sets.push(format!("notes = {}", args.text(v)));
        }
        let sql = format!(
            "UPDATE users SET {} WHERE id = {} AND deleted_at_ms IS NULL RETURNING {USER_COLS}",
            sets.join(", "),
            args.int(id)
        );
        let row = args
            .bind(sqlx::query(&sql))
            .optional_row(&self.pool)
            .await
            .map_err(|e| unique_violation(e, email_taken(&email)))?
            .ok_or_else(|| not_found("user", id))?;
        row_to_user(&row)
    }

    /// Soft delete. A user with keys (not deleted) is refused unless `cascade`, which
    /// disables them in the same transaction; returns the ids of the keys it disabled.
    pub async fn delete_user(&self, id: i64, cascade: bool) -> Result<Vec<i64>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET deleted_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("user", id));
        }
        let what = format!("user {id}");
        let disabled = disable_keys_of(&mut tx, KeyOwner::User(id), &what, cascade).await?;
        tx.commit().await?;
        Ok(disabled)
    }

    /// Changes the balance and records the change in the ledger, in one transaction.
    /// `amount_nanos` is a magnitude: the op gives the sign. A subtraction that would
    /// take the balance below zero is refused (FailedPrecondition naming the flag)
    /// unless `allow_negative`.
    pub async fn adjust_balance(
        &self,
        user_id: i64,
        op: BalanceOp,
        amount_nanos: i64,
        reason: &str,
        allow_negative: bool,
    ) -> Result<(User, LedgerEntry)> {
        if amount_nanos < 0 {
            return Err(Error::invalid("amount_nanos", "must not be negative"));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Every branch starts with a write: it takes the row lock (Postgres) or the write
        // lock (SQLite) before anything is read, so concurrent adjustments serialise and
        // the ledger's before/after values are exact.
        let (user, delta) = match op {
            BalanceOp::Add | BalanceOp::Subtract => {
                let delta = if op == BalanceOp::Add {
                    amount_nanos
                } else {
                    -amount_nanos
                };
                // The range guard turns an i64 overflow into "no row" instead of a
                // database error (SQLite would silently switch to floating point). The
                // bound is computed here, where it cannot overflow.
                let guard = if delta >= 0 {
                    ("<=", i64::MAX - delta)
                } else {
                    (">=", i64::MIN - delta)
                };
                let row = sqlx::query(&format!(
                    "UPDATE users SET balance_nanos = balance_nanos + $1, updated_at_ms = $2 \
                     WHERE id = $3 AND deleted_at_ms IS NULL AND balance_nanos {} $4 \
                     RETURNING {USER_COLS}",
                    guard.0
                ))
                .bind(delta)
                .bind(now)
                .bind(user_id)
                .bind(guard.1)
                .optional_row(&mut *tx)
                .await?;
                match row {
                    Some(row) => {
                        let user = row_to_user(&row)?;
                        if delta < 0 && user.balance_nanos < 0 && !allow_negative {
                            // Dropping the transaction rolls the subtraction back.
                            return Err(Error::FailedPrecondition(format!(
                                "the balance of user {user_id} would go below zero \
                                 ({} - {amount_nanos} nano-USD); pass --allow-negative \
                                 (Admin API: allow_negative = true) to allow it",
                                user.balance_nanos - delta
                            )));
                        }
                        (user, delta)
                    }
                    None => {
                        drop(tx);
                        // Either missing or the sum does not fit.
                        self.get_user(user_id).await?;
                        return Err(Error::invalid("amount_nanos", "balance would overflow"));
                    }
                }
            }
            BalanceOp::Set => {
                let before: i64 = sqlx::query(
                    "UPDATE users SET updated_at_ms = $1 \
                     WHERE id = $2 AND deleted_at_ms IS NULL RETURNING balance_nanos",
                )
                .bind(now)
                .bind(user_id)
                .optional_row(&mut *tx)
                .await?
                .ok_or_else(|| not_found("user", user_id))?
                .try_get("balance_nanos")?;
                let delta = amount_nanos.checked_sub(before).ok_or_else(|| {
                    Error::invalid("amount_nanos", "change does not fit in the ledger")
                })?;
                let row = sqlx::query(&format!(
                    "UPDATE users SET balance_nanos = $1 WHERE id = $2 RETURNING {USER_COLS}"
                ))
                .bind(amount_nanos)
                .bind(user_id)
                .one_row(&mut *tx)
                .await?;
                (row_to_user(&row)?, delta)
            }
        };
        let entry = insert_ledger(
            &mut tx,
            user_id,
            op.as_str(),
            delta,
            user.balance_nanos,
            reason,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((user, entry))
    }

    pub async fn list_ledger(&self, user_id: i64, page: Page) -> Result<Paged<LedgerEntry>> {
        self.get_user(user_id).await?;
        let mut args = Args::default();
        let mut conds = vec![format!("user_id = {}", args.int(user_id))];
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {LEDGER_COLS} FROM balance_ledger{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let entries = rows.iter().map(row_to_ledger).collect::<Result<Vec<_>>>()?;
        Ok(paged(entries, page, |e| e.id))
    }
}
