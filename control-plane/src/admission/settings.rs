//! Admission settings (defaults from the spec; see `Config` for the flags).

use std::time::Duration;

use super::lease_url::DEFAULT_CODEX_URL;
use super::outcome_policy::Cooldowns;
use super::unschedulable_rules::UnschedulableRules;
use crate::billing::BillingSettings;
use crate::config::Config;

/// Admission settings (defaults from the spec; see `Config` for the flags).
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// Responses endpoint of subscription (OAuth) accounts.
    pub codex_url: String,
    /// How long a request waits for a user slot.
    pub user_wait_timeout: Duration,
    /// Requests of one user waiting or running: `max(concurrency, 1) + user_extra_pending`.
    pub user_extra_pending: u32,
    /// How long a request waits for the best account's slot when all are busy.
    pub account_wait_timeout: Duration,
    /// Waiters per account beyond which a request is turned away.
    pub account_max_waiters: usize,
    /// How long a sticky session waits for its bound account.
    pub sticky_wait_timeout: Duration,
    /// Waiters on the bound account beyond which a sticky session falls through.
    pub sticky_max_waiters: usize,
    /// Sticky bindings live this long, refreshed on use.
    pub sticky_ttl: Duration,
    /// Leases of a session gone this long are freed.
    pub lease_grace: Duration,
    /// How long a 429 / 529 keeps an account out.
    pub cooldowns: Cooldowns,
    /// Unpriced models are refused at Admit unless a fallback price is set (`pricing.rs`).
    pub billing: BillingSettings,
    /// Operator rules: other 5xx / timeouts → temporarily unschedulable.
    pub unschedulable_rules: UnschedulableRules,
    /// How long the account of a response id is remembered (response affinity).
    pub response_ttl: Duration,
    /// Response owners kept in memory in front of the table.
    pub response_cache_capacity: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            codex_url: DEFAULT_CODEX_URL.to_owned(),
            user_wait_timeout: Duration::from_secs(30),
            user_extra_pending: 20,
            account_wait_timeout: Duration::from_secs(30),
            account_max_waiters: 100,
            sticky_wait_timeout: Duration::from_secs(120),
            sticky_max_waiters: 3,
            sticky_ttl: Duration::from_secs(3600),
            lease_grace: Duration::from_secs(10),
            cooldowns: Cooldowns::default(),
            billing: BillingSettings::default(),
            unschedulable_rules: UnschedulableRules::default(),
            response_ttl: Duration::from_millis(crate::config::defaults::RESPONSE_AFFINITY_TTL_MS),
            response_cache_capacity: crate::config::defaults::RESPONSE_AFFINITY_CACHE,
        }
    }
}

impl AdmissionSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            codex_url: c.codex_url.clone(),
            user_wait_timeout: Duration::from_millis(c.user_wait_timeout_ms),
            user_extra_pending: c.user_extra_pending,
            account_wait_timeout: Duration::from_millis(c.account_wait_timeout_ms),
            account_max_waiters: usize::try_from(c.account_max_waiters).unwrap_or(usize::MAX),
            sticky_wait_timeout: Duration::from_millis(c.sticky_wait_timeout_ms),
            sticky_max_waiters: usize::try_from(c.sticky_max_waiters).unwrap_or(usize::MAX),
            sticky_ttl: Duration::from_millis(c.sticky_ttl_ms),
            lease_grace: Duration::from_millis(c.lease_grace_ms),
            cooldowns: Cooldowns {
                rate_limit_default: Duration::from_millis(c.rate_limit_cooldown_ms),
                overload_cooldown: Duration::from_millis(c.overload_cooldown_ms),
            },
            billing: BillingSettings::from_config(c),
            unschedulable_rules: c.unschedulable_rules.clone(),
            response_ttl: Duration::from_millis(c.response_affinity_ttl_ms),
            response_cache_capacity: c.response_affinity_cache,
        }
    }
}
