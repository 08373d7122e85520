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
    /// Token-endpoint refreshes by outcome (the metrics).
    outcomes: crate::metrics::Outcomes,
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
                outcomes: crate::metrics::Outcomes::default(),
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

    /// Token-endpoint refreshes by outcome: renewed, failed, interrupted.
    pub fn outcomes(&self) -> crate::metrics::Outcomes {
        self.inner.outcomes.clone()
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
        let outcome = match &answer {
            Ok(_) => "renewed",
            Err(e) if e.cancelled => "interrupted",
            Err(_) => "failed",
        };
        inner
            .outcomes
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::broadcast::Receiver;
    use tollgate_shared::Multiplier;
    use tollgate_shared::domain::Platform;

    use super::*;
    use crate::crypto::SecretBox;
    use crate::model::NewAccount;

    /// A minimal token endpoint: answers each POST with the next `(status, body)`
    /// (the last one repeats) and records the form bodies.
    struct TokenServer {
        url: String,
        bodies: Arc<Mutex<Vec<String>>>,
        hits: Arc<AtomicUsize>,
    }

    async fn token_server(tasks: &TaskTracker, answers: Vec<(u16, &'static str)>) -> TokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (bodies.clone(), hits.clone());
        tasks.spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(text[end + 4..end + 4 + len].to_owned());
                    }
                };
                let Some(body) = body else { continue };
                let n = h.fetch_add(1, Ordering::SeqCst);
                b.lock().unwrap().push(body);
                let (status, answer) = answers[n.min(answers.len() - 1)];
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        TokenServer { url, bodies, hits }
    }

    struct Setup {
        refresher: TokenRefresher,
        store: Store,
        server: TokenServer,
        rx: Receiver<Invalidation>,
        _dir: tempfile::TempDir,
    }

    async fn setup(answers: Vec<(u16, &'static str)>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let secrets = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let store = Store::connect(&url, secrets).await.unwrap();
        let tasks = TaskTracker::new();
        let server = token_server(&tasks, answers).await;
        let invalidations = Invalidations::new();
        let rx = invalidations.subscribe();
        let settings = OAuthSettings {
            token_url: server.url.clone(),
            retries: 2,
            retry_backoff: Duration::from_millis(1),
            ..OAuthSettings::default()
        };
        let refresher = TokenRefresher::new(
            store.clone(),
            invalidations,
            settings,
            tasks,
            CancellationToken::new(),
        );
        Setup {
            refresher,
            store,
            server,
            rx,
            _dir: dir,
        }
    }

    async fn account(store: &Store, credential: Credential, expires_in_ms: i64) -> i64 {
        store
            .create_account(NewAccount {
                name: "a".into(),
                platform: Platform::OpenAi,
                base_url: String::new(),
                credential,
                concurrency: 3,
                priority: 50,
                model_mapping: Default::default(),
                proxy_url: String::new(),
                user_agent: String::new(),
                expires_at_ms: Some(now_ms() + expires_in_ms),
                chatgpt_account_id: "acct-1".into(),
                cost_multiplier: Multiplier::ONE,
                notes: String::new(),
                groups: Vec::new(),
            })
            .await
            .unwrap()
            .id
    }

    fn oauth(refresh_token: &str) -> Credential {
        Credential::OAuth {
            access_token: "at-1".into(),
            refresh_token: refresh_token.into(),
            id_token: "id-1".into(),
        }
    }

    const GRANT: &str = r#"{"access_token":"at-2","expires_in":600,"token_type":"Bearer"}"#;
    const GRANT_HOUR: &str = r#"{"access_token":"at-3","expires_in":3600}"#;

    #[tokio::test]
    async fn a_renewal_keeps_the_old_refresh_token_and_sets_the_expiry() {
        let mut s = setup(vec![(200, GRANT)]).await;
        let id = account(&s.store, oauth("rt-1"), 3_600_000).await;
        let r = s.refresher.refresh(id, Mode::Force).await.unwrap();
        assert!(matches!(r, Refreshed::Renewed(_)));
        let stored = s.store.get_account(id).await.unwrap();
        assert_eq!(
            stored.credential,
            Credential::OAuth {
                access_token: "at-2".into(),
                refresh_token: "rt-1".into(),
                id_token: "id-1".into(),
            }
        );
        assert_eq!(stored.chatgpt_account_id, "acct-1");
        let left = stored.expires_at_ms.unwrap() - now_ms();
        assert!((590_000..=600_000).contains(&left), "{left}");
        assert_eq!(r.account().credential, stored.credential);
        assert_eq!(s.rx.try_recv().unwrap(), Invalidation::account(id));

        let body = s.server.bodies.lock().unwrap()[0].clone();
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "rt-1");
        assert_eq!(form["client_id"], super::super::DEFAULT_CLIENT_ID);
        assert_eq!(form["scope"], "openid profile email");
        assert_eq!(s.refresher.calls(), 1);
        assert_eq!(refreshes(&s.refresher, "renewed"), 1);
    }

    fn refreshes(r: &TokenRefresher, outcome: &'static str) -> u64 {
        r.outcomes()
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .get()
    }

    #[tokio::test]
    async fn fresh_tokens_are_left_alone() {
        let s = setup(vec![(200, GRANT)]).await;
        let id = account(&s.store, oauth("rt-1"), 3_600_000).await;
        let r = s
            .refresher
            .refresh(id, Mode::IfExpiring(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(matches!(r, Refreshed::Fresh(_)));
        assert!(!s.refresher.needs_refresh_on_use(r.account(), now_ms()));
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 0);
        // Within the background margin (30 min) it is due.
        let r = s
            .refresher
            .refresh(id, Mode::IfExpiring(Duration::from_secs(7200)))
            .await
            .unwrap();
        assert!(matches!(r, Refreshed::Renewed(_)));
    }

    #[tokio::test]
    async fn the_background_pass_renews_only_what_is_due() {
        let s = setup(vec![(200, GRANT_HOUR)]).await;
        let due = account(&s.store, oauth("rt-due"), 10 * 60_000).await;
        let later = account(&s.store, oauth("rt-later"), 3 * 3_600_000).await;
        assert_eq!(s.refresher.refresh_due().await, 1);
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 1);
        assert!(s.server.bodies.lock().unwrap()[0].contains("rt-due"));
        let a = s.store.get_account(due).await.unwrap();
        assert!(a.expires_at_ms.unwrap() > now_ms() + 3_500_000);
        let b = s.store.get_account(later).await.unwrap();
        assert_eq!(b.credential, oauth("rt-later"));
        assert_eq!(
            s.refresher.refresh_due().await,
            0,
            "renewed ones are no longer due"
        );
    }

    #[tokio::test]
    async fn failures_are_retried_then_retire_the_account() {
        let s = setup(vec![(503, r#"{"error":"temporarily_unavailable"}"#)]).await;
        let id = account(&s.store, oauth("rt-1"), -1).await;
        let e = s
            .refresher
            .refresh(id, Mode::IfExpiring(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert!(matches!(e, RefreshError::Failed(_)), "{e:?}");
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 3);
        // One refresh (its retries inside), counted once, as failed.
        assert_eq!(refreshes(&s.refresher, "failed"), 1);
        assert_eq!(refreshes(&s.refresher, "renewed"), 0);
        let a = s.store.get_account(id).await.unwrap();
        assert_eq!(a.status, AccountStatus::Error);
        assert_eq!(
            a.error_message,
            "Token refresh failed: token endpoint answered 503: temporarily_unavailable"
        );
        // Retired: later callers are answered without calling the endpoint.
        assert!(s.refresher.refresh(id, Mode::Force).await.is_err());
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn without_a_refresh_token_only_an_expired_token_retires_the_account() {
        let s = setup(vec![(200, GRANT)]).await;
        let soon = account(&s.store, oauth(""), 10 * 60_000).await;
        let r = s
            .refresher
            .refresh(soon, Mode::IfExpiring(Duration::from_secs(1800)))
            .await
            .unwrap();
        assert!(matches!(r, Refreshed::Fresh(_)));
        let gone = account(&s.store, oauth(""), -1).await;
        let e = s
            .refresher
            .refresh(gone, Mode::IfExpiring(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            RefreshError::Failed("the account has no refresh token".into())
        );
        assert_eq!(
            s.store.get_account(gone).await.unwrap().status,
            AccountStatus::Error
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_401_forces_one_renewal_and_a_repeated_one_retires() {
        let s = setup(vec![(200, GRANT)]).await;
        let id = account(&s.store, oauth("rt-1"), 3_600_000).await;
        assert_eq!(
            s.refresher.on_unauthorized(id).await,
            Unauthorized::Recovered
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 1);
        // A late report for the old token: nothing to do.
        assert_eq!(
            s.refresher.on_unauthorized(id).await,
            Unauthorized::Recovered
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 1);
        // The renewed token refused too, with no success in between: retire.
        let earlier = Instant::now().checked_sub(Duration::from_secs(20)).unwrap();
        s.refresher.forced().insert(id, earlier);
        assert_eq!(
            s.refresher.on_unauthorized(id).await,
            Unauthorized::NotRecovered
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 1);
        // After a success, a 401 is a new story: renew again.
        s.refresher.forced().insert(id, earlier);
        s.refresher.on_success(id);
        assert_eq!(
            s.refresher.on_unauthorized(id).await,
            Unauthorized::Recovered
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn api_key_accounts_are_not_refreshed() {
        let s = setup(vec![(200, GRANT)]).await;
        let id = account(
            &s.store,
            Credential::ApiKey {
                api_key: "sk-1".into(),
            },
            3_600_000,
        )
        .await;
        assert_eq!(
            s.refresher.on_unauthorized(id).await,
            Unauthorized::NotRecovered
        );
        assert_eq!(
            s.refresher.refresh(id, Mode::Force).await.unwrap_err(),
            RefreshError::NotOAuth(id)
        );
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn concurrent_refreshes_make_one_call() {
        let s = setup(vec![(200, GRANT)]).await;
        let id = account(&s.store, oauth("rt-1"), 30_000).await;
        let calls = (0..10).map(|_| s.refresher.refresh_for_use(id));
        let accounts = futures::future::join_all(calls).await;
        assert!(accounts.iter().all(|a| a
            .as_ref()
            .is_ok_and(|a| matches!(&a.credential, Credential::OAuth { access_token, .. } if access_token == "at-2"))));
        assert_eq!(s.server.hits.load(Ordering::SeqCst), 1);
    }
}
