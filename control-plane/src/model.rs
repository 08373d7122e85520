//! Domain types of the control plane: what storage returns and the services work with.
//! Proto types are converted to and from these at the service edge (`admin/convert.rs`).

use std::collections::BTreeMap;

use tollgate_shared::Multiplier;
use tollgate_shared::domain::{
    AccountKind, AccountStatus, BillingMode, GroupKind, GroupStatus, KeyStatus, Platform,
    SubscriptionStatus, UserRole, UserStatus,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: UserRole,
    pub status: UserStatus,
    pub balance_nanos: i64,
    pub concurrency: i32,
    pub notes: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: UserRole,
    pub concurrency: i32,
    pub notes: String,
    pub initial_balance_nanos: i64,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub name: Option<String>,
    pub role: Option<UserRole>,
    pub status: Option<UserStatus>,
    pub concurrency: Option<i32>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceOp {
    Set,
    Add,
    Subtract,
}

impl BalanceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Add => "add",
            Self::Subtract => "subtract",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub user_id: i64,
    /// "set" | "add" | "subtract" | "initial"
    pub kind: String,
    pub delta_nanos: i64,
    pub balance_after_nanos: i64,
    pub reason: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub platform: Platform,
    pub rate_multiplier: Multiplier,
    pub kind: GroupKind,
    pub daily_limit_nanos: i64,
    pub weekly_limit_nanos: i64,
    pub monthly_limit_nanos: i64,
    pub status: GroupStatus,
    pub exclusive: bool,
    pub description: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: String,
    pub platform: Platform,
    pub rate_multiplier: Multiplier,
    pub kind: GroupKind,
    pub daily_limit_nanos: i64,
    pub weekly_limit_nanos: i64,
    pub monthly_limit_nanos: i64,
    pub exclusive: bool,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub rate_multiplier: Option<Multiplier>,
    pub kind: Option<GroupKind>,
    pub daily_limit_nanos: Option<i64>,
    pub weekly_limit_nanos: Option<i64>,
    pub monthly_limit_nanos: Option<i64>,
    pub status: Option<GroupStatus>,
    pub exclusive: Option<bool>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub group_id: Option<i64>,
    pub status: KeyStatus,
    /// Validated IPs / CIDRs, stored as given (normalised text).
    pub ip_allow: Vec<String>,
    pub ip_deny: Vec<String>,
    pub quota_nanos: i64,
    pub quota_used_nanos: i64,
    pub expires_at_ms: Option<i64>,
    pub key_hint: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub user_id: i64,
    pub name: String,
    pub group_id: Option<i64>,
    /// Lower-case hex SHA-256 of the secret; the secret itself is never stored.
    pub key_hash: String,
    pub key_hint: String,
    pub ip_allow: Vec<String>,
    pub ip_deny: Vec<String>,
    pub quota_nanos: i64,
    pub expires_at_ms: Option<i64>,
}

/// Partial key update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    /// `Some(None)` removes the key from its group.
    pub group_id: Option<Option<i64>>,
    pub quota_nanos: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
}

/// Upstream credential, stored encrypted as JSON.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    ApiKey {
        api_key: String,
    },
    #[serde(rename = "oauth")]
    OAuth {
        access_token: String,
        refresh_token: String,
        #[serde(default)]
        id_token: String,
    },
}

impl Credential {
    pub fn kind(&self) -> AccountKind {
        match self {
            Self::ApiKey { .. } => AccountKind::ApiKey,
            Self::OAuth { .. } => AccountKind::OAuth,
        }
    }
}

// Never print secrets, even in debug output.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey { .. } => f.write_str("Credential::ApiKey(<redacted>)"),
            Self::OAuth { .. } => f.write_str("Credential::OAuth(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountGroup {
    pub group_id: i64,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub platform: Platform,
    pub kind: AccountKind,
    pub base_url: String,
    pub credential: Credential,
    pub concurrency: i32,
    pub priority: i32,
    pub status: AccountStatus,
    pub error_message: String,
    pub schedulable: bool,
    pub model_mapping: BTreeMap<String, String>,
    /// Full proxy URL including credentials (decrypted). Empty = none.
    pub proxy_url: String,
    pub user_agent: String,
    pub rate_limited_until_ms: Option<i64>,
    pub overloaded_until_ms: Option<i64>,
    pub temp_unschedulable_until_ms: Option<i64>,
    pub temp_unschedulable_reason: String,
    pub expires_at_ms: Option<i64>,
    pub chatgpt_account_id: String,
    pub codex_usage: BTreeMap<String, String>,
    pub cost_multiplier: Multiplier,
    pub notes: String,
    pub groups: Vec<AccountGroup>,
    pub last_used_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub platform: Platform,
    pub base_url: String,
    pub credential: Credential,
    pub concurrency: i32,
    pub priority: i32,
    pub model_mapping: BTreeMap<String, String>,
    pub proxy_url: String,
    pub user_agent: String,
    pub expires_at_ms: Option<i64>,
    pub chatgpt_account_id: String,
    pub cost_multiplier: Multiplier,
    pub notes: String,
    pub groups: Vec<AccountGroup>,
}

#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub credential: Option<Credential>,
    /// OAuth credential updates carry these too.
    pub expires_at_ms: Option<Option<i64>>,
    pub chatgpt_account_id: Option<String>,
    pub base_url: Option<String>,
    pub concurrency: Option<i32>,
    pub priority: Option<i32>,
    pub status: Option<AccountStatus>,
    pub schedulable: Option<bool>,
    pub model_mapping: Option<BTreeMap<String, String>>,
    pub proxy_url: Option<String>,
    pub user_agent: Option<String>,
    pub cost_multiplier: Option<Multiplier>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: i64,
    pub user_id: i64,
    pub group_id: i64,
    pub starts_at_ms: i64,
    pub expires_at_ms: i64,
    pub status: SubscriptionStatus,
    pub daily_usage_nanos: i64,
    pub weekly_usage_nanos: i64,
    pub monthly_usage_nanos: i64,
    pub daily_window_start_ms: Option<i64>,
    pub weekly_window_start_ms: Option<i64>,
    pub monthly_window_start_ms: Option<i64>,
    pub notes: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub user_id: i64,
    pub group_id: i64,
    pub starts_at_ms: i64,
    pub expires_at_ms: i64,
    pub notes: String,
}

/// Prices in nano-USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub model: String,
    pub input_per_mtok_nanos: i64,
    pub output_per_mtok_nanos: i64,
    pub cached_input_per_mtok_nanos: i64,
    pub updated_at_ms: i64,
}

/// A usage record that could not be charged as it was (`usage_dead_letters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    /// The record's request id, or `invalid:` + the SHA-256 of `record` when it had none
    /// usable.
    pub request_id: String,
    pub reason: String,
    /// The record as the data plane sent it, as JSON.
    pub record: String,
    pub created_at_ms: i64,
    pub recharged_at_ms: Option<i64>,
    /// The model it was re-charged under (empty until then).
    pub recharged_model: String,
}

/// A model name priced as another model (`price_aliases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceAlias {
    pub alias: String,
    pub model: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub request_id: String,
    pub key_id: i64,
    pub user_id: i64,
    pub group_id: Option<i64>,
    pub subscription_id: Option<i64>,
    pub account_id: i64,
    pub model: String,
    pub upstream_model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub input_cost_nanos: i64,
    pub output_cost_nanos: i64,
    pub cached_cost_nanos: i64,
    pub total_cost_nanos: i64,
    pub actual_cost_nanos: i64,
    pub rate_multiplier: Multiplier,
    pub account_cost_multiplier: Multiplier,
    pub billing_mode: BillingMode,
    pub stream: bool,
    pub duration_ms: i64,
    pub first_token_ms: Option<i64>,
    pub user_agent: String,
    pub client_ip: String,
    pub reasoning_effort: String,
    pub estimated: bool,
    /// Written by the control plane for a lease that ended without a usage record (an
    /// estimate); the real record, if it ever arrives, supersedes it.
    pub recovered: bool,
    pub created_at_ms: i64,
    /// The client's own x-request-id ('' = none); `request_id` is the gateway's.
    pub client_request_id: String,
    /// The upstream's x-request-id of the billed answer ('' = none).
    pub upstream_request_id: String,
}

/// Which account created an upstream response id, for which user (response affinity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseOwner {
    pub response_id: String,
    pub account_id: i64,
    pub user_id: i64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub key_id: Option<i64>,
    pub user_id: Option<i64>,
    pub account_id: Option<i64>,
    pub group_id: Option<i64>,
    pub model: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub total_cost_nanos: i64,
    pub actual_cost_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDay {
    /// UTC date, YYYY-MM-DD.
    pub day: String,
    pub totals: UsageTotals,
}

/// Keyset pagination: items after `after_id` (exclusive), at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after_id: i64,
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            after_id: 0,
            limit: 50,
        }
    }
}

/// One page of results; `next_after_id` is `Some` when more rows may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_after_id: Option<i64>,
}
