//! The OAuth token endpoint client: `grant_type=refresh_token` and
//! `grant_type=authorization_code` POSTs (form-encoded), through the account's proxy when
//! it has one, with retries and exponential backoff for transient failures.
//!
//! Nothing here logs or returns a token, a code or a verifier: errors carry the HTTP
//! status and the OAuth `error` / `error_description` fields only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::OAuthSettings;

/// Scope sent with a refresh (what Codex CLI sends).
pub const REFRESH_SCOPE: &str = "openid profile email";

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a request already sent may still finish after shutdown began: a refresh
/// token is rotated by the endpoint, and an answer dropped on the floor loses the login.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Proxy clients kept (one per distinct proxy URL); beyond this the cache starts over.
const MAX_CLIENTS: usize = 256;
/// Longest `error_description` kept in a message.
const MAX_DESCRIPTION: usize = 200;

/// A successful token answer. `Debug` redacts the tokens.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a token request failed. The message is safe to store and show to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    /// Transient (network, 429, 5xx): worth another attempt.
    pub retryable: bool,
    /// Shutdown began before an answer arrived.
    pub cancelled: bool,
    pub message: String,
}

impl TokenError {
    fn transient(message: String) -> Self {
        Self {
            retryable: true,
            cancelled: false,
            message,
        }
    }

    fn permanent(message: String) -> Self {
        Self {
            retryable: false,
            cancelled: false,
            message,
        }
    }

    fn cancelled() -> Self {
        Self {
            retryable: false,
            cancelled: true,
            message: "the control plane is shutting down".into(),
        }
    }
}

/// Retry policy of one grant.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubles each time (at most 30 s).
    pub backoff: Duration,
}

impl Retry {
    pub const NONE: Self = Self {
        retries: 0,
        backoff: Duration::ZERO,
    };
}

/// The token endpoint client. Cheap to clone; HTTP clients are pooled per proxy.
#[derive(Debug, Clone)]
pub struct TokenClient {
    token_url: String,
    client_id: String,
    timeout: Duration,
    clients: Arc<Mutex<HashMap<String, reqwest::Client>>>,
}

impl TokenClient {
    pub fn new(settings: &OAuthSettings) -> Self {
        Self {
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            timeout: settings.request_timeout,
            clients: Arc::default(),
        }
    }

    /// `grant_type=refresh_token`.
    pub async fn refresh(
        &self,
        proxy_url: &str,
        refresh_token: &str,
        retry: Retry,
        shutdown: &CancellationToken,
    ) -> Result<TokenResponse, TokenError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("refresh_token", refresh_token),
            ("scope", REFRESH_SCOPE),
        ];
        self.grant(proxy_url, &form, retry, shutdown).await
    }

    /// `grant_type=authorization_code` with the PKCE verifier.
    pub async fn exchange_code(
        &self,
        proxy_url: &str,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        shutdown: &CancellationToken,
    ) -> Result<TokenResponse, TokenError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", self.client_id.as_str()),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ];
        // A code is single-use: a retry after an answer was lost would fail anyway, so
        // only the one attempt.
        self.grant(proxy_url, &form, Retry::NONE, shutdown).await
    }

    async fn grant(
        &self,
        proxy_url: &str,
        form: &[(&str, &str)],
        retry: Retry,
        shutdown: &CancellationToken,
    ) -> Result<TokenResponse, TokenError> {
        let client = self.client(proxy_url)?;
        let mut backoff = retry.backoff;
        let mut attempt = 0u32;
        loop {
            let sent = self.post(&client, form);
            tokio::pin!(sent);
            let result = tokio::select! {
                r = &mut sent => r,
                () = shutdown.cancelled() => {
                    tokio::time::timeout(SHUTDOWN_GRACE, sent)
                        .await
                        .unwrap_or_else(|_| Err(TokenError::cancelled()))
                }
            };
            match result {
                Err(e) if e.retryable && attempt < retry.retries => {
                    attempt += 1;
                    tracing::warn!(
                        attempt,
                        retries = retry.retries,
                        error = %e,
                        "token endpoint call failed; retrying"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return Err(TokenError::cancelled()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        form: &[(&str, &str)],
    ) -> Result<TokenResponse, TokenError> {
        let resp = client
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| TokenError::transient(describe_transport(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| TokenError::transient(describe_transport(&e)))?;
        if !status.is_success() {
            let message = format!(
                "token endpoint answered {}{}",
                status.as_u16(),
                oauth_error(&body)
            );
            let transient = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            return Err(if transient {
                TokenError::transient(message)
            } else {
                TokenError::permanent(message)
            });
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            TokenError::permanent("token endpoint answer is not a token response".into())
        })?;
        if tokens.access_token.trim().is_empty() {
            return Err(TokenError::permanent(
                "token endpoint answered without an access_token".into(),
            ));
        }
        Ok(tokens)
    }

    fn client(&self, proxy_url: &str) -> Result<reqwest::Client, TokenError> {
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(proxy_url) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none());
        b = if proxy_url.is_empty() {
            b.no_proxy()
        } else {
            // Never the URL in the message: it may carry the proxy's password.
            b.proxy(
                reqwest::Proxy::all(proxy_url)
                    .map_err(|_| TokenError::permanent("invalid account proxy URL".into()))?,
            )
        };
        let c = b
            .build()
            .map_err(|_| TokenError::permanent("cannot build the token endpoint client".into()))?;
        if map.len() >= MAX_CLIENTS {
            map.clear();
        }
        map.insert(proxy_url.to_owned(), c.clone());
        Ok(c)
    }
}

/// A transport failure, without the URL (the token URL is harmless, but the proxy's is
/// not, and reqwest may name either).
fn describe_transport(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer could not be read"
    } else {
        "request failed"
    };
    format!("token endpoint unreachable: {what}")
}

/// `": invalid_grant (…description…)"` from an OAuth error body; empty when the body is
/// not one. Only these two fields are kept, never the raw body.
fn oauth_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthErrorBody {
        #[serde(default)]
        error: serde_json::Value,
        #[serde(default)]
        error_description: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<OAuthErrorBody>(body) else {
        return String::new();
    };
    let code = match &e.error {
        serde_json::Value::String(s) => s.clone(),
        // Some endpoints nest it: {"error": {"code": "...", "message": "..."}}.
        serde_json::Value::Object(o) => o
            .get("code")
            .or_else(|| o.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    };
    let description = e
        .error_description
        .or_else(|| {
            e.error
                .get("message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .map(|d| clip(d.trim(), MAX_DESCRIPTION))
        .unwrap_or_default();
    let code = clip(code.trim(), 64);
    match (code.is_empty(), description.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {code}"),
        (true, false) => format!(": {description}"),
        (false, false) => format!(": {code} ({description})"),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_keep_only_code_and_description() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_grant","error_description":"reused","x":"secret"}"#),
            ": invalid_grant (reused)"
        );
        assert_eq!(
            oauth_error(br#"{"error":"server_error"}"#),
            ": server_error"
        );
        assert_eq!(
            oauth_error(br#"{"error":{"code":"token_expired","message":"gone"}}"#),
            ": token_expired (gone)"
        );
        assert_eq!(oauth_error(b"<html>secret</html>"), "");
        let long = format!(
            r#"{{"error":"x","error_description":"{}"}}"#,
            "d".repeat(500)
        );
        assert!(oauth_error(long.as_bytes()).len() < 300);
    }

    #[test]
    fn token_response_debug_redacts() {
        let t: TokenResponse = serde_json::from_str(
            r#"{"access_token":"at-secret","refresh_token":"rt-secret","id_token":"id-secret","expires_in":3600}"#,
        )
        .unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("3600"));
    }
}
