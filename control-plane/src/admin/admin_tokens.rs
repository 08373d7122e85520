//! Named admin tokens: create (the secret is returned once; only its SHA-256 is stored),
//! list, revoke. Each token change and its audit entry are written in one transaction.

use tollgate_shared::domain::AdminScope;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_admin_token_request::Expiry;

use super::caller::Caller;
use super::{AdminContext, audit, key_secret, validate as v};
use crate::error::{Error, Result};
use crate::storage::{AdminToken, NewAdminToken};

/// Prefix of named admin tokens, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "tgat_";
const MAX_NAME: usize = 64;

pub async fn create(
    ctx: &AdminContext,
    caller: &Caller,
    req: pb::CreateAdminTokenRequest,
) -> Result<pb::CreateAdminTokenResponse> {
    let entry = audit::entry(caller, "CreateAdminToken", &req);
    let name = token_name(&req.name)?;
    if req.scope.trim().is_empty() {
        return Err(Error::invalid("scope", "required: read, keys or admin"));
    }
    let scope: AdminScope = v::vocab("scope", req.scope.trim())?;
    let now = now_ms();
    let expires_at_ms = match req.expiry {
        None => None,
        Some(Expiry::ExpiresAtMs(at)) => Some(v::future_time("expires_at_ms", at, now)?),
        Some(Expiry::ExpiresInDays(days)) => Some(v::days_after("expires_in_days", now, days)?),
    };
    let secret = key_secret::generate(TOKEN_PREFIX);
    let token = ctx
        .store
        .create_admin_token(
            NewAdminToken {
                name,
                token_hash: key_secret::hash(&secret),
                token_hint: key_secret::hint(&secret),
                scope,
                created_by: caller.name.clone(),
                expires_at_ms,
            },
            entry,
        )
        .await?;
    Ok(pb::CreateAdminTokenResponse {
        token: Some(admin_token(token)),
        secret,
    })
}

pub async fn list(
    ctx: &AdminContext,
    req: pb::ListAdminTokensRequest,
) -> Result<pb::ListAdminTokensResponse> {
    let tokens = ctx.store.list_admin_tokens(req.include_revoked).await?;
    Ok(pb::ListAdminTokensResponse {
        tokens: tokens.into_iter().map(admin_token).collect(),
    })
}

pub async fn revoke(
    ctx: &AdminContext,
    caller: &Caller,
    req: pb::RevokeAdminTokenRequest,
) -> Result<pb::AdminToken> {
    let entry = audit::entry(caller, "RevokeAdminToken", &req);
    let id = v::required_id("id", req.id)?;
    let token = ctx.store.revoke_admin_token(id, entry).await?;
    Ok(admin_token(token))
}

/// 1 to 64 characters of `[A-Za-z0-9._-]`; `bootstrap` is the bootstrap token's actor name.
fn token_name(value: &str) -> Result<String> {
    let name = value.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::invalid(
            "name",
            "may only contain the characters A-Z a-z 0-9 . _ -",
        ));
    }
    if name.eq_ignore_ascii_case("bootstrap") {
        return Err(Error::invalid(
            "name",
            "`bootstrap` names the bootstrap token in the audit log",
        ));
    }
    Ok(name.to_owned())
}

fn admin_token(t: AdminToken) -> pb::AdminToken {
    pb::AdminToken {
        id: t.id,
        name: t.name,
        scope: t.scope.as_str().to_owned(),
        token_hint: t.token_hint,
        created_by: t.created_by,
        expires_at_ms: t.expires_at_ms,
        last_used_at_ms: t.last_used_at_ms,
        revoked_at_ms: t.revoked_at_ms,
        created_at_ms: t.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names() {
        assert_eq!(token_name(" billing-svc.v2 ").unwrap(), "billing-svc.v2");
        for bad in ["", "a b", "x/y", "Bootstrap", &"n".repeat(65)] {
            assert!(token_name(bad).is_err(), "{bad}");
        }
    }
}
