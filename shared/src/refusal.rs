//! The refusal rules both planes enforce, written once (responses-flow.md §1 and §3.3).
//! The data plane applies them to its cached key info before admission; the control plane
//! applies them again at Admit, since the data plane's copy may be stale. Each plane turns
//! its own types into these small inputs; the functions are pure (the time comes in).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::domain::{BillingMode, KeyStatus};
use crate::{DAY_MS, ErrorCode};

/// Why a request may not run. The same case gives the same code and message in both
/// planes; only the billing re-check after the wait answers with its own code
/// ([`Refusal::recheck_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    KeyDisabled,
    KeyQuotaExhausted,
    KeyExpired,
    IpNotAllowed,
    UserNotFound,
    UserInactive,
    GroupDisabled,
    NoSubscription,
    UsageLimit(Window),
    InsufficientBalance,
}

impl Refusal {
    /// The code of the authorization checks (§1).
    pub fn code(self) -> ErrorCode {
        match self {
            Self::KeyDisabled => ErrorCode::ApiKeyDisabled,
            Self::KeyQuotaExhausted => ErrorCode::ApiKeyQuotaExhausted,
            Self::KeyExpired => ErrorCode::ApiKeyExpired,
            Self::IpNotAllowed => ErrorCode::AccessDenied,
            Self::UserNotFound => ErrorCode::UserNotFound,
            Self::UserInactive => ErrorCode::UserInactive,
            Self::GroupDisabled => ErrorCode::GroupDisabled,
            Self::NoSubscription => ErrorCode::SubscriptionNotFound,
            Self::UsageLimit(_) => ErrorCode::UsageLimitExceeded,
            Self::InsufficientBalance => ErrorCode::InsufficientBalance,
        }
    }

    /// The code Admit's billing re-check answers with (§3.3: balance or subscription
    /// changed while the request waited): `billing_error` 403 for every billing refusal.
    /// The message is the same as at authorization.
    pub fn recheck_code(self) -> ErrorCode {
        match self {
            Self::NoSubscription | Self::UsageLimit(_) | Self::InsufficientBalance => {
                ErrorCode::BillingRejected
            }
            other => other.code(),
        }
    }

    /// The client-visible message: the code's (error-code table), or for a usage limit
    /// the window's.
    pub fn message(self) -> &'static str {
        match self {
            Self::UsageLimit(w) => w.limit_message(),
            other => other.code().message(),
        }
    }
}

/// The key's own checks, in the spec's order: disabled (or an unknown status), quota
/// exhausted, expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// `None`: a status this build does not know, treated as disabled.
    pub status: Option<KeyStatus>,
    /// 0 = no quota.
    pub quota_nanos: i64,
    pub quota_used_nanos: i64,
    pub expires_at_ms: Option<i64>,
}

pub fn check_key(key: &KeyState, now_ms: i64) -> Result<(), Refusal> {
    match key.status {
        Some(KeyStatus::Active | KeyStatus::QuotaExhausted | KeyStatus::Expired) => {}
        Some(KeyStatus::Disabled) | None => return Err(Refusal::KeyDisabled),
    }
    if key.status == Some(KeyStatus::QuotaExhausted)
        || (key.quota_nanos > 0 && key.quota_used_nanos >= key.quota_nanos)
    {
        return Err(Refusal::KeyQuotaExhausted);
    }
    if key.status == Some(KeyStatus::Expired) || key.expires_at_ms.is_some_and(|t| t <= now_ms) {
        return Err(Refusal::KeyExpired);
    }
    Ok(())
}

/// The key's IP rules: a deny list hit, or a non-empty allow list missed, refuses.
/// Only the data plane knows the client IP, so only it applies them.
pub fn check_ip(allow: &[IpNet], deny: &[IpNet], client_ip: IpAddr) -> Result<(), Refusal> {
    let ip = canonical(client_ip);
    if deny.iter().any(|n| n.contains(&ip))
        || (!allow.is_empty() && !allow.iter().any(|n| n.contains(&ip)))
    {
        return Err(Refusal::IpNotAllowed);
    }
    Ok(())
}

/// IPv4-mapped IPv6 peers (`::ffff:1.2.3.4`, from dual-stack sockets) are matched as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A subscription usage window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Daily,
    Weekly,
    Monthly,
}

impl Window {
    pub const ALL: [Window; 3] = [Self::Daily, Self::Weekly, Self::Monthly];

    /// How long a window lasts from its start.
    pub const fn len_ms(self) -> i64 {
        match self {
            Self::Daily => DAY_MS,
            Self::Weekly => 7 * DAY_MS,
            Self::Monthly => 30 * DAY_MS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    fn limit_message(self) -> &'static str {
        match self {
            Self::Daily => "daily usage limit exceeded",
            Self::Weekly => "weekly usage limit exceeded",
            Self::Monthly => "monthly usage limit exceeded",
        }
    }
}

/// One window of a subscription: the group's limit and the subscription's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowUsage {
    /// 0 (or less) = no limit.
    pub limit_nanos: i64,
    pub usage_nanos: i64,
    pub start_ms: Option<i64>,
}

/// A subscription the billing check may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState {
    /// Active status (and, for the control plane, the right user and group).
    pub active: bool,
    pub expires_at_ms: i64,
    pub daily: WindowUsage,
    pub weekly: WindowUsage,
    pub monthly: WindowUsage,
}

impl SubscriptionState {
    /// The first window whose usage reached its limit. A limit counts when > 0; a window
    /// that has passed (or never started) counts as empty.
    pub fn over_limit(&self, now_ms: i64) -> Option<Window> {
        Window::ALL.into_iter().find(|&w| {
            let u = self.window(w);
            let used = match u.start_ms {
                Some(s) if now_ms.saturating_sub(s) < w.len_ms() => u.usage_nanos,
                _ => 0,
            };
            u.limit_nanos > 0 && used >= u.limit_nanos
        })
    }

    fn window(&self, w: Window) -> &WindowUsage {
        match w {
            Window::Daily => &self.daily,
            Window::Weekly => &self.weekly,
            Window::Monthly => &self.monthly,
        }
    }
}

/// How the request will be charged, or why it may not run: a subscription group needs an
/// active, unexpired subscription under every window's limit (the balance does not
/// matter then); otherwise the balance must be above zero.
pub fn check_billing(
    subscription_group: bool,
    balance_nanos: i64,
    subscription: Option<&SubscriptionState>,
    now_ms: i64,
) -> Result<BillingMode, Refusal> {
    if !subscription_group {
        if balance_nanos <= 0 {
            return Err(Refusal::InsufficientBalance);
        }
        return Ok(BillingMode::Balance);
    }
    let Some(sub) = subscription.filter(|s| s.active && s.expires_at_ms > now_ms) else {
        return Err(Refusal::NoSubscription);
    };
    if let Some(w) = sub.over_limit(now_ms) {
        return Err(Refusal::UsageLimit(w));
    }
    Ok(BillingMode::Subscription)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100 * DAY_MS;

    fn key() -> KeyState {
        KeyState {
            status: Some(KeyStatus::Active),
            quota_nanos: 0,
            quota_used_nanos: 0,
            expires_at_ms: None,
        }
    }

    #[test]
    fn key_checks_in_the_spec_order() {
        let mut k = key();
        assert_eq!(check_key(&k, NOW), Ok(()));
        // Everything wrong at once: the earliest check wins.
        k.status = Some(KeyStatus::Disabled);
        k.quota_nanos = 5;
        k.quota_used_nanos = 5;
        k.expires_at_ms = Some(1);
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyDisabled));
        k.status = None;
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyDisabled));
        // An expired status with the quota used up: quota comes first.
        k.status = Some(KeyStatus::Expired);
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyQuotaExhausted));
        k.quota_nanos = 0;
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyExpired));
        k.status = Some(KeyStatus::QuotaExhausted);
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyQuotaExhausted));
        k.status = Some(KeyStatus::Active);
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyExpired));
        // Expiry is inclusive: at the instant it is due the key has expired.
        k.expires_at_ms = Some(NOW);
        assert_eq!(check_key(&k, NOW), Err(Refusal::KeyExpired));
        k.expires_at_ms = Some(NOW + 1);
        assert_eq!(check_key(&k, NOW), Ok(()));
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ip_rules_v4_v6_and_mapped() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allow = [net("10.0.0.0/8"), net("2001:db8::/32")];
        assert_eq!(check_ip(&allow, &[], ip("10.1.2.3")), Ok(()));
        assert_eq!(check_ip(&allow, &[], ip("::ffff:10.1.2.3")), Ok(()));
        assert_eq!(check_ip(&allow, &[], ip("2001:db8::1")), Ok(()));
        assert_eq!(
            check_ip(&allow, &[], ip("11.0.0.1")),
            Err(Refusal::IpNotAllowed)
        );
        let deny = [net("10.9.9.9/32")];
        assert_eq!(
            check_ip(&allow, &deny, ip("10.9.9.9")),
            Err(Refusal::IpNotAllowed)
        );
        assert_eq!(check_ip(&[], &deny, ip("10.9.9.8")), Ok(()));
    }

    fn sub(d: i64, w: i64, m: i64) -> SubscriptionState {
        let window = |usage_nanos, limit_nanos| WindowUsage {
            limit_nanos,
            usage_nanos,
            start_ms: Some(NOW - 1),
        };
        SubscriptionState {
            active: true,
            expires_at_ms: NOW + DAY_MS,
            daily: window(d, 10),
            weekly: window(w, 20),
            monthly: window(m, 30),
        }
    }

    #[test]
    fn each_subscription_window_has_its_own_limit() {
        let over = |s: SubscriptionState| s.over_limit(NOW);
        assert_eq!(over(sub(10, 10, 10)), Some(Window::Daily));
        assert_eq!(over(sub(5, 20, 10)), Some(Window::Weekly));
        assert_eq!(over(sub(5, 5, 30)), Some(Window::Monthly));
        assert_eq!(over(sub(5, 5, 5)), None);
        // A limit of 0 means none.
        let mut s = sub(99, 99, 99);
        for w in [&mut s.daily, &mut s.weekly, &mut s.monthly] {
            w.limit_nanos = 0;
        }
        assert_eq!(over(s), None);
        // Passed windows count as empty: 1 day, 7 days, 30 days; so do unstarted ones.
        let mut s = sub(10, 20, 30);
        s.daily.start_ms = Some(NOW - DAY_MS);
        s.weekly.start_ms = Some(NOW - 7 * DAY_MS);
        s.monthly.start_ms = None;
        assert_eq!(over(s), None);
        s.weekly.start_ms = Some(NOW - 7 * DAY_MS + 1);
        assert_eq!(over(s), Some(Window::Weekly));
        // A start far in the past cannot overflow.
        s.weekly.start_ms = Some(i64::MIN);
        assert_eq!(over(s), None);
    }

    #[test]
    fn billing_by_balance_or_subscription() {
        assert_eq!(check_billing(false, 1, None, NOW), Ok(BillingMode::Balance));
        assert_eq!(
            check_billing(false, 0, None, NOW),
            Err(Refusal::InsufficientBalance)
        );
        assert_eq!(
            check_billing(false, -5, Some(&sub(0, 0, 0)), NOW),
            Err(Refusal::InsufficientBalance)
        );
        // The balance does not matter in subscription mode.
        assert_eq!(
            check_billing(true, 0, Some(&sub(0, 0, 0)), NOW),
            Ok(BillingMode::Subscription)
        );
        assert_eq!(
            check_billing(true, 9, None, NOW),
            Err(Refusal::NoSubscription)
        );
        let mut s = sub(0, 0, 0);
        s.expires_at_ms = NOW;
        assert_eq!(
            check_billing(true, 9, Some(&s), NOW),
            Err(Refusal::NoSubscription)
        );
        let mut s = sub(0, 0, 0);
        s.active = false;
        assert_eq!(
            check_billing(true, 9, Some(&s), NOW),
            Err(Refusal::NoSubscription)
        );
        assert_eq!(
            check_billing(true, 9, Some(&sub(0, 20, 0)), NOW),
            Err(Refusal::UsageLimit(Window::Weekly))
        );
    }

    #[test]
    fn codes_and_messages() {
        assert_eq!(Refusal::KeyDisabled.message(), "API key is disabled");
        assert_eq!(
            Refusal::UsageLimit(Window::Monthly).message(),
            "monthly usage limit exceeded"
        );
        assert_eq!(
            Refusal::UsageLimit(Window::Daily).code(),
            ErrorCode::UsageLimitExceeded
        );
        assert_eq!(
            Refusal::UsageLimit(Window::Daily).recheck_code(),
            ErrorCode::BillingRejected
        );
        assert_eq!(
            Refusal::InsufficientBalance.recheck_code(),
            ErrorCode::BillingRejected
        );
        assert_eq!(Refusal::KeyExpired.recheck_code(), ErrorCode::ApiKeyExpired);
    }
}
