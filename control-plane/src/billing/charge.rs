//! `ReportUsage`: validate, price and charge a batch of usage records.
//!
//! Per record: [`record::check`] (malformed → rejected), price lookup on the
//! *requested* model, [`cost::compute`], then `Store::charge_usage` — one transaction
//! holding the usage row, the balance or subscription windows and the key's quota.
//! A request id is acknowledged only after its transaction committed; a replay
//! (already recorded) is acknowledged too and changes nothing.
//!
//! Failures, record by record, in one call:
//! - malformed, a model with no price under strict pricing, a cost out of range, or a
//!   key / user / subscription that does not exist → `rejected` (for good);
//! - an error that belongs to the record (a database error on its statements, an
//!   overflow guard) → neither acked nor rejected, logged; the batch goes on, so one bad
//!   record does not hold back the others, and the data plane retries it;
//! - an error of the database itself (connection, pool timeout) → the batch stops: the
//!   rest would fail the same way, slowly. What committed so far is acknowledged; when
//!   nothing was, the call fails and the data plane backs off.
//!
//! Invalidations: every charged record changes what data planes cache for its key
//! (quota used, maybe the status) and its user (balance or subscription usage). They
//! are collected over the call and published once per scope with all ids, on the way
//! out — also when the call is cancelled midway (`Drop`), since what committed must
//! reach the caches either way. The control plane's own admission snapshot is told at
//! once, record by record (`publish_local`, an in-process step): Admit must not admit on
//! a cached balance or key the batch's earlier records already exhausted.

use std::collections::BTreeSet;

use tollgate_shared::proto::gateway::v1 as pb;

use super::BillingSettings;
use super::cost::{self, Cost, Rates};
use super::price_lookup::{PriceSource, PriceTable};
use super::record::{self, Checked};
use crate::error::{Error, Result};
use crate::events::{Change, Invalidation, Invalidations, Scope};
use crate::storage::Store;

/// What to charge for one checked record, or why it is refused.
pub fn price(
    checked: &Checked,
    prices: &PriceTable,
    settings: &BillingSettings,
) -> Result<Cost, String> {
    let model = &checked.report.model;
    let request_id = &checked.report.request_id;
    let rates = match prices.lookup(model, settings.fallback) {
        Some((rates, source)) => {
            if source != PriceSource::Exact {
                tracing::debug!(request_id, model, %source, "priced by lookup chain");
            }
            rates
        }
        None if settings.strict_pricing => {
            return Err(format!(
                "no price for model {model:?} (strict pricing; set a price or a fallback)"
            ));
        }
        None => {
            // Never silent: the row is kept (tokens and all) and the operator warned.
            tracing::warn!(
                request_id,
                model,
                "no price for model; usage recorded at zero cost"
            );
            Rates::ZERO
        }
    };
    if checked.report.estimated && !settings.charge_estimates {
        // Stored with its estimated tokens, flagged `estimated`, at zero cost.
        return Ok(Cost::default());
    }
    cost::compute(checked.tokens, rates, checked.rate_multiplier)
        .map_err(|e| format!("cannot price the record: {e}"))
}

/// Handles one `ReportUsage` call (see the module doc).
pub async fn report_usage(
    store: &Store,
    invalidations: &Invalidations,
    settings: &BillingSettings,
    records: Vec<pb::UsageReport>,
    now_ms: i64,
) -> Result<pb::ReportUsageResponse> {
    let mut resp = pb::ReportUsageResponse::default();
    if records.is_empty() {
        return Ok(resp);
    }
    // One snapshot per call: price edits apply from the next batch.
    let prices = PriceTable::new(&store.list_prices().await?);
    let mut pending = PendingInvalidations::new(invalidations);
    let mut stopped = None;
    for report in records {
        let request_id = report.request_id.clone();
        let reject = |resp: &mut pb::ReportUsageResponse, reason: String| {
            tracing::warn!(request_id, reason, "usage record rejected");
            resp.rejected.push(pb::RejectedUsage {
                request_id: request_id.clone(),
                reason,
            });
        };
        let checked = match record::check(report) {
            Ok(c) => c,
            Err(reason) => {
                reject(&mut resp, reason);
                continue;
            }
        };
        let cost = match price(&checked, &prices, settings) {
            Ok(c) => c,
            Err(reason) => {
                reject(&mut resp, reason);
                continue;
            }
        };
        let usage = checked.into_record(cost, now_ms);
        match store.charge_usage(&usage, now_ms).await {
            Ok(outcome) => {
                if outcome.inserted {
                    // Only charges that change an authorization decision drop cached
                    // entries: invalidating on every charge would make the next request
                    // of every key pay an extra Authorize call. Smaller drifts (quota
                    // used, balance still positive) decide nothing; subscription windows
                    // are re-checked by admission, which reads them from storage.
                    if outcome.key_exhausted {
                        pending.key(usage.key_id);
                    }
                    if outcome.balance_after_nanos.is_some_and(|b| b <= 0) {
                        pending.user(usage.user_id);
                    }
                    if outcome.key_exhausted {
                        tracing::info!(
                            key_id = usage.key_id,
                            quota_used_nanos = outcome.key_quota_used_nanos,
                            "key quota exhausted"
                        );
                    }
                } else {
                    tracing::debug!(request_id, "usage record replayed; already charged");
                }
                resp.acked_request_ids.push(request_id);
            }
            Err(Error::NotFound(what)) => {
                reject(&mut resp, format!("{what} not found"));
            }
            Err(e) if belongs_to_record(&e) => {
                tracing::error!(request_id, error = %e, "usage record not charged; will be retried");
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "charging stopped; the rest of the batch will be retried");
                stopped = Some(e);
                break;
            }
        }
    }
    drop(pending);
    match stopped {
        Some(e) if resp.acked_request_ids.is_empty() && resp.rejected.is_empty() => Err(e),
        _ => Ok(resp),
    }
}

/// An error caused by this record's data rather than by the database being away.
fn belongs_to_record(e: &Error) -> bool {
    match e {
        Error::Storage(e) => e.is_rejected_data(),
        _ => true,
    }
}

/// Key and user ids whose cached authorization changed; published when dropped.
struct PendingInvalidations<'a> {
    bus: &'a Invalidations,
    keys: BTreeSet<i64>,
    users: BTreeSet<i64>,
}

impl<'a> PendingInvalidations<'a> {
    fn new(bus: &'a Invalidations) -> Self {
        Self {
            bus,
            keys: BTreeSet::new(),
            users: BTreeSet::new(),
        }
    }

    /// Drops the control plane's cached key now; data planes hear it on the way out.
    fn key(&mut self, id: i64) {
        self.bus
            .publish_local(Change::Invalidated(Invalidation::key(id)));
        self.keys.insert(id);
    }

    /// Drops the control plane's cached user now; data planes hear it on the way out.
    fn user(&mut self, id: i64) {
        self.bus
            .publish_local(Change::Invalidated(Invalidation::user(id)));
        self.users.insert(id);
    }
}

impl Drop for PendingInvalidations<'_> {
    fn drop(&mut self) {
        for (scope, ids) in [(Scope::Key, &mut self.keys), (Scope::User, &mut self.users)] {
            if !ids.is_empty() {
                let ids = std::mem::take(ids).into_iter().collect();
                self.bus.publish(Invalidation { scope, ids });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Price;

    fn table() -> PriceTable {
        PriceTable::new(&[Price {
            model: "gpt-5".into(),
            input_per_mtok_nanos: 1_250_000_000,
            output_per_mtok_nanos: 10_000_000_000,
            cached_input_per_mtok_nanos: 125_000_000,
            updated_at_ms: 0,
        }])
    }

    fn checked(model: &str, estimated: bool) -> Checked {
        record::check(pb::UsageReport {
            request_id: "r".into(),
            key_id: 1,
            user_id: 1,
            model: model.into(),
            upstream_model: "gpt-5".into(),
            input_tokens: 1000,
            output_tokens: 200,
            cached_tokens: 100,
            billing_mode: "balance".into(),
            rate_multiplier: "2".into(),
            estimated,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn priced_on_the_requested_model() {
        let s = BillingSettings::default();
        let c = price(&checked("gpt-5-high", false), &table(), &s).unwrap();
        assert_eq!((c.total_nanos, c.actual_nanos), (3_137_500, 6_275_000));
    }

    #[test]
    fn unpriced_models() {
        let lenient = BillingSettings::default();
        assert_eq!(
            price(&checked("o9", false), &table(), &lenient),
            Ok(Cost::default())
        );
        let strict = BillingSettings {
            strict_pricing: true,
            ..lenient
        };
        let reason = price(&checked("o9", false), &table(), &strict).unwrap_err();
        assert!(reason.contains("\"o9\""), "{reason}");
        let fallback = BillingSettings {
            fallback: Some(Rates {
                input_per_mtok_nanos: 1_000_000,
                output_per_mtok_nanos: 0,
                cached_input_per_mtok_nanos: 0,
            }),
            ..strict
        };
        let c = price(&checked("o9", false), &table(), &fallback).unwrap();
        assert_eq!(c.total_nanos, 900);
    }

    #[test]
    fn estimates() {
        let s = BillingSettings::default();
        assert!(
            price(&checked("gpt-5", true), &table(), &s)
                .unwrap()
                .total_nanos
                > 0
        );
        let off = BillingSettings {
            charge_estimates: false,
            ..s
        };
        assert_eq!(
            price(&checked("gpt-5", true), &table(), &off),
            Ok(Cost::default())
        );
        assert!(
            price(&checked("gpt-5", false), &table(), &off)
                .unwrap()
                .total_nanos
                > 0
        );
    }

    #[test]
    fn invalidations_are_batched_per_scope() {
        let bus = Invalidations::new();
        let mut rx = bus.subscribe();
        {
            let mut p = PendingInvalidations::new(&bus);
            for (k, u) in [(3, 1), (1, 1), (3, 2)] {
                p.key(k);
                p.user(u);
            }
        }
        assert_eq!(
            rx.try_recv().unwrap(),
            Invalidation {
                scope: Scope::Key,
                ids: vec![1, 3]
            }
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            Invalidation {
                scope: Scope::User,
                ids: vec![1, 2]
            }
        );
        assert!(rx.try_recv().is_err());
        drop(PendingInvalidations::new(&bus));
        assert!(rx.try_recv().is_err(), "nothing pending, nothing published");
    }
}
