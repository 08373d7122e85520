//! Onboarding a subscription login: the authorization URL (PKCE S256, `state`) the
//! operator opens, and the exchange of the code the login page returns for tokens.
//!
//! The code verifier stays in this process's memory, keyed by an opaque session id, for
//! [`SESSION_TTL`]; at most [`MAX_SESSIONS`] are kept (the oldest make room). A control
//! plane restart (or a leader change) forgets them: the operator generates a new URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tollgate_shared::now_ms;

use super::client::{TokenClient, TokenError, TokenResponse};
use super::pkce::{Pkce, random_state};
use super::{OAuthSettings, is_http_url};
use crate::error::{Error, Result};

/// How long a generated URL can be completed.
pub const SESSION_TTL: Duration = Duration::from_secs(10 * 60);
/// Pending logins kept at once.
pub const MAX_SESSIONS: usize = 256;
/// What the authorization request asks for (`offline_access`: a refresh token).
pub const AUTHORIZE_SCOPE: &str = "openid profile email offline_access";

/// A pending login. `Debug` redacts the verifier.
#[derive(Debug, Clone)]
pub struct Pending {
    pub pkce: Pkce,
    pub state: String,
    pub redirect_uri: String,
    created: Instant,
}

impl Pending {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.created) >= SESSION_TTL
    }
}

/// What `GenerateOAuthUrl` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationUrl {
    pub url: String,
    pub session_id: String,
    pub state: String,
    pub expires_at_ms: i64,
}

/// Pending logins and the token endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Onboarding {
    settings: Arc<OAuthSettings>,
    client: TokenClient,
    sessions: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Onboarding {
    pub fn new(settings: OAuthSettings) -> Self {
        let client = TokenClient::new(&settings);
        Self {
            settings: Arc::new(settings),
            client,
            sessions: Arc::default(),
        }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new pending login and its authorization URL. `redirect_uri` empty = the
    /// configured one (it must be registered for the client id).
    pub fn start(&self, redirect_uri: &str) -> Result<AuthorizationUrl> {
        let redirect_uri = match redirect_uri.trim() {
            "" => self.settings.redirect_uri.clone(),
            r if is_http_url(r) => r.to_owned(),
            _ => {
                return Err(Error::invalid(
                    "redirect_uri",
                    "must be an http(s) URL with a host",
                ));
            }
        };
        let pkce = Pkce::generate();
        let state = random_state();
        let session_id = uuid::Uuid::new_v4().simple().to_string();
        let url = self.authorization_url(&pkce, &state, &redirect_uri)?;
        let pending = Pending {
            pkce,
            state: state.clone(),
            redirect_uri,
            created: Instant::now(),
        };
        {
            let mut sessions = self.sessions();
            let now = Instant::now();
            sessions.retain(|_, p| !p.expired(now));
            while sessions.len() >= MAX_SESSIONS {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, p)| p.created)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => sessions.remove(&k),
                    None => break,
                };
            }
            sessions.insert(session_id.clone(), pending);
        }
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
        Ok(AuthorizationUrl {
            url,
            session_id,
            state,
            expires_at_ms: now_ms().saturating_add(ttl),
        })
    }

    fn authorization_url(&self, pkce: &Pkce, state: &str, redirect_uri: &str) -> Result<String> {
        let mut url = url::Url::parse(&self.settings.authorize_url)
            .map_err(|_| Error::Config("TOLLGATE_OAUTH_AUTHORIZE_URL is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", AUTHORIZE_SCOPE)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("id_token_add_organizations", "true")
            .append_pair("codex_cli_simplified_flow", "true")
            .append_pair("state", state);
        Ok(url.into())
    }

    /// Takes the pending login out (so that two exchanges cannot both use it). `None`
    /// when unknown or expired.
    pub fn take(&self, session_id: &str) -> Option<Pending> {
        let mut sessions = self.sessions();
        let p = sessions.remove(session_id.trim())?;
        (!p.expired(Instant::now())).then_some(p)
    }

    /// Puts a pending login back after a failed exchange (the operator may retry).
    pub fn put_back(&self, session_id: &str, pending: Pending) {
        if !pending.expired(Instant::now()) {
            self.sessions()
                .insert(session_id.trim().to_owned(), pending);
        }
    }

    /// Pending logins kept now (diagnostics and tests).
    pub fn pending(&self) -> usize {
        self.sessions().len()
    }

    /// `grant_type=authorization_code` with the session's verifier and redirect URI,
    /// through `proxy_url` when not empty.
    pub async fn exchange(
        &self,
        pending: &Pending,
        code: &str,
        proxy_url: &str,
    ) -> Result<TokenResponse, TokenError> {
        self.client
            .exchange_code(
                proxy_url,
                code,
                &pending.pkce.verifier,
                &pending.redirect_uri,
                &CancellationToken::new(),
            )
            .await
    }
}

/// The code (and state, when present) from what the operator pasted: the bare code, or
/// the whole callback URL / its query string.
pub fn parse_callback(input: &str) -> (String, Option<String>) {
    let text = input.trim();
    let query = if let Ok(u) = url::Url::parse(text) {
        u.query().map(str::to_owned)
    } else if text.contains("code=") {
        Some(text.trim_start_matches('?').to_owned())
    } else {
        None
    };
    let Some(query) = query else {
        return (text.to_owned(), None);
    };
    let mut code = String::new();
    let mut state = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "code" => code = v.into_owned(),
            "state" => state = Some(v.into_owned()),
            _ => {}
        }
    }
    (code, state)
}

#[cfg(test)]
mod tests {
    use super::super::pkce::challenge_s256;
    use super::*;

    fn onboarding() -> Onboarding {
        Onboarding::new(OAuthSettings::default())
    }

    #[test]
    fn the_url_carries_pkce_s256_and_state() {
        let o = onboarding();
        let a = o.start("").unwrap();
        let url = url::Url::parse(&a.url).unwrap();
        assert!(
            a.url
                .starts_with("https://auth.openai.com/oauth/authorize?")
        );
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], super::super::DEFAULT_CLIENT_ID);
        assert_eq!(q["redirect_uri"], super::super::DEFAULT_REDIRECT_URI);
        assert_eq!(q["scope"], AUTHORIZE_SCOPE);
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], a.state);
        let pending = o.take(&a.session_id).unwrap();
        assert_eq!(q["code_challenge"], challenge_s256(&pending.pkce.verifier));
        assert!(!a.url.contains(&pending.pkce.verifier));
        assert!(o.take(&a.session_id).is_none(), "a session is taken once");
        o.put_back(&a.session_id, pending);
        assert!(o.take(&a.session_id).is_some());
    }

    #[test]
    fn sessions_are_bounded() {
        let o = onboarding();
        let first = o.start("").unwrap();
        for _ in 0..MAX_SESSIONS {
            o.start("").unwrap();
        }
        assert_eq!(o.pending(), MAX_SESSIONS);
        assert!(o.take(&first.session_id).is_none(), "the oldest made room");
        assert!(o.take("nope").is_none());
    }

    #[test]
    fn redirect_override_is_validated() {
        let o = onboarding();
        assert!(o.start("not a url").is_err());
        let a = o.start("http://localhost:9999/cb").unwrap();
        assert!(
            a.url
                .contains("redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcb")
        );
        assert_eq!(
            o.take(&a.session_id).unwrap().redirect_uri,
            "http://localhost:9999/cb"
        );
    }

    #[test]
    fn callback_parsing() {
        assert_eq!(parse_callback(" abc "), ("abc".into(), None));
        assert_eq!(
            parse_callback("http://localhost:1455/auth/callback?code=c1&scope=x&state=s1"),
            ("c1".into(), Some("s1".into()))
        );
        assert_eq!(
            parse_callback("?code=c%2B2&state=s2"),
            ("c+2".into(), Some("s2".into()))
        );
    }
}
