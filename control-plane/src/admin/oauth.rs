//! Onboarding subscription (OAuth) logins: `GenerateOAuthUrl` hands out an authorization
//! URL (PKCE S256 + state) and keeps the verifier in memory under a session id;
//! `ExchangeOAuthCode` trades the returned code for tokens and creates the account from
//! them and the id token's claims.
//!
//! Codes, verifiers and tokens are never logged and never appear in an error.

use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, account_urls, accounts, refs, validate as v};
use crate::error::{Error, Result};
use crate::oauth::claims::{self, IdClaims};
use crate::oauth::client::TokenResponse;
use crate::oauth::onboarding::parse_callback;

/// Longest code accepted (real ones are far shorter).
const MAX_CODE_LEN: usize = 4_096;

pub async fn generate_url(
    ctx: &AdminContext,
    req: pb::GenerateOAuthUrlRequest,
) -> Result<pb::GenerateOAuthUrlResponse> {
    let a = ctx.oauth.start(&req.redirect_uri)?;
    tracing::info!("admin: OAuth authorization URL generated");
    Ok(pb::GenerateOAuthUrlResponse {
        auth_url: a.url,
        session_id: a.session_id,
        state: a.state,
        expires_at_ms: a.expires_at_ms,
    })
}

/// Trades the code for tokens and creates the account: check the request, spend the
/// single-use code, read the login's claims, create the account.
pub async fn exchange_code(
    ctx: &AdminContext,
    req: pb::ExchangeOAuthCodeRequest,
) -> Result<pb::Account> {
    let callback = parse_code(&req)?;
    // Everything the account needs is checked before the single-use code is spent.
    let fields = account_fields(ctx, &req).await?;
    let tokens = spend_code(ctx, &callback, &fields.proxy_url).await?;
    let login = Login::from_tokens(tokens);
    let plan = login.claims.chatgpt_plan_type.clone();
    let account = accounts::create(ctx, login.create_request(fields, req)).await?;
    tracing::info!(
        account_id = account.id,
        plan,
        "admin: OAuth login onboarded"
    );
    Ok(account)
}

/// The code the operator pasted (alone or as the whole callback URL), its onboarding
/// session, and the state to match if one was given.
struct Callback {
    session_id: String,
    code: String,
    state: Option<String>,
}

fn parse_code(req: &pb::ExchangeOAuthCodeRequest) -> Result<Callback> {
    let session_id = req.session_id.trim();
    if session_id.is_empty() {
        return Err(Error::invalid("session_id", "is required"));
    }
    let (code, callback_state) = parse_callback(&req.code);
    if code.is_empty() {
        return Err(Error::invalid("code", "is required"));
    }
    if code.len() > MAX_CODE_LEN || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "code",
            "is not an authorization code (printable ASCII, no spaces)",
        ));
    }
    let state = match (req.state.trim(), callback_state) {
        ("", s) => s,
        (given, _) => Some(given.to_owned()),
    };
    Ok(Callback {
        session_id: session_id.to_owned(),
        code,
        state,
    })
}

/// The operator's account fields, validated.
struct AccountFields {
    name: String,
    proxy_url: String,
    notes: String,
}

async fn account_fields(
    ctx: &AdminContext,
    req: &pb::ExchangeOAuthCodeRequest,
) -> Result<AccountFields> {
    let name = v::optional_name("name", &req.name)?;
    let proxy_url = account_urls::proxy_url("proxy_url", &req.proxy_url)?;
    if let Some(c) = req.concurrency {
        v::non_negative_i32("concurrency", c)?;
    }
    let notes = v::text("notes", &req.notes)?;
    for g in &req.groups {
        refs::group(&ctx.store, "groups", v::required_id("groups", g.group_id)?).await?;
    }
    Ok(AccountFields {
        name,
        proxy_url,
        notes,
    })
}

/// Takes the onboarding session and exchanges the code. On a state mismatch or a failed
/// exchange the session stays usable until it expires (a fresh code can be tried).
async fn spend_code(
    ctx: &AdminContext,
    callback: &Callback,
    proxy_url: &str,
) -> Result<TokenResponse> {
    let session_id = callback.session_id.as_str();
    let pending = ctx.oauth.take(session_id).ok_or_else(|| {
        Error::invalid(
            "session_id",
            "unknown or expired: generate a new authorization URL",
        )
    })?;
    if let Some(state) = &callback.state
        && *state != pending.state
    {
        ctx.oauth.put_back(session_id, pending);
        return Err(Error::invalid(
            "state",
            "does not match the session's authorization URL",
        ));
    }
    match ctx
        .oauth
        .exchange(&pending, &callback.code, proxy_url)
        .await
    {
        Ok(t) => Ok(t),
        Err(e) => {
            ctx.oauth.put_back(session_id, pending);
            tracing::warn!(error = %e, "admin: OAuth code exchange failed");
            Err(Error::FailedPrecondition(format!(
                "the code exchange failed: {e}"
            )))
        }
    }
}

/// The tokens of a new login and what its id token says about it.
struct Login {
    tokens: TokenResponse,
    id_token: String,
    claims: IdClaims,
    expires_at_ms: Option<i64>,
}

impl Login {
    /// Unreadable claims are logged and left empty: the tokens still work.
    fn from_tokens(tokens: TokenResponse) -> Self {
        let id_token = tokens.id_token.clone().unwrap_or_default();
        let claims = if id_token.trim().is_empty() {
            IdClaims::default()
        } else {
            claims::decode(&id_token).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "admin: the id token's claims cannot be read");
                IdClaims::default()
            })
        };
        let now = tollgate_shared::now_ms();
        let expires_at_ms = tokens
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| now.saturating_add(s.saturating_mul(1000)))
            .or_else(|| {
                claims::decode(&tokens.access_token)
                    .ok()
                    .and_then(|c| c.expires_at_ms)
            });
        Self {
            tokens,
            id_token,
            claims,
            expires_at_ms,
        }
    }

    /// The account to create: named after the operator's choice, else the login's
    /// email or ChatGPT account; noted with the plan unless the operator wrote notes.
    fn create_request(
        self,
        fields: AccountFields,
        req: pb::ExchangeOAuthCodeRequest,
    ) -> pb::CreateAccountRequest {
        let claims = self.claims;
        let name = if !fields.name.is_empty() {
            fields.name
        } else if !claims.email.is_empty() {
            claims.email.clone()
        } else if !claims.chatgpt_account_id.is_empty() {
            format!("chatgpt-{}", claims.chatgpt_account_id)
        } else {
            "chatgpt-login".to_owned()
        };
        let notes = if fields.notes.is_empty() && !claims.chatgpt_plan_type.is_empty() {
            format!("ChatGPT plan: {}", claims.chatgpt_plan_type)
        } else {
            fields.notes
        };
        pb::CreateAccountRequest {
            name,
            credential: Some(pb::create_account_request::Credential::Oauth(
                pb::OAuthCredential {
                    access_token: self.tokens.access_token,
                    refresh_token: self.tokens.refresh_token.unwrap_or_default(),
                    expires_at_ms: self.expires_at_ms,
                    chatgpt_account_id: claims.chatgpt_account_id,
                    id_token: self.id_token,
                },
            )),
            concurrency: req.concurrency,
            priority: req.priority,
            proxy_url: fields.proxy_url,
            groups: req.groups,
            notes,
            ..Default::default()
        }
    }
}
