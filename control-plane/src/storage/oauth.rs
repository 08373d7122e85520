//! Subscription (OAuth) token bookkeeping for the refresher: which logins are due, and
//! storing a refreshed credential (encrypted, like every credential).

use sqlx::Row;
use tollgate_shared::domain::{AccountKind, AccountStatus};
use tollgate_shared::now_ms;

use super::Store;
use super::args::Args;
use crate::error::{Error, Result};
use crate::model::Credential;

impl Store {
    /// Ids of live, active OAuth accounts whose access token expires at or before
    /// `before_ms`, soonest first. Accounts without a known expiry are not listed.
    pub async fn oauth_accounts_due(&self, before_ms: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT id FROM accounts WHERE kind = $1 AND status = $2 \
             AND deleted_at_ms IS NULL AND expires_at_ms IS NOT NULL AND expires_at_ms <= $3 \
             ORDER BY expires_at_ms, id",
        )
        .bind(AccountKind::OAuth.as_str())
        .bind(AccountStatus::Active.as_str())
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("id").map_err(Error::from))
            .collect()
    }

    /// Replaces a live OAuth account's credential (encrypted) and its access-token
    /// expiry; `chatgpt_account_id` is replaced only when given and non-empty. Status,
    /// error and cool-downs are left alone. Returns whether the account was updated.
    pub async fn store_oauth_tokens(
        &self,
        id: i64,
        credential: &Credential,
        expires_at_ms: Option<i64>,
        chatgpt_account_id: Option<&str>,
    ) -> Result<bool> {
        if !matches!(credential, Credential::OAuth { .. }) {
            return Err(Error::Internal(
                "store_oauth_tokens needs an OAuth credential".into(),
            ));
        }
        let json = serde_json::to_string(credential)
            .map_err(|e| Error::Internal(format!("encoding credential: {e}")))?;
        let mut args = Args::default();
        let mut sets = vec![
            format!(
                "credential_enc = {}",
                args.text(self.secrets.encrypt(&json)?)
            ),
            format!("expires_at_ms = {}", args.opt_int(expires_at_ms)),
            format!("updated_at_ms = {}", args.int(now_ms())),
        ];
        if let Some(acct) = chatgpt_account_id.map(str::trim).filter(|a| !a.is_empty()) {
            sets.push(format!("chatgpt_account_id = {}", args.text(acct)));
        }
        let sql = format!(
            "UPDATE accounts SET {} WHERE id = {} AND kind = {} AND deleted_at_ms IS NULL",
            sets.join(", "),
            args.int(id),
            args.text(AccountKind::OAuth.as_str()),
        );
        let done = args.bind(sqlx::query(&sql)).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
