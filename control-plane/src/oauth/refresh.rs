//! [`TokenRefresher`]: keeps subscription logins' access tokens fresh.
//!
//! Three triggers, one path:
//! - the background loop renews active logins whose token expires within the refresh
//!   margin (default 30 min), every check interval (default 5 min);
//! - Admit renews the account it selected when the token is expired or expires within
//!   the use margin (default 60 s), so the lease carries a working token;
//! - a reported 401 forces a renewal; only if that fails does the account go to `error`.
//!
//! Refreshes of one account are collapsed into one token-endpoint call
//! ([`SingleFlight`]), run as tracked tasks that a cancelled caller cannot abort. A
//! refresh that still fails after the retries sets the account to `error` ("Token
//! refresh failed: …"); success stores the new tokens encrypted. Both publish the
//! account's invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::domain::{AccountKind, AccountStatus};
use tollgate_shared::now_ms;

use super::OAuthSettings;
use super::claims;
use super::client::{Retry, TokenClient, TokenResponse};
use super::single_flight::{Joined, SingleFlight};
use crate::error::Error;
use crate::events::{Invalidation, Invalidations};
use crate::model::{Account, Credential};
use crate::storage::Store;

/// A 401 this soon after a forced renewal came from a request still holding the old
/// token: it says nothing about the new one.
const STALE_401: Duration = Duration::from_secs(10);
/// A 401 later than [`STALE_401`] but within this of a forced renewal, with no success
/// reported in between, means the renewed token is refused too: the login is dead.
const RECHECK_401: Duration = Duration::from_secs(10 * 60);
/// Background renewals running at once.
const BACKGROUND_CONCURRENCY: usize = 4;

/// When to call the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only if the access token expires within this (or has expired).
    IfExpiring(Duration),
    /// Whatever the expiry says (the upstream refused the token).
    Force,
}

/// A successful outcome: the account as it now is.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// New tokens were stored.
    Renewed(Account),
    /// No call was needed: the token is fresh enough (or another flight renewed it).
    Fresh(Account),
}

impl Refreshed {
    pub fn account(&self) -> &Account {
        match self {
            Self::Renewed(a) | Self::Fresh(a) => a,
        }
    }

    pub fn into_account(self) -> Account {
        match self {
            Self::Renewed(a) | Self::Fresh(a) => a,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The endpoint refused or kept failing; the account is now in `error`.
    #[error("token refresh failed: {0}")]
    Failed(String),
    #[error("account {0} is not a subscription (OAuth) account")]
    NotOAuth(i64),
    /// Storage trouble, a deleted account, or shutdown: the account was left as it was.
    #[error("token refresh unavailable: {0}")]
    Unavailable(String),
}

pub type RefreshResult = Result<Refreshed, RefreshError>;

/// What a reported 401 led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// The token was renewed (or just had been): the account stays in service.
    Recovered,
    /// Renewal failed or did not help (or this is no OAuth account): retire it.
    NotRecovered,
}

struct Inner {
    store: Store,
    invalidations: Invalidations,
    settings: OAuthSettings,
    client: TokenClient,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    flights: Arc<SingleFlight<i64, Mode, RefreshResult>>,
    /// When a 401 last forced a successful renewal, per account (cleared by a success).
    forced: Mutex<HashMap<i64, Instant>>,
    /// Token-endpoint refresh calls started (diagnostics and tests).
    calls: AtomicU64,
}

/// The refresher. Cheap to clone.
#[derive(Clone)]
pub struct TokenRefresher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("token_url", &self.inner.settings.token_url)
            .field("flights", &self.inner.flights)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The account is an OAuth one whose token expires within `margin` of `now_ms`. An
/// unknown expiry is never "expiring": only a 401 can tell.
pub fn expiring(a: &Account, margin: Duration, now_ms: i64) -> bool {
    a.kind == AccountKind::OAuth
        && a.expires_at_ms
            .is_some_and(|t| t <= now_ms.saturating_add(ms(margin)))
}

impl TokenRefresher {
    /// Refreshes run on `tasks` and stop waiting on `shutdown`.
    pub fn new(
        store: Store,
        invalidations: Invalidations,
        settings: OAuthSettings,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let client = TokenClient::new(&settings);
        Self {
            inner: Arc::new(Inner {
                store,
                invalidations,
                settings,
                client,
                tasks,
                shutdown,
                flights: Arc::default(),
                forced: Mutex::default(),
                calls: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.inner.settings
    }

    /// Token-endpoint refresh calls started so far.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Admit's check (no I/O): should the selected account's token be renewed before it
    /// is leased?
    pub fn needs_refresh_on_use(&self, a: &Account, now_ms: i64) -> bool {
        expiring(a, self.inner.settings.use_margin, now_ms)
    }

    /// Admit's renewal: the account with a token valid beyond the use margin.
    pub async fn refresh_for_use(&self, account_id: i64) -> Result<Account, RefreshError> {
        self.refresh(account_id, Mode::IfExpiring(self.inner.settings.use_margin))
            .await
            .map(Refreshed::into_account)
    }

    /// Refreshes `account_id` per `mode`, joining a refresh of it already running.
    pub async fn refresh(&self, account_id: i64, mode: Mode) -> RefreshResult {
        loop {
            let this = self.clone();
            let (joined, result) = self.inner.flights.join_or_spawn(
                account_id,
                mode,
                &self.inner.tasks,
                move || async move { this.run(account_id, mode).await },
            );
            let result = result.await.unwrap_or_else(|| {
                Err(RefreshError::Unavailable(
                    "the refresh was interrupted".into(),
                ))
            });
            // A joined flight that had a laxer goal and found nothing to do does not
            // answer ours: start our own (the finished flight is forgotten already).
            let unanswered = match (joined, mode, &result) {
                (Joined::Running(Mode::IfExpiring(_)), Mode::Force, Ok(Refreshed::Fresh(_))) => {
                    true
                }
                (
                    Joined::Running(Mode::IfExpiring(_)),
                    Mode::IfExpiring(m),
                    Ok(Refreshed::Fresh(a)),
                ) => expiring(a, m, now_ms()),
                _ => false,
            };
            if !unanswered {
                return result;
            }
        }
    }

    /// A 401 from the upstream for `account_id`: renew the token unless that just
    /// happened; `NotRecovered` tells the caller to retire the account.
    pub async fn on_unauthorized(&self, account_id: i64) -> Unauthorized {
        let last_forced = self.forced().get(&account_id).copied();
        if let Some(at) = last_forced {
            let age = at.elapsed();
            if age < STALE_401 {
                tracing::debug!(account_id, "401 for a token renewed moments ago; ignored");
                return Unauthorized::Recovered;
            }
            self.forced().remove(&account_id);
            if age < RECHECK_401 {
                tracing::warn!(
                    account_id,
                    "401 again after a forced token renewal; the login is refused"
                );
                return Unauthorized::NotRecovered;
            }
        }
        match self.refresh(account_id, Mode::Force).await {
            Ok(_) => {
                self.forced().insert(account_id, Instant::now());
                Unauthorized::Recovered
            }
            Err(RefreshError::NotOAuth(_)) => Unauthorized::NotRecovered,
            Err(e) => {
                tracing::warn!(account_id, error = %e, "401: token renewal did not succeed");
                Unauthorized::NotRecovered
            }
        }
    }

    /// A successful upstream answer for `account_id`: its token works.
    pub fn on_success(&self, account_id: i64) {
        // Cheap when there is nothing to clear (the common case).
        let mut forced = self.forced();
        if !forced.is_empty() {
            forced.remove(&account_id);
        }
    }

    fn forced(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.inner
            .forced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The background loop, until shutdown. Spawn it on the service's tracker.
    pub async fn run_background(self) {
        let shutdown = self.inner.shutdown.clone();
        let mut ticker = tokio::time::interval(self.inner.settings.check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = self.refresh_due() => {}
            }
            self.forced().retain(|_, at| at.elapsed() < RECHECK_401);
        }
    }

    /// Renews every active login expiring within the refresh margin. Returns how many
    /// were renewed.
    pub async fn refresh_due(&self) -> usize {
        let margin = self.inner.settings.refresh_margin;
        let before = now_ms().saturating_add(ms(margin));
        let ids = match self.inner.store.oauth_accounts_due(before).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list OAuth accounts due for a token refresh");
                return 0;
            }
        };
        if ids.is_empty() {
            return 0;
        }
        tracing::debug!(due = ids.len(), "OAuth accounts due for a token refresh");
        let renewed = AtomicUsize::new(0);
        futures::stream::iter(ids)
            .for_each_concurrent(BACKGROUND_CONCURRENCY, |id| {
                let renewed = &renewed;
                async move {
                    match self.refresh(id, Mode::IfExpiring(margin)).await {
                        Ok(Refreshed::Renewed(_)) => {
                            renewed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Refreshed::Fresh(_)) => {}
                        Err(e) => {
                            tracing::debug!(account_id = id, error = %e, "background refresh");
                        }
                    }
                }
            })
            .await;
        renewed.into_inner()
    }

    /// One flight's work.
    async fn run(&self, id: i64, mode: Mode) -> RefreshResult {
        let inner = &*self.inner;
        let account = self.load(id).await?;
        let Credential::OAuth { refresh_token, .. } = &account.credential else {
            return Err(RefreshError::NotOAuth(id));
        };
        let now = now_ms();
        if let Mode::IfExpiring(margin) = mode
            && !expiring(&account, margin, now)
        {
            return Ok(Refreshed::Fresh(account));
        }
        if account.status == AccountStatus::Error {
            // Retired already (perhaps by the flight this caller just missed).
            return Err(RefreshError::Failed(account.error_message.clone()));
        }
        if refresh_token.trim().is_empty() {
            let expired = account.expires_at_ms.is_some_and(|t| t <= now);
            if mode == Mode::Force || expired {
                return self.fail(id, "the account has no refresh token").await;
            }
            return Ok(Refreshed::Fresh(account));
        }
        inner.calls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            account_id = id,
            forced = mode == Mode::Force,
            "refreshing OAuth access token"
        );
        let retry = Retry {
            retries: inner.settings.retries,
            backoff: inner.settings.retry_backoff,
        };
        let answer = inner
            .client
            .refresh(&account.proxy_url, refresh_token, retry, &inner.shutdown)
            .await;
        match answer {
            Ok(tokens) => self.store(account, tokens).await,
            Err(e) if e.cancelled => Err(RefreshError::Unavailable(e.message)),
            Err(e) => self.fail(id, &e.message).await,
        }
    }

    async fn load(&self, id: i64) -> Result<Account, RefreshError> {
        self.inner.store.get_account(id).await.map_err(|e| match e {
            Error::NotFound(_) => RefreshError::Unavailable(format!("account {id} not found")),
            e => {
                tracing::warn!(account_id = id, error = %e, "token refresh: cannot read the account");
                RefreshError::Unavailable("storage unavailable".into())
            }
        })
    }

    /// Stores renewed tokens: a missing refresh or id token keeps the old one; the
    /// expiry is now + `expires_in` (else the access token's own `exp`).
    async fn store(&self, mut account: Account, tokens: TokenResponse) -> RefreshResult {
        let inner = &*self.inner;
        let id = account.id;
        let Credential::OAuth {
            refresh_token: old_refresh,
            id_token: old_id,
            ..
        } = account.credential
        else {
            return Err(RefreshError::NotOAuth(id));
        };
        let new_id_token = tokens.id_token.filter(|t| !t.trim().is_empty());
        let chatgpt_account_id = new_id_token
            .as_deref()
            .and_then(|t| claims::decode(t).ok())
            .map(|c| c.chatgpt_account_id)
            .filter(|a| !a.is_empty());
        let now = now_ms();
        let expires_at_ms = tokens
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| now.saturating_add(s.saturating_mul(1000)))
            .or_else(|| {
                claims::decode(&tokens.access_token)
                    .ok()
                    .and_then(|c| c.expires_at_ms)
            });
        let credential = Credential::OAuth {
            access_token: tokens.access_token,
            refresh_token: tokens
                .refresh_token
                .filter(|t| !t.trim().is_empty())
                .unwrap_or(old_refresh),
            id_token: new_id_token.unwrap_or(old_id),
        };
        let mut written = Ok(false);
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            written = inner
                .store
                .store_oauth_tokens(
                    id,
                    &credential,
                    expires_at_ms,
                    chatgpt_account_id.as_deref(),
                )
                .await;
            if written.is_ok() {
                break;
            }
        }
        match written {
            Ok(true) => {}
            Ok(false) => {
                return Err(RefreshError::Unavailable(format!(
                    "account {id} was deleted"
                )));
            }
            Err(e) => {
                // The endpoint may have rotated the refresh token: this login may need
                // onboarding again. Loud, but never with the tokens.
                tracing::error!(
                    account_id = id,
                    error = %e,
                    "renewed OAuth tokens could not be stored"
                );
                return Err(RefreshError::Unavailable("storage unavailable".into()));
            }
        }
        inner.invalidations.publish(Invalidation::account(id));
        tracing::info!(
            account_id = id,
            expires_at_ms,
            "OAuth access token refreshed"
        );
        account.credential = credential;
        account.expires_at_ms = expires_at_ms;
        if let Some(a) = chatgpt_account_id {
            account.chatgpt_account_id = a;
        }
        account.updated_at_ms = now;
        Ok(Refreshed::Renewed(account))
    }

    /// Retires the account: status `error`, "Token refresh failed: <reason>".
    async fn fail(&self, id: i64, reason: &str) -> RefreshResult {
        let inner = &*self.inner;
        let message = format!("Token refresh failed: {reason}");
        tracing::warn!(
            account_id = id,
            reason,
            "OAuth token refresh failed; account set to error"
        );
        match inner.store.set_account_error(id, &message).await {
            Ok(true) => inner.invalidations.publish(Invalidation::account(id)),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(account_id = id, error = %e, "cannot set the account to error");
            }
        }
        Err(RefreshError::Failed(reason.to_owned()))
    }
}
