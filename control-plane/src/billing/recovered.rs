//! The control plane's own usage records, for leases reaped without one (ARCHITECTURE.md
//! "Every lease ends in one usage record"; the facts come from `admission/recovery.rs`).
//!
//! Estimate policy (integer math; priced like any record, so money stays exact):
//! - input tokens = ⌈request body bytes / 4⌉ — the data plane's own rule for a stream
//!   cut without usage (≈ 4 bytes of JSON per token);
//! - output tokens = `TOLLGATE_RECOVERED_OUTPUT_TOKENS` (default 1 000), a stated
//!   allowance: nothing of the answer is known;
//! - no cached or reasoning tokens; the served model, the account, the group's rate
//!   and the billing mode the lease was granted with;
//! - flagged `estimated` (so `TOLLGATE_CHARGE_ESTIMATES=false` stores it at zero cost)
//!   and `recovered`.
//!
//! It is charged through the same transaction as a data plane's record, idempotent by
//! request id: when the request already has a record the estimate changes nothing, and
//! when the real record arrives later it supersedes the estimate (the difference is
//! charged, so the request is charged once, by its real usage).
//!
//! The task below takes the queued estimates every tick and records them; what storage
//! cannot take now (it is away) waits for the next tick, first in line. A record that
//! can never be charged as it is goes to the dead letters like any other.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate_shared::proto::gateway::v1 as pb;

use super::BillingSettings;
use super::charge::{Failure, Mappings, PendingInvalidations, belongs_to_record, charge_as};
use super::dead_letter;
use super::price_lookup::PriceTable;
use crate::admission::{Admission, UsageFacts};
use crate::events::Invalidations;
use crate::storage::Store;

/// How often queued estimates are recorded.
const TICK: Duration = Duration::from_millis(250);

/// The usage record the control plane writes for `f` at `now_ms` (see the module doc).
/// Its duration runs from Admit to now: the request ran at least until its lease was
/// reaped, and storage reads the estimate's charging time from it when superseding.
pub fn estimate(f: &UsageFacts, settings: &BillingSettings, now_ms: i64) -> pb::UsageReport {
    let input = f.request_bytes.div_ceil(4);
    pb::UsageReport {
        request_id: f.request_id.clone(),
        key_id: f.key_id,
        user_id: f.user_id,
        group_id: f.group_id,
        subscription_id: f.subscription_id,
        account_id: f.account_id,
        model: f.model.clone(),
        upstream_model: f.upstream_model.clone(),
        input_tokens: i64::try_from(input).unwrap_or(i64::MAX),
        output_tokens: settings.recovered_output_tokens,
        stream: f.stream,
        duration_ms: now_ms.saturating_sub(f.admitted_at_ms).max(0),
        estimated: true,
        started_at_ms: f.admitted_at_ms,
        billing_mode: f.billing_mode.as_str().to_owned(),
        rate_multiplier: f.rate_multiplier.to_string(),
        account_cost_multiplier: f.account_cost_multiplier.to_string(),
        ..pb::UsageReport::default()
    }
}

/// Records the estimates; returns those to try again (storage unavailable).
pub async fn record(
    store: &Store,
    invalidations: &Invalidations,
    settings: &BillingSettings,
    facts: Vec<UsageFacts>,
    now_ms: i64,
) -> Vec<UsageFacts> {
    if facts.is_empty() {
        return facts;
    }
    let prices = match PriceTable::load(store).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record estimates yet; will retry");
            return facts;
        }
    };
    let mut mappings = Mappings::default();
    let mut pending = PendingInvalidations::new(invalidations);
    let mut retry = Vec::new();
    let mut rest = facts.into_iter();
    for f in rest.by_ref() {
        let report = estimate(&f, settings, now_ms);
        let raw = report.clone();
        match charge_as(
            store,
            &prices,
            &mut mappings,
            settings,
            report,
            true,
            now_ms,
        )
        .await
        {
            Ok((usage, outcome)) => {
                pending.charged(&usage, &outcome);
                if outcome.inserted {
                    tracing::info!(
                        request_id = f.request_id,
                        actual_cost_nanos = usage.actual_cost_nanos,
                        "estimated usage recorded for a lease reaped without a record"
                    );
                }
            }
            Err(Failure::Permanent(reason)) => {
                if let Err(e) = dead_letter::store(store, &raw, &reason, now_ms).await {
                    tracing::warn!(request_id = f.request_id, error = %e, "estimate not dead-lettered; will retry");
                    retry.push(f);
                }
            }
            Err(Failure::Error(e)) if belongs_to_record(&e) => {
                tracing::warn!(request_id = f.request_id, error = %e, "estimate not recorded; will retry");
                retry.push(f);
            }
            Err(Failure::Error(e)) => {
                tracing::warn!(error = %e, "storage unavailable; estimates will be retried");
                retry.push(f);
                break;
            }
        }
    }
    retry.extend(rest);
    retry
}

/// Records the estimates admission queues, until `shutdown`. Spawn it on the service's
/// tracker.
pub async fn run(
    admission: Admission,
    store: Store,
    invalidations: Invalidations,
    settings: BillingSettings,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let facts = admission.take_estimates();
        if facts.is_empty() {
            continue;
        }
        let now = tollgate_shared::now_ms();
        let retry = record(&store, &invalidations, &settings, facts, now).await;
        if !retry.is_empty() {
            admission.requeue_estimates(retry);
        }
    }
    let left = admission.take_estimates().len();
    if left > 0 {
        tracing::warn!(
            count = left,
            "estimates not recorded at shutdown (kept only in memory)"
        );
    }
}

#[cfg(test)]
mod tests {
    use tollgate_shared::Multiplier;
    use tollgate_shared::domain::BillingMode;

    use super::*;

    #[test]
    fn the_estimate_is_body_bytes_over_four_plus_the_allowance() {
        let facts = UsageFacts {
            request_id: "r-1".into(),
            key_id: 3,
            user_id: 2,
            group_id: Some(5),
            subscription_id: None,
            account_id: 7,
            billing_mode: BillingMode::Balance,
            rate_multiplier: Multiplier::from_ppm(1_500_000).unwrap(),
            account_cost_multiplier: Multiplier::ONE,
            model: "gpt-5".into(),
            upstream_model: "gpt-5-2025-08-07".into(),
            request_bytes: 4_001,
            stream: true,
            admitted_at_ms: 1_700_000_000_000,
        };
        let settings = BillingSettings {
            recovered_output_tokens: 250,
            ..BillingSettings::default()
        };
        let r = estimate(&facts, &settings, 1_700_000_004_000);
        assert_eq!((r.input_tokens, r.output_tokens), (1_001, 250));
        assert!(r.estimated);
        assert_eq!(r.rate_multiplier, "1.5");
        assert_eq!(r.billing_mode, "balance");
        assert_eq!(r.upstream_model, "gpt-5-2025-08-07");
        assert_eq!((r.started_at_ms, r.duration_ms), (1_700_000_000_000, 4_000));
        // It passes the same validation as a data plane's record.
        super::super::record::check(r).unwrap();
    }
}
