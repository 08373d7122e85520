//! What the data plane knows about a key, converted from the control plane's
//! `AuthorizeResponse` at the edge (IP lists parsed once, statuses as enums).

use std::net::IpAddr;

use ipnet::IpNet;
use tollgate_shared::domain::{GroupKind, GroupStatus, KeyStatus, SubscriptionStatus, UserStatus};
use tollgate_shared::proto::gateway::v1 as pb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: i64,
    /// `None` for a status this build doesn't know: treated as disabled.
    pub status: Option<KeyStatus>,
    pub quota_nanos: i64,
    pub quota_used_nanos: i64,
    pub expires_at_ms: Option<i64>,
    pub ip_allow: Vec<IpNet>,
    pub ip_deny: Vec<IpNet>,
    pub user: Option<UserInfo>,
    pub group: Option<GroupInfo>,
    pub group_missing: bool,
    pub subscription: Option<SubscriptionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user_id: i64,
    pub active: bool,
    pub balance_nanos: i64,
    pub concurrency: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: i64,
    pub active: bool,
    pub subscription: bool,
    pub daily_limit_nanos: i64,
    pub weekly_limit_nanos: i64,
    pub monthly_limit_nanos: i64,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub active: bool,
    pub expires_at_ms: i64,
    pub daily_usage_nanos: i64,
    pub weekly_usage_nanos: i64,
    pub monthly_usage_nanos: i64,
    pub daily_window_start_ms: Option<i64>,
    pub weekly_window_start_ms: Option<i64>,
    pub monthly_window_start_ms: Option<i64>,
}

/// Parses an IP or CIDR as the control plane stored it; unparsable entries (which
/// validation refuses at write time) are skipped rather than failing the key.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl From<pb::KeyAuth> for KeyInfo {
    fn from(k: pb::KeyAuth) -> Self {
        Self {
            key_id: k.key_id,
            status: k.key_status.parse().ok(),
            quota_nanos: k.quota_nanos,
            quota_used_nanos: k.quota_used_nanos,
            expires_at_ms: k.expires_at_ms,
            ip_allow: k.ip_allow.iter().filter_map(|s| parse_net(s)).collect(),
            ip_deny: k.ip_deny.iter().filter_map(|s| parse_net(s)).collect(),
            user: k.user.map(|u| UserInfo {
                user_id: u.user_id,
                active: u.status.parse::<UserStatus>() == Ok(UserStatus::Active),
                balance_nanos: u.balance_nanos,
                concurrency: u.concurrency,
            }),
            group: k.group.map(|g| GroupInfo {
                group_id: g.group_id,
                active: g.status.parse::<GroupStatus>() == Ok(GroupStatus::Active),
                subscription: g.kind.parse::<GroupKind>() == Ok(GroupKind::Subscription),
                daily_limit_nanos: g.daily_limit_nanos,
                weekly_limit_nanos: g.weekly_limit_nanos,
                monthly_limit_nanos: g.monthly_limit_nanos,
                models: g.models,
            }),
            group_missing: k.group_missing,
            subscription: k.subscription.map(|s| SubscriptionInfo {
                active: s.status.parse::<SubscriptionStatus>() == Ok(SubscriptionStatus::Active),
                expires_at_ms: s.expires_at_ms,
                daily_usage_nanos: s.daily_usage_nanos,
                weekly_usage_nanos: s.weekly_usage_nanos,
                monthly_usage_nanos: s.monthly_usage_nanos,
                daily_window_start_ms: s.daily_window_start_ms,
                weekly_window_start_ms: s.weekly_window_start_ms,
                monthly_window_start_ms: s.monthly_window_start_ms,
            }),
        }
    }
}
