//! The billing re-check Admit runs after the user's wait (responses-flow.md §3.3): the
//! balance or the subscription may have changed while the request queued. The rule is the
//! one the data plane applies before admission (`tollgate_shared::refusal::check_billing`);
//! only the code differs, as the spec gives it for the re-check.

use tollgate_shared::domain::{BillingMode, GroupKind, SubscriptionStatus};
use tollgate_shared::refusal::{self, SubscriptionState, WindowUsage};

use super::Rejection;
use crate::model::{Group, Subscription, User};

/// How the request will be charged, or why it may not run. `sub` is the user's active
/// subscription to the key's group (looked up only for subscription groups).
pub fn check(
    user: &User,
    group: Option<&Group>,
    sub: Option<&Subscription>,
    now_ms: i64,
) -> Result<BillingMode, Rejection> {
    let group = group.filter(|g| g.kind == GroupKind::Subscription);
    let state = group.zip(sub).map(|(g, s)| subscription(user, g, s));
    refusal::check_billing(group.is_some(), user.balance_nanos, state.as_ref(), now_ms)
        .map_err(|r| Rejection::new(r.recheck_code(), r.message()))
}

fn subscription(user: &User, g: &Group, s: &Subscription) -> SubscriptionState {
    let window = |limit_nanos, usage_nanos, start_ms| WindowUsage {
        limit_nanos,
        usage_nanos,
        start_ms,
    };
    SubscriptionState {
        active: s.status == SubscriptionStatus::Active
            && s.user_id == user.id
            && s.group_id == g.id,
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
    use tollgate_shared::domain::{GroupStatus, Platform, UserRole, UserStatus};
    use tollgate_shared::{DAY_MS, ErrorCode, Multiplier};

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
