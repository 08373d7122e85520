//! API keys: creation (generated or operator-supplied secret, stored only as SHA-256),
//! partial updates, status changes, quota reset and expiry clearing. Every change
//! publishes a key invalidation so data planes drop the cached authorization.

use futures::future::try_join_all;
use tollgate_shared::domain::KeyStatus;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_key_request::Expiry;

use super::{AdminContext, convert, key_secret, page, refs, validate as v};
use crate::error::{Error, Result};
use crate::events::Invalidation;
use crate::model::{ApiKey, KeyPatch, NewApiKey, UsageFilter};

pub async fn create(
    ctx: &AdminContext,
    req: pb::CreateKeyRequest,
) -> Result<pb::CreateKeyResponse> {
    let now = now_ms();
    let user_id = v::required_id("user_id", req.user_id)?;
    let group_id = match req.group_id {
        Some(g) => v::optional_id("group_id", g)?,
        None => None,
    };
    let name = v::optional_name("name", &req.name)?;
    let quota_nanos = v::non_negative_i64("quota_nanos", req.quota_nanos)?;
    let expires_at_ms = match req.expiry {
        None => None,
        Some(Expiry::ExpiresAtMs(at)) => Some(v::future_time("expires_at_ms", at, now)?),
        Some(Expiry::ExpiresInDays(days)) => Some(v::days_after("expires_in_days", now, days)?),
    };
    let ip_allow = v::ip_list("ip_allow", &req.ip_allow)?;
    let ip_deny = v::ip_list("ip_deny", &req.ip_deny)?;
    let custom = !req.custom_key.is_empty();
    let secret = if custom {
        key_secret::custom("custom_key", &req.custom_key)?
    } else {
        key_secret::generate(&ctx.key_prefix)
    };
    refs::user(&ctx.store, "user_id", user_id).await?;
    if let Some(g) = group_id {
        refs::group(&ctx.store, "group_id", g).await?;
    }

    let new = NewApiKey {
        user_id,
        name,
        group_id,
        key_hash: key_secret::hash(&secret),
        key_hint: key_secret::hint(&secret),
        ip_allow,
        ip_deny,
        quota_nanos,
        expires_at_ms,
    };
    let key = ctx.store.create_key(new).await.map_err(|e| match e {
        Error::AlreadyExists(_) if custom => {
            Error::AlreadyExists("an api key with this custom_key".into())
        }
        other => other,
    })?;
    // No invalidation: no cache can hold an entry for an id that did not exist (and an
    // id-scoped message could not reach a negative entry, which is keyed by hash anyway).
    tracing::info!(
        key_id = key.id,
        user_id = key.user_id,
        "admin: api key created"
    );
    Ok(pb::CreateKeyResponse {
        key: Some(convert::api_key(key, Default::default())),
        secret,
    })
}

pub async fn get(ctx: &AdminContext, req: pb::GetKeyRequest) -> Result<pb::ApiKey> {
    let key = ctx.store.get_key(req.id).await?;
    with_usage(ctx, key).await
}

pub async fn list(ctx: &AdminContext, req: pb::ListKeysRequest) -> Result<pb::ListKeysResponse> {
    let user_id = v::optional_id("user_id", req.user_id)?;
    let group_id = v::optional_id("group_id", req.group_id)?;
    let page = page::page(req.page.as_ref())?;
    let paged = ctx.store.list_keys(user_id, group_id, page).await?;
    let keys = try_join_all(paged.items.into_iter().map(|k| with_usage(ctx, k))).await?;
    Ok(pb::ListKeysResponse {
        keys,
        next_page_token: page::next_token(paged.next_after_id),
    })
}

pub async fn update(ctx: &AdminContext, req: pb::UpdateKeyRequest) -> Result<pb::ApiKey> {
    let now = now_ms();
    let patch = KeyPatch {
        name: req
            .name
            .as_deref()
            .map(|n| v::optional_name("name", n))
            .transpose()?,
        group_id: req
            .group_id
            .map(|g| v::optional_id("group_id", g))
            .transpose()?,
        quota_nanos: req
            .quota_nanos
            .map(|q| v::non_negative_i64("quota_nanos", q))
            .transpose()?,
        expires_at_ms: req
            .expires_at_ms
            .map(|at| v::future_time("expires_at_ms", at, now))
            .transpose()?,
        ip_allow: req
            .ip_allow
            .as_ref()
            .map(|l| v::ip_list("ip_allow", &l.values))
            .transpose()?,
        ip_deny: req
            .ip_deny
            .as_ref()
            .map(|l| v::ip_list("ip_deny", &l.values))
            .transpose()?,
    };
    if let Some(Some(g)) = patch.group_id {
        refs::group(&ctx.store, "group_id", g).await?;
    }
    let key = ctx.store.update_key(req.id, patch).await?;
    ctx.invalidations.publish(Invalidation::key(key.id));
    with_usage(ctx, key).await
}

pub async fn disable(ctx: &AdminContext, req: pb::KeyIdRequest) -> Result<pb::ApiKey> {
    let key = ctx
        .store
        .set_key_status(req.id, KeyStatus::Disabled)
        .await?;
    ctx.invalidations.publish(Invalidation::key(key.id));
    with_usage(ctx, key).await
}

/// Lifts a disable. Enabling does not override billing: a key past its quota or its
/// expiry comes back as `quota_exhausted` / `expired` (use ResetKeyQuota /
/// ClearKeyExpiration for those).
pub async fn enable(ctx: &AdminContext, req: pb::KeyIdRequest) -> Result<pb::ApiKey> {
    let current = ctx.store.get_key(req.id).await?;
    let status = enabled_status(&current, now_ms());
    let key = if status == current.status {
        current
    } else {
        ctx.store.set_key_status(req.id, status).await?
    };
    ctx.invalidations.publish(Invalidation::key(key.id));
    with_usage(ctx, key).await
}

pub async fn delete(ctx: &AdminContext, req: pb::KeyIdRequest) -> Result<pb::DeleteKeyResponse> {
    ctx.store.delete_key(req.id).await?;
    ctx.invalidations.publish(Invalidation::key(req.id));
    tracing::info!(key_id = req.id, "admin: api key deleted");
    Ok(pb::DeleteKeyResponse {})
}

pub async fn reset_quota(ctx: &AdminContext, req: pb::KeyIdRequest) -> Result<pb::ApiKey> {
    let key = ctx.store.reset_key_quota(req.id).await?;
    ctx.invalidations.publish(Invalidation::key(key.id));
    with_usage(ctx, key).await
}

pub async fn clear_expiration(ctx: &AdminContext, req: pb::KeyIdRequest) -> Result<pb::ApiKey> {
    let key = ctx.store.clear_key_expiration(req.id).await?;
    ctx.invalidations.publish(Invalidation::key(key.id));
    with_usage(ctx, key).await
}

/// The status a key has once any disable is lifted.
fn enabled_status(key: &ApiKey, now_ms: i64) -> KeyStatus {
    if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        KeyStatus::Expired
    } else if key.quota_nanos > 0 && key.quota_used_nanos >= key.quota_nanos {
        KeyStatus::QuotaExhausted
    } else {
        KeyStatus::Active
    }
}

async fn with_usage(ctx: &AdminContext, key: ApiKey) -> Result<pb::ApiKey> {
    let filter = UsageFilter {
        key_id: Some(key.id),
        ..UsageFilter::default()
    };
    let usage = ctx.store.usage_totals(&filter).await?;
    Ok(convert::api_key(key, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(quota: i64, used: i64, expires: Option<i64>) -> ApiKey {
        ApiKey {
            id: 1,
            user_id: 1,
            name: String::new(),
            group_id: None,
            status: KeyStatus::Disabled,
            ip_allow: vec![],
            ip_deny: vec![],
            quota_nanos: quota,
            quota_used_nanos: used,
            expires_at_ms: expires,
            key_hint: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
            last_used_at_ms: None,
        }
    }

    #[test]
    fn enabling_respects_quota_and_expiry() {
        assert_eq!(enabled_status(&key(0, 5, None), 10), KeyStatus::Active);
        assert_eq!(enabled_status(&key(10, 5, Some(11)), 10), KeyStatus::Active);
        assert_eq!(
            enabled_status(&key(10, 10, None), 10),
            KeyStatus::QuotaExhausted
        );
        assert_eq!(
            enabled_status(&key(10, 0, Some(10)), 10),
            KeyStatus::Expired
        );
    }
}
