//! The spec's authorization checks, in its order, each with its status and code
//! (responses-flow.md §1). Pure: the cached `KeyInfo`, the client IP and the time in.

use std::net::IpAddr;

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::KeyStatus;

use super::auth_info::{KeyInfo, SubscriptionInfo};
use super::errors::ClientError;

const DAY_MS: i64 = 24 * 3_600_000;

/// `Ok(())` when the key may be used by this client now.
pub fn check(key: &KeyInfo, client_ip: IpAddr, now_ms: i64) -> Result<(), ClientError> {
    let err = |code, msg: &str| Err(ClientError::new(code, msg));
    match key.status {
        Some(KeyStatus::Active | KeyStatus::QuotaExhausted | KeyStatus::Expired) => {}
        Some(KeyStatus::Disabled) | None => {
            return err(ErrorCode::ApiKeyDisabled, "API key is disabled");
        }
    }
    if key.status == Some(KeyStatus::QuotaExhausted)
        || (key.quota_nanos > 0 && key.quota_used_nanos >= key.quota_nanos)
    {
        return err(ErrorCode::ApiKeyQuotaExhausted, "API key quota exhausted");
    }
    if key.status == Some(KeyStatus::Expired) || key.expires_at_ms.is_some_and(|t| t <= now_ms) {
        return err(ErrorCode::ApiKeyExpired, "API key has expired");
    }
    let ip = canonical(client_ip);
    if key.ip_deny.iter().any(|n| n.contains(&ip))
        || (!key.ip_allow.is_empty() && !key.ip_allow.iter().any(|n| n.contains(&ip)))
    {
        return err(
            ErrorCode::AccessDenied,
            "Access denied: client IP is not allowed for this API key",
        );
    }
    let Some(user) = &key.user else {
        return err(ErrorCode::UserNotFound, "User not found");
    };
    if !user.active {
        return err(ErrorCode::UserInactive, "User is not active");
    }
    if key.group_missing || key.group.as_ref().is_some_and(|g| !g.active) {
        return err(ErrorCode::GroupDisabled, "Group is disabled");
    }
    match &key.group {
        Some(g) if g.subscription => {
            let Some(sub) = key
                .subscription
                .as_ref()
                .filter(|s| s.active && s.expires_at_ms > now_ms)
            else {
                return err(
                    ErrorCode::SubscriptionNotFound,
                    "No active subscription for this group",
                );
            };
            if let Some(msg) = over_limit(
                sub,
                g.daily_limit_nanos,
                g.weekly_limit_nanos,
                g.monthly_limit_nanos,
                now_ms,
            ) {
                return err(ErrorCode::UsageLimitExceeded, msg);
            }
        }
        _ => {
            if user.balance_nanos <= 0 {
                return err(ErrorCode::InsufficientBalance, "Insufficient balance");
            }
        }
    }
    Ok(())
}

/// The first subscription window whose usage reached its limit (a limit counts when > 0;
/// a window that has passed counts as empty).
pub fn over_limit(
    sub: &SubscriptionInfo,
    daily: i64,
    weekly: i64,
    monthly: i64,
    now_ms: i64,
) -> Option<&'static str> {
    let used = |usage: i64, start: Option<i64>, len: i64| match start {
        Some(s) if now_ms - s < len => usage,
        _ => 0,
    };
    if daily > 0 && used(sub.daily_usage_nanos, sub.daily_window_start_ms, DAY_MS) >= daily {
        return Some("daily usage limit exceeded");
    }
    if weekly > 0
        && used(
            sub.weekly_usage_nanos,
            sub.weekly_window_start_ms,
            7 * DAY_MS,
        ) >= weekly
    {
        return Some("weekly usage limit exceeded");
    }
    if monthly > 0
        && used(
            sub.monthly_usage_nanos,
            sub.monthly_window_start_ms,
            30 * DAY_MS,
        ) >= monthly
    {
        return Some("monthly usage limit exceeded");
    }
    None
}

/// IPv4-mapped IPv6 peers (`::ffff:1.2.3.4`, from dual-stack sockets) are matched as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::auth_info::{GroupInfo, UserInfo, parse_net};

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
    fn each_subscription_window_has_its_own_limit() {
        let now = 100 * DAY_MS;
        let sub = |d: i64, w: i64, m: i64| SubscriptionInfo {
            active: true,
            expires_at_ms: now + DAY_MS,
            daily_usage_nanos: d,
            weekly_usage_nanos: w,
            monthly_usage_nanos: m,
            daily_window_start_ms: Some(now - 1),
            weekly_window_start_ms: Some(now - 1),
            monthly_window_start_ms: Some(now - 1),
        };
        assert_eq!(
            over_limit(&sub(10, 10, 10), 10, 20, 30, now),
            Some("daily usage limit exceeded")
        );
        assert_eq!(
            over_limit(&sub(5, 20, 10), 10, 20, 30, now),
            Some("weekly usage limit exceeded")
        );
        assert_eq!(
            over_limit(&sub(5, 5, 30), 10, 20, 30, now),
            Some("monthly usage limit exceeded")
        );
        assert_eq!(over_limit(&sub(5, 5, 5), 10, 20, 30, now), None);
        // A limit of 0 means none.
        assert_eq!(over_limit(&sub(99, 99, 99), 0, 0, 0, now), None);
        // Passed windows count as empty: 7 days for weekly, 30 for monthly.
        let mut s = sub(0, 20, 30);
        s.weekly_window_start_ms = Some(now - 7 * DAY_MS);
        s.monthly_window_start_ms = Some(now - 30 * DAY_MS);
        assert_eq!(over_limit(&s, 10, 20, 30, now), None);
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
