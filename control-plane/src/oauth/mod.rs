//! Subscription (ChatGPT/Codex OAuth) logins: keeping their access tokens fresh and
//! onboarding new ones (accounts.md, "Subscription tokens").
//!
//! - `client` — the token endpoint (`refresh_token` and `authorization_code` grants),
//!   through the account's proxy, with retries and backoff.
//! - `refresh` — [`TokenRefresher`]: single-flight refresh per account (before expiry in
//!   the background, on use from Admit, forced after a 401), storing the new tokens
//!   encrypted and retiring the account to `error` when the endpoint keeps failing.
//! - `onboarding` — [`Onboarding`]: the PKCE authorization URL and the code exchange
//!   behind the Admin API's `GenerateOAuthUrl` / `ExchangeOAuthCode`.
//! - `pkce`, `claims` — PKCE S256 and the id-token claims Tollgate reads.
//!
//! Architecture invariant: tokens, codes and verifiers are never logged and never part
//! of an error message.

pub mod claims;
pub mod client;
pub mod onboarding;
pub mod pkce;
pub mod refresh;
pub mod single_flight;

use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};

pub use onboarding::Onboarding;
pub use refresh::TokenRefresher;

pub const DEFAULT_TOKEN_URL: &str = "https://auth.openai.com/oauth/token";
pub const DEFAULT_AUTHORIZE_URL: &str = "https://auth.openai.com/oauth/authorize";
/// Codex CLI's public client id.
pub const DEFAULT_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// Codex CLI's registered redirect (the login page sends the browser there with the code).
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:1455/auth/callback";

/// Token endpoint, onboarding and refresh policy.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub token_url: String,
    pub client_id: String,
    pub authorize_url: String,
    pub redirect_uri: String,
    /// The background refresher renews tokens expiring within this.
    pub refresh_margin: Duration,
    /// How often the background refresher looks.
    pub check_interval: Duration,
    /// Admit renews a selected account's token expiring within this before leasing it.
    pub use_margin: Duration,
    /// Attempts after the first, for transient token-endpoint failures.
    pub retries: u32,
    /// Wait before the first retry (doubling).
    pub retry_backoff: Duration,
    /// Per token-endpoint request.
    pub request_timeout: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            token_url: DEFAULT_TOKEN_URL.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            authorize_url: DEFAULT_AUTHORIZE_URL.to_owned(),
            redirect_uri: DEFAULT_REDIRECT_URI.to_owned(),
            refresh_margin: Duration::from_secs(30 * 60),
            check_interval: Duration::from_secs(5 * 60),
            use_margin: Duration::from_secs(60),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl OAuthSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            token_url: c.oauth_token_url.trim().to_owned(),
            client_id: c.oauth_client_id.trim().to_owned(),
            authorize_url: c.oauth_authorize_url.trim().to_owned(),
            redirect_uri: c.oauth_redirect_uri.trim().to_owned(),
            refresh_margin: Duration::from_millis(c.oauth_refresh_margin_ms),
            check_interval: Duration::from_millis(c.oauth_refresh_interval_ms),
            use_margin: Duration::from_millis(c.oauth_use_margin_ms),
            retries: c.oauth_refresh_retries,
            retry_backoff: Duration::from_millis(c.oauth_refresh_backoff_ms),
            ..Self::default()
        }
    }
}

/// Start-up checks of the OAuth settings; the message names the setting.
pub fn check_config(c: &Config) -> Result<()> {
    for (name, value) in [
        ("TOLLGATE_OAUTH_TOKEN_URL", &c.oauth_token_url),
        ("TOLLGATE_OAUTH_AUTHORIZE_URL", &c.oauth_authorize_url),
        ("TOLLGATE_OAUTH_REDIRECT_URI", &c.oauth_redirect_uri),
    ] {
        if !is_http_url(value) {
            return Err(Error::Config(format!(
                "{name} must be an http(s) URL with a host"
            )));
        }
    }
    let id = c.oauth_client_id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Config(
            "TOLLGATE_OAUTH_CLIENT_ID must be non-empty printable ASCII".into(),
        ));
    }
    if c.oauth_refresh_interval_ms < 1_000 {
        return Err(Error::Config(
            "TOLLGATE_OAUTH_REFRESH_INTERVAL_MS must be at least 1000".into(),
        ));
    }
    if c.oauth_refresh_retries > 10 {
        return Err(Error::Config(
            "TOLLGATE_OAUTH_REFRESH_RETRIES must be at most 10".into(),
        ));
    }
    if c.oauth_refresh_backoff_ms > 60_000 {
        return Err(Error::Config(
            "TOLLGATE_OAUTH_REFRESH_BACKOFF_MS must be at most 60000".into(),
        ));
    }
    Ok(())
}

pub(crate) fn is_http_url(value: &str) -> bool {
    matches!(
        url::Url::parse(value.trim()),
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some()
    )
}
