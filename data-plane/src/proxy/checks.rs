//! The spec's authorization checks, in its order, each with its status and code
//! (responses-flow.md §1). The rules themselves are `tollgate_shared::refusal`, which the
//! control plane's Admit applies too; this file runs them in order on the cached
//! `KeyInfo`, the client IP and the time.

use std::net::IpAddr;

use tollgate_shared::refusal::{self, KeyState, Refusal, SubscriptionState, WindowUsage};

use super::auth_info::{GroupInfo, KeyInfo, SubscriptionInfo};
use super::errors::ClientError;

/// `Ok(())` when the key may be used by this client now.
pub fn check(key: &KeyInfo, client_ip: IpAddr, now_ms: i64) -> Result<(), ClientError> {
    refusal(key, client_ip, now_ms).map_err(ClientError::from)
}

/// The first check the key fails: key, IP rules, user, group, then billing.
pub fn refusal(key: &KeyInfo, client_ip: IpAddr, now_ms: i64) -> Result<(), Refusal> {
    refusal::check_key(
        &KeyState {
            status: key.status,
            quota_nanos: key.quota_nanos,
            quota_used_nanos: key.quota_used_nanos,
            expires_at_ms: key.expires_at_ms,
        },
        now_ms,
    )?;
    refusal::check_ip(&key.ip_allow, &key.ip_deny, client_ip)?;
    let user = key.user.as_ref().ok_or(Refusal::UserNotFound)?;
    if !user.active {
        return Err(Refusal::UserInactive);
    }
    if key.group_missing || key.group.as_ref().is_some_and(|g| !g.active) {
        return Err(Refusal::GroupDisabled);
    }
    let group = key.group.as_ref().filter(|g| g.subscription);
    let sub = group
        .zip(key.subscription.as_ref())
        .map(|(g, s)| subscription(g, s));
    refusal::check_billing(group.is_some(), user.balance_nanos, sub.as_ref(), now_ms)?;
    Ok(())
}

fn subscription(g: &GroupInfo, s: &SubscriptionInfo) -> SubscriptionState {
    let window = |limit_nanos, usage_nanos, start_ms| WindowUsage {
        limit_nanos,
        usage_nanos,
        start_ms,
    };
    SubscriptionState {
        active: s.active,
        expires_at_ms: s.expires_at_ms,
        daily: window(
            g.daily_limit_nanos,
            s.daily_usage_nanos,
            s.daily_window_start_ms,
        ),
        weekly: window(
            g.weekly_limit_nanos,
            s.weekly_usage_nanos,
            s.weekly_window_start_ms,
        ),
        monthly: window(
            g.monthly_limit_nanos,
            s.monthly_usage_nanos,
            s.monthly_window_start_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_shared::domain::KeyStatus;
    use tollgate_shared::{DAY_MS, ErrorCode};

    use crate::proxy::auth_info::{UserInfo, parse_net};

    fn key() -> KeyInfo {
        KeyInfo {
            key_id: 1,
            status: Some(KeyStatus::Active),
            quota_nanos: 0,
            quota_used_nanos: 0,
            expires_at_ms: None,
            ip_allow: vec![],
            ip_deny: vec![],
            user: Some(UserInfo {
                user_id: 1,
                active: true,
                balance_nanos: 10,
                concurrency: 5,
            }),
            group: None,
            group_missing: false,
            subscription: None,
        }
    }

    fn code(k: &KeyInfo, ip: &str) -> Option<ErrorCode> {
        check(k, ip.parse().unwrap(), 1_000_000)
            .err()
            .map(|e| e.code)
    }

    #[test]
    fn order_of_checks() {
        let mut k = key();
        assert_eq!(code(&k, "1.2.3.4"), None);
        // Several things wrong at once: the earliest check wins.
        k.user = None;
        k.expires_at_ms = Some(1);
        k.quota_nanos = 5;
        k.quota_used_nanos = 5;
        k.status = Some(KeyStatus::Disabled);
        assert_eq!(code(&k, "1.2.3.4"), Some(ErrorCode::ApiKeyDisabled));
        k.status = Some(KeyStatus::Active);
        assert_eq!(code(&k, "1.2.3.4"), Some(ErrorCode::ApiKeyQuotaExhausted));
        k.quota_nanos = 0;
        assert_eq!(code(&k, "1.2.3.4"), Some(ErrorCode::ApiKeyExpired));
        k.expires_at_ms = None;
        assert_eq!(code(&k, "1.2.3.4"), Some(ErrorCode::UserNotFound));
    }

    #[test]
    fn ip_rules_v4_v6_and_mapped() {
        let mut k = key();
        k.ip_allow = vec![
            parse_net("10.0.0.0/8").unwrap(),
            parse_net("2001:db8::/32").unwrap(),
        ];
        assert_eq!(code(&k, "10.1.2.3"), None);
        assert_eq!(code(&k, "::ffff:10.1.2.3"), None);
        assert_eq!(code(&k, "2001:db8::1"), None);
        assert_eq!(code(&k, "11.0.0.1"), Some(ErrorCode::AccessDenied));
        k.ip_deny = vec![parse_net("10.9.9.9").unwrap()];
        assert_eq!(code(&k, "10.9.9.9"), Some(ErrorCode::AccessDenied));
    }

    #[test]
    fn billing_checks() {
        let mut k = key();
        k.user.as_mut().unwrap().balance_nanos = 0;
        assert_eq!(code(&k, "1.1.1.1"), Some(ErrorCode::InsufficientBalance));
        k.group = Some(GroupInfo {
            group_id: 2,
            active: true,
            subscription: true,
            daily_limit_nanos: 100,
            weekly_limit_nanos: 0,
            monthly_limit_nanos: 0,
            models: vec![],
        });
        assert_eq!(code(&k, "1.1.1.1"), Some(ErrorCode::SubscriptionNotFound));
        k.subscription = Some(SubscriptionInfo {
            active: true,
            expires_at_ms: 2_000_000,
            daily_usage_nanos: 100,
            weekly_usage_nanos: 0,
            monthly_usage_nanos: 0,
            daily_window_start_ms: Some(999_000),
            weekly_window_start_ms: None,
            monthly_window_start_ms: None,
        });
        assert_eq!(code(&k, "1.1.1.1"), Some(ErrorCode::UsageLimitExceeded));
        // A passed window counts as empty.
        k.subscription.as_mut().unwrap().daily_window_start_ms = Some(1_000_000 - DAY_MS);
        assert_eq!(code(&k, "1.1.1.1"), None);
        k.group.as_mut().unwrap().active = false;
        assert_eq!(code(&k, "1.1.1.1"), Some(ErrorCode::GroupDisabled));
    }
}
