//! Subscription tokens at admission (accounts.md, "Subscription tokens"): the hooks that
//! connect Admit and outcome reports to the OAuth [`TokenRefresher`].
//!
//! - After selection, an OAuth account whose access token is expired or about to expire
//!   is refreshed (single-flight) before its lease is returned, so the lease carries a
//!   working token. The check is a comparison on the account already read: a fresh token
//!   costs nothing. If the refresh fails the account is in `error` and the request
//!   selects again without it.
//! - A reported 401 forces a refresh; only if that fails is the account retired.
//!
//! The refresher is handed to [`Admission::new`] by the composition root (`serve_on`).

use tollgate_shared::now_ms;

use super::slots::SlotPermit;
use super::{Admission, AdmitRequest, Rejection};
use crate::model::Account;
use crate::oauth::refresh::Unauthorized;

impl Admission {
    /// The selected account with a token fit for use, and its slot. A refresh that
    /// fails retires that account (the refresher set it to `error`) and the request
    /// selects among the others.
    pub(super) async fn with_fresh_token(
        &self,
        req: &AdmitRequest,
        group_id: Option<i64>,
        mut account: Account,
        mut permit: SlotPermit,
    ) -> Result<(Account, SlotPermit), Rejection> {
        let tokens = &self.inner.tokens;
        let mut retry: Option<AdmitRequest> = None;
        loop {
            if !tokens.needs_refresh_on_use(&account, now_ms()) {
                return Ok((account, permit));
            }
            match tokens.refresh_for_use(account.id).await {
                Ok(fresh) => return Ok((fresh, permit)),
                Err(e) => {
                    tracing::warn!(
                        request_id = req.request_id,
                        account_id = account.id,
                        error = %e,
                        "selected account's token could not be refreshed; selecting again"
                    );
                    drop(permit);
                    let r = retry.get_or_insert_with(|| req.clone());
                    r.excluded_account_ids.push(account.id);
                    let accounts = self
                        .inner
                        .snapshot
                        .group_accounts(group_id)
                        .await
                        .map_err(|e| Rejection::storage_unavailable(&e))?;
                    (account, permit) = self.select(r, group_id, &accounts).await?;
                }
            }
        }
    }

    /// A 401 for `account_id`: `true` when a token refresh put it back in order (a
    /// subscription login), `false` when it should be retired.
    pub(super) async fn recovered_by_refresh(&self, account_id: i64) -> bool {
        self.inner.tokens.on_unauthorized(account_id).await == Unauthorized::Recovered
    }

    /// A successful answer for `account_id`.
    pub(super) fn token_worked(&self, account_id: i64) {
        self.inner.tokens.on_success(account_id);
    }
}
