//! The billing re-check Admit runs after the user's wait (responses-flow.md §3.3): the
//! balance or the subscription may have changed while the request queued.

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::{BillingMode, GroupKind, SubscriptionStatus};

use super::Rejection;
use crate::model::{Group, Subscription, User};

const DAY_MS: i64 = 86_400_000;

/// How the request will be charged, or why it may not run. `sub` is the user's active
/// subscription to the key's group (looked up only for subscription groups).
pub fn check(
    user: &User,
    group: Option<&Group>,
    sub: Option<&Subscription>,
    now_ms: i64,
) -> Result<BillingMode, Rejection> {
    let Some(group) = group.filter(|g| g.kind == GroupKind::Subscription) else {
        if user.balance_nanos <= 0 {
            return Err(Rejection::new(
                ErrorCode::BillingRejected,
                "insufficient balance",
            ));
        }
        return Ok(BillingMode::Balance);
    };
    let Some(sub) = sub.filter(|s| {
        s.status == SubscriptionStatus::Active
            && s.expires_at_ms > now_ms
            && s.user_id == user.id
            && s.group_id == group.id
    }) else {
        return Err(Rejection::new(
            ErrorCode::BillingRejected,
            "subscription is invalid or expired",
        ));
    };
    if let Some(window) = over_limit(group, sub, now_ms) {
        return Err(Rejection::new(
            ErrorCode::BillingRejected,
            format!("{window} usage limit exceeded"),
        ));
    }
    Ok(BillingMode::Subscription)
}

/// The first window whose usage reached its limit. A limit counts when > 0; a window
/// that has passed (or never started) counts as empty — the data plane's check agrees.
pub fn over_limit(group: &Group, sub: &Subscription, now_ms: i64) -> Option<&'static str> {
    let used = |usage: i64, start: Option<i64>, len: i64| match start {
        Some(s) if now_ms.saturating_sub(s) < len => usage,
        _ => 0,
    };
    let windows = [
        (
            "daily",
            group.daily_limit_nanos,
            used(sub.daily_usage_nanos, sub.daily_window_start_ms, DAY_MS),
        ),
        (
            "weekly",
            group.weekly_limit_nanos,
            used(
                sub.weekly_usage_nanos,
                sub.weekly_window_start_ms,
                7 * DAY_MS,
            ),
        ),
        (
            "monthly",
            group.monthly_limit_nanos,
            used(
                sub.monthly_usage_nanos,
                sub.monthly_window_start_ms,
                30 * DAY_MS,
            ),
        ),
    ];
    windows
        .into_iter()
        .find(|(_, limit, used)| *limit > 0 && *used >= *limit)
        .map(|(name, _, _)| name)
}

#[cfg(test)]
mod tests {
    use tollgate_shared::Multiplier;
    use tollgate_shared::domain::{GroupStatus, Platform, UserRole, UserStatus};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn user(balance: i64) -> User {
        User {
            id: 1,
            email: "u@example.com".into(),
            name: "u".into(),
            role: UserRole::User,
            status: UserStatus::Active,
            balance_nanos: balance,
            concurrency: 5,
            notes: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn group(kind: GroupKind) -> Group {
        Group {
            id: 9,
            name: "g".into(),
            platform: Platform::OpenAi,
            rate_multiplier: Multiplier::ONE,
            kind,
            daily_limit_nanos: 100,
            weekly_limit_nanos: 500,
            monthly_limit_nanos: 0,
            status: GroupStatus::Active,
            exclusive: false,
            description: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn sub() -> Subscription {
        Subscription {
            id: 3,
            user_id: 1,
            group_id: 9,
            starts_at_ms: NOW - DAY_MS,
            expires_at_ms: NOW + DAY_MS,
            status: SubscriptionStatus::Active,
            daily_usage_nanos: 0,
            weekly_usage_nanos: 0,
            monthly_usage_nanos: 0,
            daily_window_start_ms: None,
            weekly_window_start_ms: None,
            monthly_window_start_ms: None,
            notes: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn message(r: Result<BillingMode, Rejection>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::BillingRejected);
        e.message
    }

    #[test]
    fn balance_mode() {
        assert_eq!(check(&user(1), None, None, NOW), Ok(BillingMode::Balance));
        assert_eq!(
            message(check(&user(0), None, None, NOW)),
            "insufficient balance"
        );
        assert_eq!(
            message(check(&user(-5), None, None, NOW)),
            "insufficient balance"
        );
        let g = group(GroupKind::Standard);
        assert_eq!(
            check(&user(1), Some(&g), None, NOW),
            Ok(BillingMode::Balance)
        );
        assert_eq!(
            message(check(&user(0), Some(&g), None, NOW)),
            "insufficient balance"
        );
    }

    #[test]
    fn subscription_validity() {
        let g = group(GroupKind::Subscription);
        // The balance does not matter in subscription mode.
        assert_eq!(
            check(&user(0), Some(&g), Some(&sub()), NOW),
            Ok(BillingMode::Subscription)
        );
        assert_eq!(
            message(check(&user(0), Some(&g), None, NOW)),
            "subscription is invalid or expired"
        );
        let mut s = sub();
        s.expires_at_ms = NOW;
        assert_eq!(
            message(check(&user(0), Some(&g), Some(&s), NOW)),
            "subscription is invalid or expired"
        );
        let mut s = sub();
        s.status = SubscriptionStatus::Suspended;
        assert_eq!(
            message(check(&user(0), Some(&g), Some(&s), NOW)),
            "subscription is invalid or expired"
        );
    }

    #[test]
    fn usage_windows() {
        let g = group(GroupKind::Subscription);
        let mut s = sub();
        s.daily_usage_nanos = 100;
        s.daily_window_start_ms = Some(NOW - 1000);
        assert_eq!(
            message(check(&user(0), Some(&g), Some(&s), NOW)),
            "daily usage limit exceeded"
        );
        // The daily window has passed: counts as 0.
        s.daily_window_start_ms = Some(NOW - DAY_MS - 1);
        assert!(check(&user(0), Some(&g), Some(&s), NOW).is_ok());
        s.weekly_usage_nanos = 500;
        s.weekly_window_start_ms = Some(NOW - 6 * DAY_MS);
        assert_eq!(
            message(check(&user(0), Some(&g), Some(&s), NOW)),
            "weekly usage limit exceeded"
        );
        s.weekly_window_start_ms = Some(NOW - 7 * DAY_MS);
        assert!(check(&user(0), Some(&g), Some(&s), NOW).is_ok());
        // A limit of 0 never counts.
        s.monthly_usage_nanos = i64::MAX;
        s.monthly_window_start_ms = Some(NOW);
        assert!(check(&user(0), Some(&g), Some(&s), NOW).is_ok());
        let mut g2 = g.clone();
        g2.monthly_limit_nanos = 1;
        assert_eq!(
            message(check(&user(0), Some(&g2), Some(&s), NOW)),
            "monthly usage limit exceeded"
        );
    }
}
