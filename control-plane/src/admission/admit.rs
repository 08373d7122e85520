//! The Admit call (responses-flow.md §3): checks the request and its key, takes the user's
//! hold (waiting FIFO for a slot), re-checks billing, chooses an account with a slot
//! (`choose_account.rs`) and records the lease. Each step is one method below.

use std::sync::Arc;
use std::time::Instant;

use tollgate_shared::domain::{BillingMode, GroupKind, GroupStatus};
use tollgate_shared::refusal::Refusal;
use tollgate_shared::{ErrorCode, Multiplier, now_ms};

use super::leases::{Lease, UserHold};
use super::recovery::UsageFacts;
use super::refusals::{active_user, check_key};
use super::slots::{Limit, SlotPermit};
use super::{Admission, Rejection, billing_check, lease_url};
use crate::error::Error;
use crate::model::{Account, ApiKey, Group, Subscription, User};

/// An Admit request (validated from the wire by the Gateway service).
#[derive(Debug, Clone, Default)]
pub struct AdmitRequest {
    pub session_id: String,
    pub request_id: String,
    pub key_id: i64,
    pub model: String,
    pub session_hash: String,
    pub excluded_account_ids: Vec<i64>,
    /// Lease holding this request's user slot (failover re-admission); empty at first.
    pub user_lease_id: String,
    pub stream: bool,
    /// The data plane's model for subscription accounts (empty = the shared default).
    pub default_codex_model: String,
    /// The response continued (`previous_response_id`) or operated on; empty = none.
    pub response_id: String,
    /// Retrieve / delete / cancel / input items of `response_id`: no model, no billing
    /// re-check, no price (nothing is billed).
    pub response_operation: bool,
    /// The account that created `response_id` (set by Admit, `response_owners.rs`):
    /// selection considers no other.
    pub pinned_account: Option<i64>,
    /// The request body's size in bytes (for an estimate if the lease ends without a
    /// usage record; 0 from older data planes).
    pub request_bytes: u64,
}

/// Why Admit answered with a gRPC error rather than a lease or a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    Rejected(Rejection),
    /// The session is unknown or detached: the data plane must re-attach.
    UnknownSession,
    InvalidArgument(String),
}

impl From<Rejection> for AdmitError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

/// A granted lease.
#[derive(Debug, Clone)]
pub struct Granted {
    pub lease_id: String,
    pub account: Account,
    pub upstream_url: String,
    pub user_id: i64,
    pub group_id: Option<i64>,
    pub subscription_id: Option<i64>,
    pub billing_mode: BillingMode,
    pub rate_multiplier: Multiplier,
}

/// What the request's key lets it use, as the snapshot has it (shared with it).
struct KeyScope {
    key: Arc<ApiKey>,
    user: Arc<User>,
    group: Option<Arc<Group>>,
}

/// How the request will be paid for, decided after the user's wait.
struct Billing {
    user: Arc<User>,
    subscription: Option<Subscription>,
    mode: BillingMode,
}

impl Admission {
    /// Billing re-check, user slot, account selection and account slot, in one call.
    /// May wait (FIFO) for the user's slot and for an account's slot. Dropping the
    /// returned future (the gRPC call was cancelled) ends every wait and leaks nothing.
    pub async fn admit(&self, mut req: AdmitRequest) -> Result<Granted, AdmitError> {
        self.check_request(&req)?;
        let scope = self.key_scope(&req).await?;
        req.pinned_account = self.pinned_account(&req, scope.user.id).await?;
        let (hold, waited) = self.user_hold(&req, &scope.user).await?;
        let billing = if req.response_operation {
            // Nothing is billed: the key's checks above are the whole authorization.
            Billing {
                user: scope.user.clone(),
                subscription: None,
                mode: BillingMode::Balance,
            }
        } else {
            self.recheck_billing(&scope, waited).await?
        };
        let (account, account_permit) = self.choose_account(&req, scope.key.group_id).await?;
        // The served model's price, before any upstream call (`pricing.rs`). A response
        // operation is never billed: no price, and nothing to estimate if its lease
        // ends without a record (`recovery.rs`).
        let facts = if req.response_operation {
            None
        } else {
            let upstream_model = self.check_priced(&req, &account).await?;
            Some(usage_facts(
                &req,
                &scope,
                &billing,
                &account,
                upstream_model,
            ))
        };
        // From here on nothing awaits: the lease is either recorded and returned, or
        // (if this future is dropped before) never created.
        let lease_id = self.record_lease(&req, hold, account.id, account_permit, facts)?;
        self.note_use(&req, scope.key.group_id, account.id);
        tracing::debug!(
            request_id = req.request_id,
            lease_id,
            account_id = account.id,
            user_id = billing.user.id,
            "admitted"
        );
        Ok(self.granted(lease_id, account, &scope, billing))
    }

    /// The request comes from an attached session and names a model.
    fn check_request(&self, req: &AdmitRequest) -> Result<(), AdmitError> {
        if req.session_id.is_empty() || !self.inner.sessions.is_connected(&req.session_id) {
            return Err(AdmitError::UnknownSession);
        }
        if req.model.trim().is_empty() && !req.response_operation {
            return Err(AdmitError::InvalidArgument(
                "model must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The key (still usable), the key's user (active) and its group (active), in that
    /// order of refusal.
    async fn key_scope(&self, req: &AdmitRequest) -> Result<KeyScope, AdmitError> {
        let snapshot = &self.inner.snapshot;
        let key = match snapshot.key(req.key_id).await {
            Ok(k) => k,
            Err(Error::NotFound(_)) => {
                return Err(Rejection::of(ErrorCode::InvalidApiKey).into());
            }
            Err(e) => return Err(Rejection::storage_unavailable(&e).into()),
        };
        check_key(&key, now_ms())?;
        let user = active_user(snapshot.user(key.user_id).await)?;
        let group = match key.group_id {
            None => None,
            Some(gid) => match snapshot.group(gid).await {
                Ok(g) if g.status == GroupStatus::Active => Some(g),
                Ok(_) | Err(Error::NotFound(_)) => {
                    return Err(Rejection::from(Refusal::GroupDisabled).into());
                }
                Err(e) => return Err(Rejection::storage_unavailable(&e).into()),
            },
        };
        Ok(KeyScope { key, user, group })
    }

    /// The request's user hold: shared with its first lease on a failover re-admission,
    /// otherwise a pending count plus a user slot (waiting FIFO). `true` = it waited.
    async fn user_hold(
        &self,
        req: &AdmitRequest,
        user: &User,
    ) -> Result<(Arc<UserHold>, bool), Rejection> {
        let inner = &*self.inner;
        if !req.user_lease_id.is_empty()
            && let Some(hold) = inner.leases.user_hold(&req.user_lease_id, user.id)
        {
            return Ok((hold, false));
        }
        let base = u32::try_from(user.concurrency.max(1)).unwrap_or(1);
        let max_pending = base.saturating_add(inner.settings.user_extra_pending);
        let pending = inner
            .user_pending
            .try_acquire(user.id, Limit::Max(max_pending))
            .ok_or_else(Rejection::too_many_pending)?;
        let limit = Limit::from_concurrency(user.concurrency);
        if let Some(slot) = inner.user_slots.try_acquire(user.id, limit) {
            return Ok((Arc::new(UserHold::new(user.id, slot, pending)), false));
        }
        // The pending count already bounds this queue.
        match inner
            .user_slots
            .acquire(user.id, limit, usize::MAX, inner.settings.user_wait_timeout)
            .await
        {
            Ok(slot) => Ok((Arc::new(UserHold::new(user.id, slot, pending)), true)),
            Err(_) => Err(Rejection::of(ErrorCode::UserConcurrencyExceeded)),
        }
    }

    /// Billing re-check: after a wait the balance is read again from storage. Without
    /// one the snapshot's is as good: a charge decides nothing until the balance reaches
    /// zero, and that one drops the cached user before it returns. A subscription group
    /// needs the user's active subscription, read from storage.
    async fn recheck_billing(&self, scope: &KeyScope, waited: bool) -> Result<Billing, AdmitError> {
        let inner = &*self.inner;
        let user = if waited {
            active_user(inner.store.get_user(scope.user.id).await.map(Arc::new))?
        } else {
            Arc::clone(&scope.user)
        };
        let now = now_ms();
        let group = scope.group.as_deref();
        let subscription = match group.filter(|g| g.kind == GroupKind::Subscription) {
            Some(g) => inner
                .store
                .active_subscription(user.id, g.id, now)
                .await
                .map_err(|e| Rejection::billing_unavailable(&e))?,
            None => None,
        };
        let mode = billing_check::check(&user, group, subscription.as_ref(), now)?;
        Ok(Billing {
            user,
            subscription,
            mode,
        })
    }

    /// Records the lease under a new id, unless the data plane already gave the request
    /// up (its client left while we waited): then the slots go straight back.
    fn record_lease(
        &self,
        req: &AdmitRequest,
        hold: Arc<UserHold>,
        account_id: i64,
        account_permit: SlotPermit,
        facts: Option<UsageFacts>,
    ) -> Result<String, Rejection> {
        let lease_id = uuid::Uuid::new_v4().to_string();
        let mut lease = Lease::new(req.session_id.clone(), account_id, hold, account_permit)
            .for_request(&req.request_id);
        if let Some(facts) = facts {
            lease = lease.with_facts(facts);
        }
        if !self.inner.leases.insert(lease_id.clone(), lease) {
            return Err(Rejection::new(ErrorCode::Unavailable, "request abandoned"));
        }
        Ok(lease_id)
    }

    /// The account was used now (LRU order) and the conversation sticks to it.
    fn note_use(&self, req: &AdmitRequest, group_id: Option<i64>, account_id: i64) {
        self.touch(account_id, now_ms());
        if !req.session_hash.is_empty() && req.pinned_account.is_none() {
            self.inner
                .sticky
                .bind(group_id, &req.session_hash, account_id, Instant::now());
        }
    }

    fn granted(
        &self,
        lease_id: String,
        account: Account,
        scope: &KeyScope,
        billing: Billing,
    ) -> Granted {
        let upstream_url = lease_url::upstream_url(
            account.kind,
            &account.base_url,
            &self.inner.settings.codex_url,
        );
        let group = scope.group.as_ref();
        Granted {
            lease_id,
            upstream_url,
            user_id: billing.user.id,
            group_id: group.map(|g| g.id),
            subscription_id: billing.subscription.as_ref().map(|s| s.id),
            billing_mode: billing.mode,
            rate_multiplier: group.map_or(Multiplier::ONE, |g| g.rate_multiplier),
            account,
        }
    }
}

/// What an estimate of this request's usage needs, should its lease end without a
/// usage record (`recovery.rs`).
fn usage_facts(
    req: &AdmitRequest,
    scope: &KeyScope,
    billing: &Billing,
    account: &Account,
    upstream_model: String,
) -> UsageFacts {
    let group = scope.group.as_ref();
    UsageFacts {
        request_id: req.request_id.clone(),
        key_id: req.key_id,
        user_id: billing.user.id,
        group_id: group.map(|g| g.id),
        subscription_id: billing.subscription.as_ref().map(|s| s.id),
        account_id: account.id,
        billing_mode: billing.mode,
        rate_multiplier: group.map_or(Multiplier::ONE, |g| g.rate_multiplier),
        account_cost_multiplier: account.cost_multiplier,
        model: req.model.clone(),
        upstream_model,
        request_bytes: req.request_bytes,
        stream: req.stream,
        admitted_at_ms: now_ms(),
    }
}
