//! Upstream accounts and their group memberships. The credential (as JSON) and the proxy
//! URL are encrypted at rest with the store's `SecretBox`; rows are decrypted on read.

use super::to_end::ToTheEnd;
use std::collections::{HashMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::domain::AccountStatus;
use tollgate_shared::now_ms;

use super::args::{Args, page_clause, paged, where_clause};
use super::{Store, flag, from_json, multiplier, not_found, parse_stored, to_i32, to_json};
use crate::error::{Error, Result};
use crate::model::{Account, AccountGroup, AccountPatch, Credential, NewAccount, Page, Paged};

const ACCOUNT_COLS: &str = "id, name, platform, kind, base_url, credential_enc, concurrency, \
                            priority, status, error_message, schedulable, model_mapping, \
                            proxy_url_enc, user_agent, rate_limited_until_ms, \
                            overloaded_until_ms, temp_unschedulable_until_ms, \
                            temp_unschedulable_reason, expires_at_ms, chatgpt_account_id, \
                            codex_usage, cost_multiplier_ppm, notes, last_used_at_ms, \
                            created_at_ms, updated_at_ms";

impl Store {
    fn encrypt_credential(&self, c: &Credential) -> Result<String> {
        let json = serde_json::to_string(c)
            .map_err(|e| Error::Internal(format!("encoding credential: {e}")))?;
        self.secrets.encrypt(&json)
    }

    /// "" stays "" so "no proxy" needs no decryption and is visible as such.
    fn encrypt_proxy(&self, url: &str) -> Result<String> {
        if url.is_empty() {
            Ok(String::new())
        } else {
            self.secrets.encrypt(url)
        }
    }

    /// The row without its groups (filled by the caller).
    fn row_to_account(&self, row: &AnyRow) -> Result<Account> {
        let credential_json = self
            .secrets
            .decrypt(&row.try_get::<String, _>("credential_enc")?)?;
        let credential: Credential = serde_json::from_str(&credential_json)
            .map_err(|_| Error::Internal("bad stored accounts.credential_enc".into()))?;
        let proxy_enc: String = row.try_get("proxy_url_enc")?;
        let proxy_url = if proxy_enc.is_empty() {
            String::new()
        } else {
            self.secrets.decrypt(&proxy_enc)?
        };
        Ok(Account {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            platform: parse_stored("accounts.platform", &row.try_get::<String, _>("platform")?)?,
            kind: parse_stored("accounts.kind", &row.try_get::<String, _>("kind")?)?,
            base_url: row.try_get("base_url")?,
            credential,
            concurrency: to_i32("accounts.concurrency", row.try_get("concurrency")?)?,
            priority: to_i32("accounts.priority", row.try_get("priority")?)?,
            status: parse_stored("accounts.status", &row.try_get::<String, _>("status")?)?,
            error_message: row.try_get("error_message")?,
            schedulable: row.try_get::<i64, _>("schedulable")? != 0,
            model_mapping: from_json(
                "accounts.model_mapping",
                &row.try_get::<String, _>("model_mapping")?,
            )?,
            proxy_url,
            user_agent: row.try_get("user_agent")?,
            rate_limited_until_ms: row.try_get("rate_limited_until_ms")?,
            overloaded_until_ms: row.try_get("overloaded_until_ms")?,
            temp_unschedulable_until_ms: row.try_get("temp_unschedulable_until_ms")?,
            temp_unschedulable_reason: row.try_get("temp_unschedulable_reason")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            chatgpt_account_id: row.try_get("chatgpt_account_id")?,
            codex_usage: from_json(
                "accounts.codex_usage",
                &row.try_get::<String, _>("codex_usage")?,
            )?,
            cost_multiplier: multiplier(
                "accounts.cost_multiplier_ppm",
                row.try_get("cost_multiplier_ppm")?,
            )?,
            notes: row.try_get("notes")?,
            groups: Vec::new(),
            last_used_at_ms: row.try_get("last_used_at_ms")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }

    /// Decrypts rows and attaches their memberships (one query for all of them).
    async fn accounts_from_rows(&self, rows: &[AnyRow]) -> Result<Vec<Account>> {
        let mut accounts = rows
            .iter()
            .map(|r| self.row_to_account(r))
            .collect::<Result<Vec<_>>>()?;
        if accounts.is_empty() {
            return Ok(accounts);
        }
        let index: HashMap<i64, usize> = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id, i))
            .collect();
        // Chunked so a long list stays under the drivers' bind-parameter limits.
        let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
        for chunk in ids.chunks(500) {
            let mut args = Args::default();
            let marks: Vec<String> = chunk.iter().map(|id| args.int(*id)).collect();
            let sql = format!(
                "SELECT account_id, group_id, priority FROM account_groups \
                 WHERE account_id IN ({}) ORDER BY account_id, group_id",
                marks.join(", ")
            );
            let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
            for row in &rows {
                let account_id: i64 = row.try_get("account_id")?;
                let group = AccountGroup {
                    group_id: row.try_get("group_id")?,
                    priority: to_i32("account_groups.priority", row.try_get("priority")?)?,
                };
                if let Some(a) = index.get(&account_id).and_then(|i| accounts.get_mut(*i)) {
                    a.groups.push(group);
                }
            }
        }
        Ok(accounts)
    }

    pub async fn create_account(&self, new: NewAccount) -> Result<Account> {
        check_distinct_groups(&new.groups)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO accounts (name, platform, kind, base_url, credential_enc, concurrency, \
             priority, status, model_mapping, proxy_url_enc, user_agent, expires_at_ms, \
             chatgpt_account_id, cost_multiplier_ppm, notes, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
             RETURNING id",
        )
        .bind(new.name)
        .bind(new.platform.as_str())
        .bind(new.credential.kind().as_str())
        .bind(new.base_url)
        .bind(self.encrypt_credential(&new.credential)?)
        .bind(i64::from(new.concurrency))
        .bind(i64::from(new.priority))
        .bind(AccountStatus::Active.as_str())
        .bind(to_json("model_mapping", &new.model_mapping)?)
        .bind(self.encrypt_proxy(&new.proxy_url)?)
        .bind(new.user_agent)
        .bind(new.expires_at_ms)
        .bind(new.chatgpt_account_id)
        .bind(new.cost_multiplier.ppm())
        .bind(new.notes)
        .bind(now)
        .one_row(&mut *tx)
        .await?
        .try_get("id")?;
        insert_memberships(&mut tx, id, &new.groups).await?;
        tx.commit().await?;
        self.get_account(id).await
    }

    pub async fn get_account(&self, id: i64) -> Result<Account> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1 AND deleted_at_ms IS NULL"
        ))
        .bind(id)
        .optional_row(&self.pool)
        .await?
        .ok_or_else(|| not_found("account", id))?;
        let mut accounts = self.accounts_from_rows(&[row]).await?;
        accounts.pop().ok_or_else(|| not_found("account", id))
    }

    pub async fn list_accounts(
        &self,
        group_id: Option<i64>,
        status: Option<AccountStatus>,
        page: Page,
    ) -> Result<Paged<Account>> {
        let mut args = Args::default();
        let mut conds = vec!["deleted_at_ms IS NULL".to_owned()];
        if let Some(g) = group_id {
            conds.push(member_of(&mut args, g));
        }
        if let Some(s) = status {
            conds.push(format!("status = {}", args.text(s.as_str())));
        }
        let tail = page_clause(&mut args, &mut conds, "id", page);
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let accounts = self.accounts_from_rows(&rows).await?;
        Ok(paged(accounts, page, |a| a.id))
    }

    /// Every live account of a group (or of all groups), whatever its status: the caller
    /// filters for admission.
    pub async fn list_group_accounts(&self, group_id: Option<i64>) -> Result<Vec<Account>> {
        let mut args = Args::default();
        let mut conds = vec!["deleted_at_ms IS NULL".to_owned()];
        if let Some(g) = group_id {
            conds.push(member_of(&mut args, g));
        }
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts{} ORDER BY id",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        self.accounts_from_rows(&rows).await
    }

    pub async fn update_account(&self, id: i64, patch: AccountPatch) -> Result<Account> {
        let mut args = Args::default();
        let mut sets = vec![format!("updated_at_ms = {}", args.int(now_ms()))];
        if let Some(v) = patch.name {
            sets.push(format!("name = {}", args.text(v)));
        }
        if let Some(c) = &patch.credential {
            sets.push(format!("kind = {}", args.text(c.kind().as_str())));
            let enc = self.encrypt_credential(c)?;
            sets.push(format!("credential_enc = {}", args.text(enc)));
        }
        if let Some(v) = patch.expires_at_ms {
            sets.push(format!("expires_at_ms = {}", args.opt_int(v)));
        }
        if let Some(v) = patch.chatgpt_account_id {
            sets.push(format!("chatgpt_account_id = {}", args.text(v)));
        }
        if let Some(v) = patch.base_url {
            sets.push(format!("base_url = {}", args.text(v)));
        }
        if let Some(v) = patch.concurrency {
            sets.push(format!("concurrency = {}", args.int(i64::from(v))));
        }
        if let Some(v) = patch.priority {
            sets.push(format!("priority = {}", args.int(i64::from(v))));
        }
        if let Some(v) = patch.status {
            sets.push(format!("status = {}", args.text(v.as_str())));
        }
        if let Some(v) = patch.schedulable {
            sets.push(format!("schedulable = {}", args.int(flag(v))));
        }
        if let Some(v) = &patch.model_mapping {
            let json = to_json("model_mapping", v)?;
            sets.push(format!("model_mapping = {}", args.text(json)));
        }
        if let Some(v) = &patch.proxy_url {
            sets.push(format!(
                "proxy_url_enc = {}",
                args.text(self.encrypt_proxy(v)?)
            ));
        }
        if let Some(v) = patch.user_agent {
            sets.push(format!("user_agent = {}", args.text(v)));
        }
        if let Some(v) = patch.cost_multiplier {
            sets.push(format!("cost_multiplier_ppm = {}", args.int(v.ppm())));
        }
        if let Some(v) = patch.notes {
            sets.push(format!("notes = {}", args.text(v)));
        }
        let sql = format!(
            "UPDATE accounts SET {} WHERE id = {} AND deleted_at_ms IS NULL",
            sets.join(", "),
            args.int(id)
        );
        self.update_account_with(id, &sql, args).await
    }

    /// Soft delete; the memberships go in the same transaction.
    pub async fn delete_account(&self, id: i64) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE accounts SET deleted_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("account", id));
        }
        sqlx::query("DELETE FROM account_groups WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces all memberships in one transaction. Every group must be live.
    pub async fn set_account_groups(&self, id: i64, groups: Vec<AccountGroup>) -> Result<Account> {
        check_distinct_groups(&groups)?;
        let mut tx = self.pool.begin().await?;
        // A write first: it proves the account is live and takes its lock before the
        // memberships are read or replaced.
        let done = sqlx::query(
            "UPDATE accounts SET updated_at_ms = $1 WHERE id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("account", id));
        }
        sqlx::query("DELETE FROM account_groups WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_memberships(&mut tx, id, &groups).await?;
        tx.commit().await?;
        self.get_account(id).await
    }

    /// `error` → `active` with the message cleared; other statuses stay.
    pub async fn clear_account_error(&self, id: i64) -> Result<Account> {
        let mut args = Args::default();
        let sql = format!(
            "UPDATE accounts SET error_message = '', updated_at_ms = {}, \
             status = CASE WHEN status = 'error' THEN 'active' ELSE status END \
             WHERE id = {} AND deleted_at_ms IS NULL",
            args.int(now_ms()),
            args.int(id)
        );
        self.update_account_with(id, &sql, args).await
    }

    pub async fn clear_account_rate_limit(&self, id: i64) -> Result<Account> {
        let mut args = Args::default();
        let sql = format!(
            "UPDATE accounts SET rate_limited_until_ms = NULL, overloaded_until_ms = NULL, \
             temp_unschedulable_until_ms = NULL, temp_unschedulable_reason = '', \
             updated_at_ms = {} WHERE id = {} AND deleted_at_ms IS NULL",
            args.int(now_ms()),
            args.int(id)
        );
        self.update_account_with(id, &sql, args).await
    }

    async fn update_account_with(&self, id: i64, sql: &str, args: Args) -> Result<Account> {
        let done = args.bind(sqlx::query(sql)).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(not_found("account", id));
        }
        self.get_account(id).await
    }
}

/// `accounts.id` belongs to group `g`.
fn member_of(args: &mut Args, g: i64) -> String {
    format!(
        "EXISTS (SELECT 1 FROM account_groups ag \
         WHERE ag.account_id = accounts.id AND ag.group_id = {})",
        args.int(g)
    )
}

fn check_distinct_groups(groups: &[AccountGroup]) -> Result<()> {
    let mut seen = HashSet::new();
    for g in groups {
        if !seen.insert(g.group_id) {
            return Err(Error::invalid(
                "groups",
                format!("group {} is listed twice", g.group_id),
            ));
        }
    }
    Ok(())
}

/// Inserts memberships inside the caller's transaction; a missing or deleted group is
/// NotFound (and the caller's transaction is dropped, undoing everything).
async fn insert_memberships(
    conn: &mut sqlx::AnyConnection,
    account_id: i64,
    groups: &[AccountGroup],
) -> Result<()> {
    for g in groups {
        let done = sqlx::query(
            "INSERT INTO account_groups (account_id, group_id, priority) \
             SELECT $1, $2, $3 WHERE EXISTS \
             (SELECT 1 FROM groups WHERE id = $2 AND deleted_at_ms IS NULL)",
        )
        .bind(account_id)
        .bind(g.group_id)
        .bind(i64::from(g.priority))
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("group", g.group_id));
        }
    }
    Ok(())
}
