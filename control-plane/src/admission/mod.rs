//! Admission: the one call on the data plane's hot path that turns an authorized request
//! into a lease — user wait queue and slot, billing re-check, account selection (sticky,
//! load-aware, wait) and the account slot (responses-flow.md §3) — plus lease release,
//! the reaper that frees the leases of vanished sessions, lease re-adoption on Attach,
//! and account health from reported upstream outcomes (accounts.md).
//!
//! Live state (slots, queues, leases, sticky bindings, last-used times) is in memory;
//! durable state (keys, users, groups, accounts and their health, prices) is read through
//! the [`snapshot::Snapshot`], which every write invalidates before its call returns, so a
//! health change written by `report_outcome` or by an operator takes effect on the very
//! next Admit. Subscriptions, and the user after a wait (the billing re-check), are read
//! from storage.
//!
//! Architecture invariant: a slot is counted exactly while a `SlotPermit` is alive, and
//! permits live only in local variables of an in-progress Admit or in the lease table.
//! A cancelled Admit drops its permits; a released or reaped lease drops its own.

pub mod billing_check;
pub mod health;
pub mod leases;
mod pricing;
pub mod rules;
pub mod select;
pub mod slots;
pub mod snapshot;
pub mod sticky;
pub mod tokens;
pub mod upstream_url;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tollgate_shared::domain::{BillingMode, GroupKind, GroupStatus, KeyStatus, UserStatus};
use tollgate_shared::{ErrorCode, Multiplier, now_ms};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Invalidation, Invalidations};
use crate::gateway::session::Sessions;
use crate::model::{Account, User};
use crate::storage::Store;
use health::{Counted, HealthChange, HealthSettings, Outcome};
use leases::{Lease, LeaseTable, UserHold};
use select::Candidate;
use slots::{Limit, SlotError, SlotPermit, SlotTable};
use snapshot::Snapshot;
use sticky::StickyTable;

/// Admission settings (defaults from the spec; see `Config` for the flags).
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// Responses endpoint of subscription (OAuth) accounts.
    pub codex_url: String,
    /// How long a request waits for a user slot.
    pub user_wait_timeout: Duration,
    /// Requests of one user waiting or running: `max(concurrency, 1) + user_extra_pending`.
    pub user_extra_pending: u32,
    /// How long a request waits for the best account's slot when all are busy.
    pub account_wait_timeout: Duration,
    /// Waiters per account beyond which a request is turned away.
    pub account_max_waiters: usize,
    /// How long a sticky session waits for its bound account.
    pub sticky_wait_timeout: Duration,
    /// Waiters on the bound account beyond which a sticky session falls through.
    pub sticky_max_waiters: usize,
    /// Sticky bindings live this long, refreshed on use.
    pub sticky_ttl: Duration,
    /// Leases of a session gone this long are freed.
    pub lease_grace: Duration,
    pub health: HealthSettings,
    /// Unpriced models are refused here, before any upstream call (`pricing.rs`).
    pub billing: crate::billing::BillingSettings,
    /// Operator rules: other 5xx / timeouts → temporarily unschedulable.
    pub unschedulable_rules: rules::UnschedulableRules,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            codex_url: upstream_url::DEFAULT_CODEX_URL.to_owned(),
            user_wait_timeout: Duration::from_secs(30),
            user_extra_pending: 20,
            account_wait_timeout: Duration::from_secs(30),
            account_max_waiters: 100,
            sticky_wait_timeout: Duration::from_secs(120),
            sticky_max_waiters: 3,
            sticky_ttl: Duration::from_secs(3600),
            lease_grace: Duration::from_secs(10),
            health: HealthSettings::default(),
            billing: crate::billing::BillingSettings::default(),
            unschedulable_rules: rules::UnschedulableRules::default(),
        }
    }
}

impl AdmissionSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            codex_url: c.codex_url.clone(),
            user_wait_timeout: Duration::from_millis(c.user_wait_timeout_ms),
            user_extra_pending: c.user_extra_pending,
            account_wait_timeout: Duration::from_millis(c.account_wait_timeout_ms),
            account_max_waiters: usize::try_from(c.account_max_waiters).unwrap_or(usize::MAX),
            sticky_wait_timeout: Duration::from_millis(c.sticky_wait_timeout_ms),
            sticky_max_waiters: usize::try_from(c.sticky_max_waiters).unwrap_or(usize::MAX),
            sticky_ttl: Duration::from_millis(c.sticky_ttl_ms),
            lease_grace: Duration::from_millis(c.lease_grace_ms),
            health: HealthSettings {
                rate_limit_default: Duration::from_millis(c.rate_limit_cooldown_ms),
                overload_cooldown: Duration::from_millis(c.overload_cooldown_ms),
            },
            billing: crate::billing::BillingSettings::from_config(c),
            unschedulable_rules: c.unschedulable_rules.clone(),
        }
    }
}

/// A refusal the data plane turns into a client response (`Rejection` on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn too_many_pending() -> Self {
        Self::new(
            ErrorCode::TooManyPending,
            "Too many pending requests, please retry later",
        )
    }

    fn billing_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "billing re-check failed");
        Self::new(
            ErrorCode::BillingUnavailable,
            "Billing service temporarily unavailable. Please retry later.",
        )
    }

    fn storage_unavailable(e: &Error) -> Self {
        tracing::error!(error = %e, "admission storage read failed");
        Self::new(
            ErrorCode::Unavailable,
            "Service temporarily unavailable, please retry later",
        )
    }
}

/// An Admit request (validated from the wire by `wire.rs`).
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

/// A lease a reconnecting data plane still holds (`Attach.held_leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub lease_id: String,
    pub user_id: i64,
    pub account_id: i64,
}

/// Leases declared at Attach, held by a provisional owner until the session id is known.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub provisional_owner: String,
    pub adopted_lease_ids: Vec<String>,
}

/// Counts of outcomes that change no state (ready for a metrics exporter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub server_errors: u64,
    pub stream_timeouts: u64,
    pub connect_errors: u64,
    pub rate_limited: u64,
    pub overloaded: u64,
    pub errored: u64,
}

#[derive(Debug, Default)]
struct Counters {
    server_errors: AtomicU64,
    stream_timeouts: AtomicU64,
    connect_errors: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    errored: AtomicU64,
}

#[derive(Debug, Default)]
struct LastUsed {
    /// Latest use per account, unix ms (LRU ordering).
    at: HashMap<i64, i64>,
    /// Not yet written to storage.
    dirty: HashMap<i64, i64>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// What Admit reads of storage, cached (`snapshot.rs`).
    snapshot: Snapshot,
    invalidations: Invalidations,
    sessions: Sessions,
    settings: AdmissionSettings,
    user_slots: SlotTable,
    user_pending: SlotTable,
    account_slots: SlotTable,
    leases: LeaseTable,
    sticky: StickyTable,
    last_used: Mutex<LastUsed>,
    counters: Counters,
    /// Subscription token refresher (`tokens.rs`), attached by the Gateway service.
    tokens: std::sync::OnceLock<crate::oauth::TokenRefresher>,
}

/// The admission engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

/// Longest lease id accepted from a data plane (ours are 36-character UUIDs).
const MAX_LEASE_ID: usize = 128;

impl Admission {
    pub fn new(
        store: Store,
        invalidations: Invalidations,
        sessions: Sessions,
        settings: AdmissionSettings,
    ) -> Self {
        let sticky = StickyTable::new(settings.sticky_ttl);
        let snapshot = Snapshot::new(store.clone(), invalidations.clone(), snapshot::DEFAULT_TTL);
        Self {
            inner: Arc::new(Inner {
                store,
                snapshot,
                invalidations,
                sessions,
                settings,
                user_slots: SlotTable::new("user"),
                user_pending: SlotTable::new("user_pending"),
                account_slots: SlotTable::new("account"),
                leases: LeaseTable::default(),
                sticky,
                last_used: Mutex::new(LastUsed::default()),
                counters: Counters::default(),
                tokens: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.inner.settings
    }

    /// The cache Admit reads through; its `follow` task belongs on the service's tracker.
    pub fn snapshot(&self) -> &Snapshot {
        &self.inner.snapshot
    }

    /// Billing re-check, user slot, account selection and account slot, in one call.
    /// May wait (FIFO) for the user's slot and for an account's slot. Dropping the
    /// returned future (the gRPC call was cancelled) ends every wait and leaks nothing.
    pub async fn admit(&self, req: AdmitRequest) -> Result<Granted, AdmitError> {
        let inner = &*self.inner;
        if req.session_id.is_empty() || !inner.sessions.is_connected(&req.session_id) {
            return Err(AdmitError::UnknownSession);
        }
        if req.model.trim().is_empty() {
            return Err(AdmitError::InvalidArgument(
                "model must not be empty".into(),
            ));
        }
        let now = now_ms();
        let key = match inner.snapshot.key(req.key_id).await {
            Ok(k) => k,
            Err(Error::NotFound(_)) => {
                return Err(Rejection::new(ErrorCode::InvalidApiKey, "Invalid API key").into());
            }
            Err(e) => return Err(Rejection::storage_unavailable(&e).into()),
        };
        check_key(&key, now)?;
        let user = active_user(inner.snapshot.user(key.user_id).await)?;
        let group = match key.group_id {
            None => None,
            Some(gid) => match inner.snapshot.group(gid).await {
                Ok(g) if g.status == GroupStatus::Active => Some(g),
                Ok(_) | Err(Error::NotFound(_)) => {
                    return Err(
                        Rejection::new(ErrorCode::GroupDisabled, "Group is disabled").into(),
                    );
                }
                Err(e) => return Err(Rejection::storage_unavailable(&e).into()),
            },
        };

        let (hold, waited) = self.user_hold(&req, &user).await?;

        // Billing re-check: after a wait the balance is read again from storage. Without
        // one the snapshot's is as good: a charge decides nothing until the balance
        // reaches zero, and that one drops the cached user before it returns.
        let user = if waited {
            active_user(inner.store.get_user(user.id).await)?
        } else {
            user
        };
        let now = now_ms();
        let sub = match group.as_ref().filter(|g| g.kind == GroupKind::Subscription) {
            Some(g) => inner
                .store
                .active_subscription(user.id, g.id, now)
                .await
                .map_err(|e| Rejection::billing_unavailable(&e))?,
            None => None,
        };
        let billing_mode = billing_check::check(&user, group.as_ref(), sub.as_ref(), now)?;

        let accounts = inner
            .snapshot
            .group_accounts(key.group_id)
            .await
            .map_err(|e| Rejection::storage_unavailable(&e))?;
        let (account, account_permit) = self.select(&req, key.group_id, accounts).await?;
        self.check_priced(&req, &account).await?;
        let (account, account_permit) = self
            .with_fresh_token(&req, key.group_id, account, account_permit)
            .await?;

        // From here on nothing awaits: the lease is either recorded and returned, or
        // (if this future is dropped before) never created.
        let lease_id = uuid::Uuid::new_v4().to_string();
        let lease = Lease::new(req.session_id.clone(), account.id, hold, account_permit)
            .for_request(&req.request_id);
        if !inner.leases.insert(lease_id.clone(), lease) {
            // The data plane already gave this request up (its client left while we
            // waited); the slots went straight back.
            return Err(Rejection::new(ErrorCode::Unavailable, "request abandoned").into());
        }
        let used_at = now_ms();
        self.touch(account.id, used_at);
        if !req.session_hash.is_empty() {
            inner
                .sticky
                .bind(key.group_id, &req.session_hash, account.id, Instant::now());
        }
        tracing::debug!(
            request_id = req.request_id,
            lease_id,
            account_id = account.id,
            user_id = user.id,
            "admitted"
        );
        let upstream_url =
            upstream_url::upstream_url(account.kind, &account.base_url, &inner.settings.codex_url);
        Ok(Granted {
            lease_id,
            upstream_url,
            user_id: user.id,
            group_id: group.as_ref().map(|g| g.id),
            subscription_id: sub.as_ref().map(|s| s.id),
            billing_mode,
            rate_multiplier: group
                .as_ref()
                .map_or(Multiplier::ONE, |g| g.rate_multiplier),
            account,
        })
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
            Err(_) => Err(Rejection::new(
                ErrorCode::UserConcurrencyExceeded,
                "Concurrency limit exceeded for user, please retry later",
            )),
        }
    }

    /// Sticky, then load-aware, then wait for the best candidate.
    async fn select(
        &self,
        req: &AdmitRequest,
        group_id: Option<i64>,
        accounts: Vec<Account>,
    ) -> Result<(Account, SlotPermit), Rejection> {
        let inner = &*self.inner;
        let now = now_ms();
        let mut usable: Vec<Account> = Vec::with_capacity(accounts.len());
        let mut reasons = Vec::new();
        for a in accounts {
            match select::unusable(&a, &req.model, &req.excluded_account_ids, now) {
                None => usable.push(a),
                Some(r) => reasons.push(r),
            }
        }
        if usable.is_empty() {
            return Err(Rejection::new(
                ErrorCode::NoAvailableAccounts,
                format!(
                    "No available accounts{}",
                    select::no_account_reason(&reasons, &req.model, group_id)
                ),
            ));
        }

        if !req.session_hash.is_empty()
            && let Some(bound) = inner
                .sticky
                .get(group_id, &req.session_hash, Instant::now())
        {
            match usable.iter().position(|a| a.id == bound) {
                None => inner.sticky.unbind(group_id, &req.session_hash, bound),
                Some(i) => {
                    let limit = Limit::from_concurrency(usable[i].concurrency);
                    if let Some(p) = inner.account_slots.try_acquire(bound, limit) {
                        return Ok((usable.swap_remove(i), p));
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
                        Ok(p) => return Ok((usable.swap_remove(i), p)),
                        // Too many already wait for it: fall through to the others.
                        Err(SlotError::QueueFull) => {}
                        Err(SlotError::Timeout) => return Err(account_timeout()),
                    }
                }
            }
        }

        let candidates: Vec<Candidate> = usable
            .iter()
            .map(|a| Candidate {
                account_id: a.id,
                priority: select::priority_for(a, group_id),
                load: select::load_percent(inner.account_slots.usage(a.id), a.concurrency),
                last_used_ms: self.last_used(a),
            })
            .collect();
        let limits: HashMap<i64, Limit> = usable
            .iter()
            .map(|a| (a.id, Limit::from_concurrency(a.concurrency)))
            .collect();
        let limit_of = |id: i64| limits.get(&id).copied().unwrap_or(Limit::Max(0));
        let mut take = |id: i64| {
            let i = usable.iter().position(|a| a.id == id);
            i.map(|i| usable.swap_remove(i))
        };
        if let Some((c, p)) = select::pick_free(&candidates, |c| {
            inner
                .account_slots
                .try_acquire(c.account_id, limit_of(c.account_id))
        }) && let Some(a) = take(c.account_id)
        {
            return Ok((a, p));
        }

        let no_account = || Rejection::new(ErrorCode::NoAvailableAccounts, "No available accounts");
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
            Ok(p) => take(target.account_id)
                .map(|a| (a, p))
                .ok_or_else(no_account),
            Err(SlotError::QueueFull) => Err(Rejection::too_many_pending()),
            Err(SlotError::Timeout) => Err(account_timeout()),
        }
    }

    fn last_used(&self, a: &Account) -> Option<i64> {
        let mem = self
            .inner
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at
            .get(&a.id)
            .copied();
        mem.max(a.last_used_at_ms)
    }

    fn touch(&self, account_id: i64, at_ms: i64) {
        let mut lu = self
            .inner
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        lu.at.insert(account_id, at_ms);
        lu.dirty.insert(account_id, at_ms);
    }

    /// Writes the batched last-used times.
    pub async fn flush_last_used(&self) {
        let touches: Vec<(i64, i64)> = {
            let mut lu = self
                .inner
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            lu.dirty.drain().collect()
        };
        if let Err(e) = self.inner.store.touch_accounts_last_used(&touches).await {
            // Only LRU ordering across restarts suffers; the in-memory times stand.
            tracing::warn!(error = %e, "could not persist account last-used times");
        }
    }

    /// Releases leases; unknown or already released ids are ignored. Ownership is not
    /// checked: lease ids are unguessable, and a data plane may release a lease it got
    /// under an earlier session of its own.
    pub fn release<'a>(
        &self,
        session_id: &str,
        lease_ids: impl IntoIterator<Item = &'a str>,
    ) -> usize {
        let n = self.inner.leases.release(lease_ids);
        tracing::trace!(session_id, released = n, "leases released");
        n
    }

    /// Releases whatever was granted for requests the data plane gave up during
    /// admission (it cancelled the Admit call, so it may never have seen a lease id), and
    /// makes a grant still racing with that cancellation free its slots at once.
    pub fn release_requests<'a>(&self, request_ids: impl IntoIterator<Item = &'a str>) -> usize {
        self.inner
            .leases
            .release_requests(request_ids, Instant::now())
    }

    /// Re-adopts the leases a reconnecting data plane declares. Each one known here moves
    /// to the new session; an unknown one (the control plane restarted, or a new leader)
    /// is re-created with its user and account slot counted once, even past the limits:
    /// the request is already running. The leases are held by a provisional owner until
    /// [`Admission::bind_adopted`] names the session; if that never happens they are
    /// freed after the grace period like any other orphan.
    pub fn adopt(&self, held: &[HeldLease]) -> Adoption {
        let inner = &*self.inner;
        let provisional_owner = format!("adopting-{}", uuid::Uuid::new_v4());
        let mut seen = HashSet::new();
        let mut adopted_lease_ids = Vec::new();
        for h in held {
            if h.lease_id.is_empty()
                || h.lease_id.len() > MAX_LEASE_ID
                || h.user_id <= 0
                || h.account_id <= 0
                || !seen.insert(h.lease_id.as_str())
            {
                continue;
            }
            let outcome = inner.leases.adopt_or_create(
                &h.lease_id,
                &provisional_owner,
                h.user_id,
                h.account_id,
                || {
                    let hold = UserHold::new(
                        h.user_id,
                        inner.user_slots.force_acquire(h.user_id),
                        inner.user_pending.force_acquire(h.user_id),
                    );
                    Lease::new(
                        provisional_owner.clone(),
                        h.account_id,
                        Arc::new(hold),
                        inner.account_slots.force_acquire(h.account_id),
                    )
                },
            );
            if outcome {
                adopted_lease_ids.push(h.lease_id.clone());
            } else {
                tracing::warn!(
                    lease_id = h.lease_id,
                    "declared lease does not match the one known here; not adopted"
                );
            }
        }
        if !adopted_lease_ids.is_empty() {
            tracing::info!(adopted = adopted_lease_ids.len(), "leases re-adopted");
        }
        Adoption {
            provisional_owner,
            adopted_lease_ids,
        }
    }

    /// Hands the leases adopted under `provisional_owner` to the new session.
    pub fn bind_adopted(&self, provisional_owner: &str, session_id: &str) -> usize {
        self.inner
            .leases
            .rebind_owner(provisional_owner, session_id)
    }

    /// Frees the leases of sessions gone longer than the grace period. Returns how many.
    pub fn reap(&self) -> usize {
        let inner = &*self.inner;
        let grace = inner.settings.lease_grace;
        let mut freed = 0;
        for session_id in inner.sessions.take_expired(grace) {
            let n = inner.leases.release_owner(&session_id);
            if n > 0 {
                tracing::info!(
                    session_id,
                    freed = n,
                    "freed the leases of an expired session"
                );
            }
            freed += n;
        }
        // Owners the session table no longer knows (provisional adopters never bound, or
        // a lease granted just as its session went away) are timed here.
        let sessions = &inner.sessions;
        let n = inner
            .leases
            .reap_away(|o| sessions.is_connected(o), grace, Instant::now());
        if n > 0 {
            tracing::info!(freed = n, "freed orphaned leases");
        }
        freed + n
    }

    /// The background task: reaps expired sessions' leases, prunes sticky bindings and
    /// persists last-used times, until `shutdown`. Spawn it on the service's tracker.
    pub async fn run_background(self, shutdown: CancellationToken) {
        let grace = self.inner.settings.lease_grace;
        // Frequent enough that a lease outlives its session by at most the grace plus a
        // small fraction of it.
        let tick = (grace / 10).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let flush_every = Duration::from_secs(2);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.reap();
            let now = Instant::now();
            self.inner.sticky.prune(now);
            if now.duration_since(last_flush) >= flush_every {
                self.flush_last_used().await;
                last_flush = now;
            }
        }
        self.flush_last_used().await;
    }

    /// Applies a reported upstream outcome to the account's health. A change is written
    /// to storage (the truth Admit reads) and announced to every data plane.
    pub async fn report_outcome(&self, o: Outcome) -> Result<()> {
        let inner = &*self.inner;
        if o.account_id <= 0 {
            return Err(Error::invalid("account_id", "must be positive"));
        }
        let decision = health::decide(&o, now_ms(), &inner.settings.health);
        if o.kind == health::OutcomeKind::Success {
            self.token_worked(o.account_id);
        }
        let c = &inner.counters;
        let changed = match &decision.change {
            // A 401 forces a token refresh first: a subscription login whose token was
            // renewed stays in service (the refresh published its invalidation).
            HealthChange::Error(_)
                if decision.wants_token_refresh
                    && self.recovered_by_refresh(o.account_id).await =>
            {
                tracing::info!(
                    account_id = o.account_id,
                    "401: token refreshed, account kept"
                );
                false
            }
            HealthChange::Error(message) => {
                c.errored.fetch_add(1, Ordering::Relaxed);
                let changed = inner.store.set_account_error(o.account_id, message).await?;
                tracing::warn!(
                    account_id = o.account_id,
                    status = o.status,
                    "account set to error"
                );
                changed
            }
            HealthChange::RateLimitedUntil(until) => {
                c.rate_limited.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    account_id = o.account_id,
                    until_ms = until,
                    "account rate-limited"
                );
                inner
                    .store
                    .extend_account_rate_limit(o.account_id, *until)
                    .await?
            }
            HealthChange::OverloadedUntil(until) => {
                c.overloaded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    account_id = o.account_id,
                    until_ms = until,
                    "account overloaded"
                );
                inner
                    .store
                    .extend_account_overload(o.account_id, *until)
                    .await?
            }
            HealthChange::Counted(kind) => {
                let counter = match kind {
                    Counted::ServerError => &c.server_errors,
                    Counted::StreamTimeout => &c.stream_timeouts,
                    Counted::ConnectError => &c.connect_errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(account_id = o.account_id, status = o.status, kind = ?kind, "upstream failure counted");
                rules::apply(
                    &inner.store,
                    &inner.settings.unschedulable_rules,
                    &o,
                    now_ms(),
                )
                .await?
            }
            HealthChange::None => false,
        };
        if let Some(snapshot) = &decision.codex_usage {
            inner
                .store
                .set_account_codex_usage(o.account_id, snapshot)
                .await?;
        }
        if changed {
            inner
                .invalidations
                .publish(Invalidation::account(o.account_id));
        }
        Ok(())
    }

    pub fn outcome_counts(&self) -> OutcomeCounts {
        let c = &self.inner.counters;
        OutcomeCounts {
            server_errors: c.server_errors.load(Ordering::Relaxed),
            stream_timeouts: c.stream_timeouts.load(Ordering::Relaxed),
            connect_errors: c.connect_errors.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            overloaded: c.overloaded.load(Ordering::Relaxed),
            errored: c.errored.load(Ordering::Relaxed),
        }
    }

    /// Live leases (for tests and diagnostics).
    pub fn lease_count(&self) -> usize {
        self.inner.leases.len()
    }

    pub fn has_lease(&self, lease_id: &str) -> bool {
        self.inner.leases.contains(lease_id)
    }

    pub fn lease_owner(&self, lease_id: &str) -> Option<String> {
        self.inner.leases.owner_of(lease_id)
    }

    /// Slots in use and waiters of a user / an account.
    pub fn user_usage(&self, user_id: i64) -> slots::Usage {
        self.inner.user_slots.usage(user_id)
    }

    pub fn account_usage(&self, account_id: i64) -> slots::Usage {
        self.inner.account_slots.usage(account_id)
    }
}

/// The key's user, if it may make requests.
fn active_user(read: Result<User>) -> Result<User, AdmitError> {
    match read {
        Ok(u) if u.status == UserStatus::Active => Ok(u),
        Ok(_) => Err(Rejection::new(ErrorCode::UserInactive, "User is not active").into()),
        Err(Error::NotFound(_)) => {
            Err(Rejection::new(ErrorCode::UserNotFound, "User not found").into())
        }
        Err(e) => Err(Rejection::storage_unavailable(&e).into()),
    }
}

fn account_timeout() -> Rejection {
    Rejection::new(
        ErrorCode::AccountConcurrencyExceeded,
        "Concurrency limit exceeded for account, please retry later",
    )
}

/// The key checks Admit repeats from Authorize (the data plane's copy may be stale).
fn check_key(key: &crate::model::ApiKey, now: i64) -> Result<(), Rejection> {
    match key.status {
        KeyStatus::Active => {}
        KeyStatus::Disabled => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyDisabled,
                "API key is disabled",
            ));
        }
        KeyStatus::QuotaExhausted => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyQuotaExhausted,
                "API key quota exhausted",
            ));
        }
        KeyStatus::Expired => {
            return Err(Rejection::new(
                ErrorCode::ApiKeyExpired,
                "API key has expired",
            ));
        }
    }
    if key.quota_nanos > 0 && key.quota_used_nanos >= key.quota_nanos {
        return Err(Rejection::new(
            ErrorCode::ApiKeyQuotaExhausted,
            "API key quota exhausted",
        ));
    }
    if key.expires_at_ms.is_some_and(|t| t <= now) {
        return Err(Rejection::new(
            ErrorCode::ApiKeyExpired,
            "API key has expired",
        ));
    }
    Ok(())
}
