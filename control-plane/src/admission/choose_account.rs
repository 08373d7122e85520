//! Account selection with its slot (responses-flow.md §3.4): the usable accounts of the
//! key's group, then the sticky binding, then the least loaded free account, then a
//! bounded wait for the best one. The ranking rules are pure functions in `select.rs`.

use std::time::Instant;

use tollgate_shared::{ErrorCode, now_ms};

use super::select::{self, Candidate};
use super::slots::{Limit, SlotError, SlotPermit};
use super::{Admission, AdmitRequest, Rejection, response_owners};
use crate::model::Account;

impl Admission {
    /// An account of the group with a slot and a token fit for use.
    pub(super) async fn choose_account(
        &self,
        req: &AdmitRequest,
        group_id: Option<i64>,
    ) -> Result<(Account, SlotPermit), Rejection> {
        let accounts = self
            .inner
            .snapshot
            .group_accounts(group_id)
            .await
            .map_err(|e| Rejection::storage_unavailable(&e))?;
        let (account, permit) = self.select(req, group_id, &accounts).await?;
        self.with_fresh_token(req, group_id, account, permit).await
    }

    /// Sticky, then load-aware, then wait for the best candidate. The group's accounts
    /// are borrowed from the snapshot: only the chosen one is copied.
    pub(super) async fn select(
        &self,
        req: &AdmitRequest,
        group_id: Option<i64>,
        accounts: &[Account],
    ) -> Result<(Account, SlotPermit), Rejection> {
        if let Some(pinned) = req.pinned_account {
            // Response affinity: only the account that created the response will do.
            let account = response_owners::pinned_usable(req, accounts, pinned)?;
            return self.least_loaded(&[account], group_id).await;
        }
        let mut usable = usable_accounts(req, group_id, accounts)?;
        if let Some(granted) = self.sticky_account(req, group_id, &mut usable).await? {
            return Ok(granted);
        }
        self.least_loaded(&usable, group_id).await
    }

    /// The account this conversation is bound to (taken out of `usable`), waiting a
    /// while for its slot. `None`: no binding, a stale one, or too many already waiting
    /// for it; choose among all.
    async fn sticky_account(
        &self,
        req: &AdmitRequest,
        group_id: Option<i64>,
        usable: &mut Vec<&Account>,
    ) -> Result<Option<(Account, SlotPermit)>, Rejection> {
        let inner = &*self.inner;
        if req.session_hash.is_empty() {
            return Ok(None);
        }
        let Some(bound) = inner
            .sticky
            .get(group_id, &req.session_hash, Instant::now())
        else {
            return Ok(None);
        };
        let Some(i) = usable.iter().position(|a| a.id == bound) else {
            inner.sticky.unbind(group_id, &req.session_hash, bound);
            return Ok(None);
        };
        let limit = Limit::from_concurrency(usable[i].concurrency);
        if let Some(p) = inner.account_slots.try_acquire(bound, limit) {
            return Ok(Some((usable.swap_remove(i).clone(), p)));
        }
        match inner
            .account_slots
            .acquire(
                bound,
                limit,
                inner.settings.sticky_max_waiters,
                inner.settings.sticky_wait_timeout,
            )
            .await
        {
            Ok(p) => Ok(Some((usable.swap_remove(i).clone(), p))),
            // Too many already wait for it: fall through to the others.
            Err(SlotError::QueueFull) => Ok(None),
            Err(SlotError::Timeout) => Err(Rejection::account_timeout()),
        }
    }

    /// The least loaded account with a free slot, else a bounded wait for the best one.
    async fn least_loaded(
        &self,
        usable: &[&Account],
        group_id: Option<i64>,
    ) -> Result<(Account, SlotPermit), Rejection> {
        let inner = &*self.inner;
        let candidates = self.candidates(usable, group_id);
        // A group has a handful of accounts: a scan beats building a map per call.
        let find = |id: i64| usable.iter().copied().find(|a| a.id == id);
        let limit_of =
            |id: i64| find(id).map_or(Limit::Max(0), |a| Limit::from_concurrency(a.concurrency));
        if let Some((c, p)) = select::pick_free(&candidates, |c| {
            inner
                .account_slots
                .try_acquire(c.account_id, limit_of(c.account_id))
        }) && let Some(a) = find(c.account_id)
        {
            return Ok((a.clone(), p));
        }

        let no_account = || Rejection::of(ErrorCode::NoAvailableAccounts);
        let target = select::wait_target(&candidates).ok_or_else(no_account)?;
        match inner
            .account_slots
            .acquire(
                target.account_id,
                limit_of(target.account_id),
                inner.settings.account_max_waiters,
                inner.settings.account_wait_timeout,
            )
            .await
        {
            Ok(p) => find(target.account_id)
                .map(|a| (a.clone(), p))
                .ok_or_else(no_account),
            Err(SlotError::QueueFull) => Err(Rejection::too_many_pending()),
            Err(SlotError::Timeout) => Err(Rejection::account_timeout()),
        }
    }

    /// The ranking inputs of each usable account: priority, load, last use.
    fn candidates(&self, usable: &[&Account], group_id: Option<i64>) -> Vec<Candidate> {
        usable
            .iter()
            .map(|a| Candidate {
                account_id: a.id,
                priority: select::priority_for(a, group_id),
                load: select::load_percent(self.inner.account_slots.usage(a.id), a.concurrency),
                last_used_ms: self.last_used(a),
            })
            .collect()
    }
}

/// The accounts the request may use (status, model, exclusions, cool-downs); none is a
/// refusal that says why.
fn usable_accounts<'a>(
    req: &AdmitRequest,
    group_id: Option<i64>,
    accounts: &'a [Account],
) -> Result<Vec<&'a Account>, Rejection> {
    let now = now_ms();
    let mut usable: Vec<&Account> = Vec::with_capacity(accounts.len());
    let mut reasons = Vec::new();
    for a in accounts {
        match select::unusable(a, &req.model, &req.excluded_account_ids, now) {
            None => usable.push(a),
            Some(r) => reasons.push(r),
        }
    }
    if usable.is_empty() {
        return Err(Rejection::new(
            ErrorCode::NoAvailableAccounts,
            format!(
                "{}{}",
                ErrorCode::NoAvailableAccounts.message(),
                select::no_account_reason(&reasons, &req.model, group_id)
            ),
        ));
    }
    Ok(usable)
}
