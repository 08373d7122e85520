//! Authorize: resolve a key hash to everything the data plane's auth checks need, in
//! the spec's order (key, user, group, subscription). The data plane applies the checks
//! and caches the answer; invalidations make the cache drop it when anything changes.

use std::collections::BTreeSet;

use tollgate_shared::domain::GroupKind;
use tollgate_shared::proto::gateway::v1 as pb;

use crate::error::{Error, Result};
use crate::storage::Store;

/// Positive answers may be cached this long (invalidations usually drop them sooner).
pub const POSITIVE_TTL_MS: u32 = 30_000;
/// Unknown keys are cached briefly so a flood of bad keys doesn't reach the database.
pub const NEGATIVE_TTL_MS: u32 = 5_000;

fn is_valid_hash(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub async fn authorize(store: &Store, key_hash: &str) -> Result<pb::AuthorizeResponse> {
    if !is_valid_hash(key_hash) {
        return Err(Error::invalid(
            "key_hash",
            "must be 64 lower-case hex characters",
        ));
    }
    let Some(key) = store.get_key_by_hash(key_hash).await? else {
        return Ok(pb::AuthorizeResponse {
            key: None,
            ttl_ms: NEGATIVE_TTL_MS,
        });
    };
    let user = match store.get_user(key.user_id).await {
        Ok(u) => Some(pb::UserAuth {
            user_id: u.id,
            status: u.status.as_str().to_owned(),
            balance_nanos: u.balance_nanos,
            concurrency: u.concurrency,
        }),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let mut group_missing = false;
    let mut group = None;
    let mut subscription = None;
    if let Some(gid) = key.group_id {
        match store.get_group(gid).await {
            Ok(g) => {
                if g.kind == GroupKind::Subscription {
                    subscription = store
                        .active_subscription(key.user_id, gid, tollgate_shared::now_ms())
                        .await?
                        .map(|s| pb::SubscriptionAuth {
                            subscription_id: s.id,
                            status: s.status.as_str().to_owned(),
                            expires_at_ms: s.expires_at_ms,
                            daily_usage_nanos: s.daily_usage_nanos,
                            weekly_usage_nanos: s.weekly_usage_nanos,
                            monthly_usage_nanos: s.monthly_usage_nanos,
                            daily_window_start_ms: s.daily_window_start_ms,
                            weekly_window_start_ms: s.weekly_window_start_ms,
                            monthly_window_start_ms: s.monthly_window_start_ms,
                        });
                }
                let models = group_models(store, Some(gid)).await?;
                group = Some(pb::GroupAuth {
                    group_id: g.id,
                    status: g.status.as_str().to_owned(),
                    kind: g.kind.as_str().to_owned(),
                    rate_multiplier: g.rate_multiplier.to_string(),
                    daily_limit_nanos: g.daily_limit_nanos,
                    weekly_limit_nanos: g.weekly_limit_nanos,
                    monthly_limit_nanos: g.monthly_limit_nanos,
                    models,
                });
            }
            Err(Error::NotFound(_)) => group_missing = true,
            Err(e) => return Err(e),
        }
    }
    Ok(pb::AuthorizeResponse {
        key: Some(pb::KeyAuth {
            key_id: key.id,
            key_status: key.status.as_str().to_owned(),
            quota_nanos: key.quota_nanos,
            quota_used_nanos: key.quota_used_nanos,
            expires_at_ms: key.expires_at_ms,
            ip_allow: key.ip_allow,
            ip_deny: key.ip_deny,
            user,
            group,
            group_missing,
            subscription,
        }),
        ttl_ms: POSITIVE_TTL_MS,
    })
}

/// Models a group's accounts declare through their model mappings (sorted, distinct).
/// Empty when no account maps models: the data plane then lists its default models.
async fn group_models(store: &Store, group_id: Option<i64>) -> Result<Vec<String>> {
    let accounts = store.list_group_accounts(group_id).await?;
    let set: BTreeSet<String> = accounts
        .into_iter()
        .flat_map(|a| a.model_mapping.into_keys())
        .collect();
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_shape() {
        assert!(is_valid_hash(&"a".repeat(64)));
        assert!(!is_valid_hash(&"A".repeat(64)));
        assert!(!is_valid_hash("abc"));
    }
}
