//! What the data plane knows about a key, converted from the control plane's
//! `AuthorizeResponse` at the edge (`control/convert.rs`: IP lists parsed once,
//! statuses as enums).

use std::net::IpAddr;

use ipnet::IpNet;
use tollgate_shared::domain::KeyStatus;

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
