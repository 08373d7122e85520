//! Response-id affinity. An upstream response id belongs to the one account (upstream
//! organisation) that created it: a request continuing it (`previous_response_id`) or
//! operating on it (retrieve, delete, cancel, input items) must reach that account, and
//! only for the user whose request created it.
//!
//! Owners are persisted (`response_owners` table, so they survive restarts and every
//! control-plane replica sees them) with a bounded in-memory cache in front (moka, at most
//! `response_cache_capacity` entries); both forget an owner after `response_ttl` (OpenAI
//! keeps stored responses 30 days, the default). A report is answered once the owner is
//! in the cache — no database write on the client's path — and written to the table in
//! batches by the background task (`lease_lifecycle.rs`, every tick and at shutdown),
//! which also prunes expired rows. A crash loses at most the last tick's owners: those
//! conversations are then routed as unknown ids.

use std::sync::Mutex;
use std::time::Duration;

use moka::sync::Cache;
use tollgate_shared::{ErrorCode, now_ms};

use super::select::{self, Unusable};
use super::{Admission, AdmitRequest, Rejection};
use crate::error::{Error, Result};
use crate::model::{Account, ResponseOwner};
use crate::storage::Store;

/// Longest response id accepted (OpenAI's are ~50 bytes).
pub const MAX_RESPONSE_ID_LEN: usize = 256;
/// Owners waiting for their write while the database is failing, at most (then the
/// oldest are dropped: they stay in the cache, only a restart forgets them).
const MAX_PENDING: usize = 100_000;

/// The owners of response ids: the table, with a bounded cache in front.
#[derive(Debug)]
pub struct ResponseOwners {
    store: Store,
    ttl: Duration,
    cache: Cache<String, ResponseOwner>,
    /// Recorded, not yet written to the table.
    pending: Mutex<Vec<ResponseOwner>>,
}

impl ResponseOwners {
    pub fn new(store: Store, ttl: Duration, capacity: u64) -> Self {
        Self {
            store,
            ttl,
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            pending: Mutex::default(),
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Remembers who created a response: in the cache at once, in the table with the
    /// next batch. The first owner stays (a replay never moves a response to another
    /// account or user: the cache keeps its entry, the table its row).
    pub fn record(&self, owner: ResponseOwner) {
        if self.cache.contains_key(&owner.response_id) {
            return;
        }
        self.cache.insert(owner.response_id.clone(), owner.clone());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push(owner);
        if pending.len() > MAX_PENDING {
            let over = pending.len() - MAX_PENDING;
            pending.drain(..over);
            tracing::warn!(
                dropped = over,
                "response owners not persisted: database writes failing"
            );
        }
    }

    /// Writes the recorded owners to the table; on failure they wait for the next try.
    pub async fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_responses(&batch).await {
            tracing::warn!(error = %e, owners = batch.len(), "could not persist response owners; retrying");
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut *pending, batch);
            pending.extend(newer);
        }
    }

    /// The owner of `response_id`, if recorded within the TTL.
    pub async fn owner(&self, response_id: &str) -> Result<Option<ResponseOwner>> {
        let since = now_ms().saturating_sub(self.ttl_ms());
        if let Some(o) = self.cache.get(response_id) {
            return Ok((o.created_at_ms >= since).then_some(o));
        }
        let found = self.store.response_owner(response_id, since).await?;
        if let Some(o) = &found {
            self.cache.insert(response_id.to_owned(), o.clone());
        }
        Ok(found)
    }

    /// Deletes the owners past the TTL.
    pub async fn prune(&self) {
        let before = now_ms().saturating_sub(self.ttl_ms());
        match self.store.prune_responses(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "expired response owners deleted"),
            Err(e) => tracing::warn!(error = %e, "pruning response owners failed"),
        }
    }
}

/// A response id the table can hold: not blank, bounded, no control characters.
pub fn check_response_id(id: &str) -> std::result::Result<(), String> {
    if id.trim().is_empty() {
        return Err("response_id is empty".into());
    }
    if id.len() > MAX_RESPONSE_ID_LEN {
        return Err(format!(
            "response_id is longer than {MAX_RESPONSE_ID_LEN} bytes"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("response_id contains a control character".into());
    }
    Ok(())
}

/// An owner the table can hold: a valid id, a real account and user.
fn check_owner(owner: &ResponseOwner) -> Result<()> {
    check_response_id(&owner.response_id).map_err(|e| Error::invalid("response_id", e))?;
    if owner.account_id <= 0 || owner.user_id <= 0 {
        return Err(Error::invalid(
            "account_id",
            "account_id and user_id must be positive",
        ));
    }
    Ok(())
}

impl Admission {
    /// Records the account and user a response was created through (the data plane saw
    /// its id in the upstream's answer).
    pub fn record_response(&self, owner: ResponseOwner) -> Result<()> {
        check_owner(&owner)?;
        self.inner.responses.record(owner);
        Ok(())
    }

    /// Writes recorded owners to the table (from the background task).
    pub(super) async fn flush_responses(&self) {
        self.inner.responses.flush().await;
    }

    /// Deletes the owners past the TTL (from the background task).
    pub(super) async fn prune_responses(&self) {
        self.inner.responses.prune().await;
    }

    /// The account a request must use because of the response it names, if any. A
    /// response of another user is "not found" (its existence is not revealed). An id
    /// never recorded (created before this gateway remembered owners, or past the TTL)
    /// continues on whichever account is chosen; an operation on it is refused, since
    /// no account is known to hold it.
    pub(super) async fn pinned_account(
        &self,
        req: &AdmitRequest,
        user_id: i64,
    ) -> std::result::Result<Option<i64>, Rejection> {
        if req.response_id.is_empty() {
            return if req.response_operation {
                Err(Rejection::of(ErrorCode::ResponseNotFound))
            } else {
                Ok(None)
            };
        }
        let owner = self
            .inner
            .responses
            .owner(&req.response_id)
            .await
            .map_err(|e| Rejection::storage_unavailable(&e))?;
        match owner {
            Some(o) if o.user_id == user_id => Ok(Some(o.account_id)),
            Some(_) => {
                tracing::info!(
                    request_id = req.request_id,
                    response_id = req.response_id,
                    user_id,
                    "response of another user refused"
                );
                Err(Rejection::of(ErrorCode::ResponseNotFound))
            }
            None if req.response_operation => Err(Rejection::of(ErrorCode::ResponseNotFound)),
            None => Ok(None),
        }
    }
}

/// The pinned account out of the group's, if it may serve the request now; otherwise
/// the refusal says why (no other account can serve a response it did not create).
pub(super) fn pinned_usable<'a>(
    req: &AdmitRequest,
    accounts: &'a [Account],
    pinned: i64,
) -> std::result::Result<&'a Account, Rejection> {
    let unavailable = |why: &str| {
        Rejection::new(
            ErrorCode::ResponseAccountUnavailable,
            // The reason, never the account's id: clients do not see account ids.
            format!(
                "{} (the account is {why})",
                ErrorCode::ResponseAccountUnavailable.message()
            ),
        )
    };
    let Some(account) = accounts.iter().find(|a| a.id == pinned) else {
        return Err(unavailable("deleted or no longer in this key's group"));
    };
    // An operation names no model: any model the account serves will do.
    let model = if req.response_operation {
        account
            .model_mapping
            .keys()
            .next()
            .cloned()
            .unwrap_or_default()
    } else {
        req.model.clone()
    };
    match select::unusable(account, &model, &req.excluded_account_ids, now_ms()) {
        None => Ok(account),
        Some(Unusable::ModelUnsupported) => {
            Err(unavailable(&format!("not serving model {}", req.model)))
        }
        Some(why) => Err(unavailable(why.describe())),
    }
}
