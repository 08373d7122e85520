//! Upstream accounts. Credentials are write-only: validated and handed to storage (which
//! encrypts them), never returned and never echoed in errors or logs.

use std::collections::{BTreeMap, HashMap, HashSet};

use tollgate_shared::Multiplier;
use tollgate_shared::domain::{AccountKind, AccountStatus, Platform};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::{create_account_request, update_account_request};

use super::account_urls::{self, DEFAULT_BASE_URL};
use super::{AdminContext, convert, page, refs, validate as v};
use crate::error::{Error, Result};
use crate::events::{Change, Invalidation};
use crate::model::{AccountGroup, AccountPatch, Credential, NewAccount};
use crate::storage::Store;

const DEFAULT_CONCURRENCY: i32 = 3;
const DEFAULT_PRIORITY: i32 = 50;
const MAX_SECRET_LEN: usize = 20_000;

/// A validated credential plus the OAuth facts that live next to it on the account.
struct CredentialInput {
    credential: Credential,
    expires_at_ms: Option<i64>,
    chatgpt_account_id: String,
}

pub async fn create(ctx: &AdminContext, req: pb::CreateAccountRequest) -> Result<pb::Account> {
    let name = v::required_name("name", &req.name)?;
    let platform = v::vocab_or("platform", &req.platform, Platform::OpenAi)?;
    let cred = match &req.credential {
        None => {
            return Err(Error::invalid(
                "credential",
                "is required: give api_key or oauth",
            ));
        }
        Some(create_account_request::Credential::ApiKey(c)) => api_key_credential(c)?,
        Some(create_account_request::Credential::Oauth(c)) => oauth_credential(c)?,
    };
    let base_url = base_url_for(ctx, cred.credential.kind(), &req.base_url)?;
    let concurrency = v::non_negative_i32(
        "concurrency",
        req.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
    )?;
    let priority = if req.priority == 0 {
        DEFAULT_PRIORITY
    } else {
        req.priority
    };
    let model_mapping = model_mapping(&req.model_mapping)?;
    let proxy_url = account_urls::proxy_url("proxy_url", &req.proxy_url)?;
    let user_agent = v::header_text("user_agent", &req.user_agent)?;
    let cost_multiplier =
        v::multiplier_or("cost_multiplier", &req.cost_multiplier, Multiplier::ONE)?;
    let notes = v::text("notes", &req.notes)?;
    let groups = groups(&ctx.store, &req.groups).await?;

    let new = NewAccount {
        name,
        platform,
        base_url,
        credential: cred.credential,
        concurrency,
        priority,
        model_mapping,
        proxy_url,
        user_agent,
        expires_at_ms: cred.expires_at_ms,
        chatgpt_account_id: cred.chatgpt_account_id,
        cost_multiplier,
        notes,
        groups,
    };
    // Data planes are not told: nothing can be cached there about an account that did
    // not exist, and every message makes them distrust authorizations loading at that
    // moment. The control plane's snapshot caches account lists, which it joins.
    let account = ctx.store.create_account(new).await?;
    ctx.invalidations
        .publish_local(Change::Invalidated(Invalidation::account(account.id)));
    tracing::info!(account_id = account.id, kind = %account.kind, "admin: account created");
    Ok(convert::account(account))
}

pub async fn get(ctx: &AdminContext, req: pb::GetAccountRequest) -> Result<pb::Account> {
    Ok(convert::account(ctx.store.get_account(req.id).await?))
}

pub async fn list(
    ctx: &AdminContext,
    req: pb::ListAccountsRequest,
) -> Result<pb::ListAccountsResponse> {
    let group_id = v::optional_id("group_id", req.group_id)?;
    let status = v::vocab_filter::<AccountStatus>("status", &req.status)?;
    let page = page::page(req.page.as_ref())?;
    let paged = ctx.store.list_accounts(group_id, status, page).await?;
    Ok(pb::ListAccountsResponse {
        accounts: paged.items.into_iter().map(convert::account).collect(),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

pub async fn update(ctx: &AdminContext, req: pb::UpdateAccountRequest) -> Result<pb::Account> {
    // The kind decides which credential and base URL are acceptable.
    let current = ctx.store.get_account(req.id).await?;
    let kind = current.kind;
    let mut patch = AccountPatch {
        name: req
            .name
            .as_deref()
            .map(|n| v::required_name("name", n))
            .transpose()?,
        base_url: req
            .base_url
            .as_deref()
            .map(|u| base_url_for(ctx, kind, u))
            .transpose()?,
        concurrency: req
            .concurrency
            .map(|c| v::non_negative_i32("concurrency", c))
            .transpose()?,
        priority: req.priority,
        status: req.status.as_deref().map(settable_status).transpose()?,
        schedulable: req.schedulable,
        model_mapping: req
            .model_mapping
            .as_ref()
            .map(|m| model_mapping(&m.entries))
            .transpose()?,
        proxy_url: req
            .proxy_url
            .as_deref()
            .map(|p| account_urls::proxy_url("proxy_url", p))
            .transpose()?,
        user_agent: req
            .user_agent
            .as_deref()
            .map(|u| v::header_text("user_agent", u))
            .transpose()?,
        cost_multiplier: req
            .cost_multiplier
            .as_deref()
            .map(|m| v::multiplier("cost_multiplier", m))
            .transpose()?,
        notes: req
            .notes
            .as_deref()
            .map(|n| v::text("notes", n))
            .transpose()?,
        ..AccountPatch::default()
    };
    let cred = match &req.credential {
        None => None,
        Some(update_account_request::Credential::ApiKey(c)) => Some(api_key_credential(c)?),
        Some(update_account_request::Credential::Oauth(c)) => Some(oauth_credential(c)?),
    };
    if let Some(cred) = cred {
        if cred.credential.kind() != kind {
            return Err(Error::invalid(
                "credential",
                format!(
                    "this is an {kind} account; it takes a {kind} credential, not {}",
                    cred.credential.kind()
                ),
            ));
        }
        if kind == AccountKind::OAuth {
            patch.expires_at_ms = Some(cred.expires_at_ms);
            if !cred.chatgpt_account_id.is_empty() {
                patch.chatgpt_account_id = Some(cred.chatgpt_account_id);
            }
        }
        patch.credential = Some(cred.credential);
    }
    let account = ctx.store.update_account(req.id, patch).await?;
    ctx.invalidations.publish(Invalidation::account(account.id));
    Ok(convert::account(account))
}

pub async fn delete(
    ctx: &AdminContext,
    req: pb::DeleteAccountRequest,
) -> Result<pb::DeleteAccountResponse> {
    ctx.store.delete_account(req.id).await?;
    ctx.invalidations.publish(Invalidation::account(req.id));
    tracing::info!(account_id = req.id, "admin: account deleted");
    Ok(pb::DeleteAccountResponse {})
}

pub async fn set_groups(
    ctx: &AdminContext,
    req: pb::SetAccountGroupsRequest,
) -> Result<pb::Account> {
    let groups = groups(&ctx.store, &req.groups).await?;
    let account = ctx.store.set_account_groups(req.account_id, groups).await?;
    ctx.invalidations.publish(Invalidation::account(account.id));
    Ok(convert::account(account))
}

pub async fn clear_error(ctx: &AdminContext, req: pb::AccountIdRequest) -> Result<pb::Account> {
    let account = ctx.store.clear_account_error(req.id).await?;
    ctx.invalidations.publish(Invalidation::account(account.id));
    Ok(convert::account(account))
}

pub async fn clear_rate_limit(
    ctx: &AdminContext,
    req: pb::AccountIdRequest,
) -> Result<pb::Account> {
    let account = ctx.store.clear_account_rate_limit(req.id).await?;
    ctx.invalidations.publish(Invalidation::account(account.id));
    Ok(convert::account(account))
}

fn api_key_credential(c: &pb::ApiKeyCredential) -> Result<CredentialInput> {
    Ok(CredentialInput {
        credential: Credential::ApiKey {
            api_key: secret("api_key", &c.api_key)?,
        },
        expires_at_ms: None,
        chatgpt_account_id: String::new(),
    })
}

fn oauth_credential(c: &pb::OAuthCredential) -> Result<CredentialInput> {
    let access_token = secret("oauth.access_token", &c.access_token)?;
    let refresh_token = optional_secret("oauth.refresh_token", &c.refresh_token)?;
    let id_token = optional_secret("oauth.id_token", &c.id_token)?;
    let chatgpt_account_id =
        v::header_text("oauth.chatgpt_account_id", c.chatgpt_account_id.trim())?;
    if let Some(at) = c.expires_at_ms {
        v::non_negative_i64("oauth.expires_at_ms", at)?;
    }
    Ok(CredentialInput {
        credential: Credential::OAuth {
            access_token,
            refresh_token,
            id_token,
        },
        expires_at_ms: c.expires_at_ms,
        chatgpt_account_id,
    })
}

/// A required secret. Goes into an `Authorization` header, so visible ASCII only. The
/// error never echoes the value.
fn secret(field: &str, value: &str) -> Result<String> {
    let s = value.trim();
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    optional_secret(field, s)
}

fn optional_secret(field: &str, value: &str) -> Result<String> {
    let s = value.trim();
    if s.len() > MAX_SECRET_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_SECRET_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(s.to_owned())
}

/// API-key accounts: the validated base URL, or the default when empty. OAuth accounts
/// have no base URL (their upstream is configured once for the control plane).
fn base_url_for(ctx: &AdminContext, kind: AccountKind, value: &str) -> Result<String> {
    match kind {
        AccountKind::ApiKey if value.trim().is_empty() => Ok(DEFAULT_BASE_URL.to_owned()),
        AccountKind::ApiKey => account_urls::base_url(&ctx.upstream_policy, "base_url", value),
        AccountKind::OAuth if value.trim().is_empty() => Ok(String::new()),
        AccountKind::OAuth => Err(Error::invalid(
            "base_url",
            "only api_key accounts have a base_url",
        )),
    }
}

/// Operators set `active` or `disabled`; `error` is the health rules' to set and
/// ClearAccountError's to clear.
fn settable_status(value: &str) -> Result<AccountStatus> {
    match v::vocab("status", value)? {
        AccountStatus::Error => Err(Error::invalid(
            "status",
            "must be active or disabled (use ClearAccountError to clear an error)",
        )),
        s => Ok(s),
    }
}

fn model_mapping(m: &HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    m.iter()
        .map(|(from, to)| {
            let from = from.trim();
            let to = to.trim();
            if from.is_empty() || to.is_empty() {
                return Err(Error::invalid(
                    "model_mapping",
                    "model names must not be empty",
                ));
            }
            Ok((
                v::optional_name("model_mapping", from)?,
                v::optional_name("model_mapping", to)?,
            ))
        })
        .collect()
}

/// Memberships: each group live, none twice.
async fn groups(store: &Store, given: &[pb::AccountGroup]) -> Result<Vec<AccountGroup>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(given.len());
    for g in given {
        let id = v::required_id("groups", g.group_id)?;
        if !seen.insert(id) {
            return Err(Error::invalid(
                "groups",
                format!("group {id} is listed twice"),
            ));
        }
        out.push(AccountGroup {
            group_id: id,
            priority: g.priority,
        });
    }
    for g in &out {
        refs::group(store, "groups", g.group_id).await?;
    }
    Ok(out)
}
