//! The fake OAuth token endpoint (`POST /oauth/token`) and unsigned id tokens.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::record::Received;

/// The claims put in an id token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub email: String,
    pub chatgpt_account_id: String,
    pub chatgpt_plan_type: String,
    pub chatgpt_user_id: String,
    /// `exp` = now + this.
    pub expires_in: u64,
}

impl Default for IdTokenClaims {
    fn default() -> Self {
        Self {
            email: "user@example.com".into(),
            chatgpt_account_id: "acct-fake-0001".into(),
            chatgpt_plan_type: "plus".into(),
            chatgpt_user_id: "user-fake-0001".into(),
            expires_in: 3600,
        }
    }
}

/// An unsigned JWT (`base64url(header).base64url(payload).base64url("fake-signature")`)
/// whose payload carries `email` and `https://api.openai.com/auth` →
/// `{chatgpt_account_id, chatgpt_plan_type, chatgpt_user_id, user_id}`, like OpenAI's.
pub fn make_id_token(claims: &IdTokenClaims) -> String {
    let now = super::unix_now();
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": "fake" });
    let payload = json!({
        "iss": "https://auth.openai.com",
        "aud": ["app_EMoamEEZ73f0CkXaXp7hrann"],
        "sub": format!("auth0|{}", claims.chatgpt_user_id),
        "email": claims.email,
        "email_verified": true,
        "iat": now,
        "auth_time": now,
        "exp": now + claims.expires_in,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": claims.chatgpt_account_id,
            "chatgpt_plan_type": claims.chatgpt_plan_type,
            "chatgpt_user_id": claims.chatgpt_user_id,
            "user_id": claims.chatgpt_user_id,
        },
        "https://api.openai.com/profile": {
            "email": claims.email,
            "email_verified": true,
        },
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode("fake-signature"),
    )
}

/// The payload of a JWT (no verification), `None` when it is not one.
pub fn decode_jwt_payload(jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What the token endpoint does with one call.
#[derive(Clone, Debug)]
pub struct OAuthScript {
    pub kind: OAuthKind,
    /// Waited before answering (so concurrent refreshes overlap).
    pub delay: Duration,
}

#[derive(Clone, Debug)]
pub enum OAuthKind {
    /// 200 with `{access_token, refresh_token, id_token, expires_in, token_type}`.
    Grant(TokenGrant),
    /// An error status with this JSON body.
    Error { status: u16, body: Value },
}

/// A successful token answer. Tokens left `None` are generated per call
/// (`fake-at-<n>`, `fake-rt-<n>`), so every refresh rotates both.
#[derive(Clone, Debug, Default)]
pub struct TokenGrant {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Leave `refresh_token` out of the answer (the client keeps its old one).
    pub omit_refresh_token: bool,
    pub claims: IdTokenClaims,
}

impl Default for OAuthScript {
    fn default() -> Self {
        Self::grant()
    }
}

impl OAuthScript {
    pub fn grant() -> Self {
        Self {
            kind: OAuthKind::Grant(TokenGrant::default()),
            delay: Duration::ZERO,
        }
    }

    /// 500 `{"error":"server_error", ...}`.
    pub fn server_error() -> Self {
        Self::error(
            500,
            json!({ "error": "server_error", "error_description": "Internal server error" }),
        )
    }

    /// 400 `{"error":"invalid_grant", ...}` (a revoked or reused refresh token).
    pub fn invalid_grant() -> Self {
        Self::error(
            400,
            json!({
                "error": "invalid_grant",
                "error_description": "Your refresh token has already been used to generate a new access token. Please try signing in again.",
            }),
        )
    }

    pub fn error(status: u16, body: Value) -> Self {
        Self {
            kind: OAuthKind::Error { status, body },
            delay: Duration::ZERO,
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    fn grant_mut(&mut self) -> &mut TokenGrant {
        match &mut self.kind {
            OAuthKind::Grant(g) => g,
            OAuthKind::Error { .. } => panic!("this builder only applies to OAuthScript::grant()"),
        }
    }

    pub fn access_token(mut self, t: &str) -> Self {
        self.grant_mut().access_token = Some(t.into());
        self
    }

    pub fn refresh_token(mut self, t: &str) -> Self {
        self.grant_mut().refresh_token = Some(t.into());
        self
    }

    pub fn without_refresh_token(mut self) -> Self {
        self.grant_mut().omit_refresh_token = true;
        self
    }

    /// `expires_in` of the answer (and the id token's `exp`).
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.grant_mut().claims.expires_in = secs;
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.grant_mut().claims.email = email.into();
        self
    }

    pub fn account_id(mut self, id: &str) -> Self {
        self.grant_mut().claims.chatgpt_account_id = id.into();
        self
    }

    pub fn plan_type(mut self, plan: &str) -> Self {
        self.grant_mut().claims.chatgpt_plan_type = plan.into();
        self
    }
}

/// One call to the token endpoint.
#[derive(Clone, Debug)]
pub struct OAuthCall {
    pub received: Received,
    /// The form (or JSON) parameters, flattened to strings.
    pub params: BTreeMap<String, String>,
    pub at: Instant,
    /// What was answered.
    pub status: u16,
    pub response: Value,
}

impl OAuthCall {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn grant_type(&self) -> Option<&str> {
        self.param("grant_type")
    }

    /// The access token handed out by this call, if it succeeded.
    pub fn issued_access_token(&self) -> Option<&str> {
        self.response.get("access_token").and_then(Value::as_str)
    }

    pub fn issued_refresh_token(&self) -> Option<&str> {
        self.response.get("refresh_token").and_then(Value::as_str)
    }
}

#[derive(Default)]
pub(crate) struct OAuthState {
    pub queue: Mutex<VecDeque<OAuthScript>>,
    pub default: Mutex<Option<OAuthScript>>,
    pub calls: Mutex<Vec<OAuthCall>>,
    /// Calls that arrived (counted before any delay).
    pub arrived: AtomicUsize,
}

fn params_of(r: &Received) -> BTreeMap<String, String> {
    if let Value::Object(map) = &r.body_json {
        return map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
    }
    url::form_urlencoded::parse(&r.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl OAuthState {
    fn next(&self) -> OAuthScript {
        if let Some(s) = self.queue.lock().unwrap().pop_front() {
            return s;
        }
        self.default.lock().unwrap().clone().unwrap_or_default()
    }

    /// Answers one call: `(status, body)`. Waits the script's delay first (the call is
    /// recorded after the delay, when it is answered).
    pub(crate) async fn answer(&self, received: Received) -> (u16, Value) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let params = params_of(&received);
        let script = self.next();
        if !script.delay.is_zero() {
            tokio::time::sleep(script.delay).await;
        }
        let (status, body) = match script.kind {
            OAuthKind::Error { status, body } => (status, body),
            OAuthKind::Grant(g) => {
                let grant_type = params.get("grant_type").map(String::as_str);
                if !matches!(grant_type, Some("refresh_token" | "authorization_code")) {
                    (
                        400,
                        json!({ "error": "unsupported_grant_type", "error_description": "grant_type must be refresh_token or authorization_code" }),
                    )
                } else {
                    let n = received.seq;
                    let mut body = json!({
                        "access_token": g.access_token.unwrap_or_else(|| format!("fake-at-{n}")),
                        "id_token": make_id_token(&g.claims),
                        "expires_in": g.claims.expires_in,
                        "token_type": "Bearer",
                        "scope": "openid profile email offline_access",
                    });
                    if !g.omit_refresh_token {
                        body["refresh_token"] = g
                            .refresh_token
                            .unwrap_or_else(|| format!("fake-rt-{n}"))
                            .into();
                    }
                    (200, body)
                }
            }
        };
        self.calls.lock().unwrap().push(OAuthCall {
            received,
            params,
            at: Instant::now(),
            status,
            response: body.clone(),
        });
        (status, body)
    }
}
