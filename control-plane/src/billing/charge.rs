//! `ReportUsage`: validate, price and charge a batch of usage records.
//!
//! Per record: [`record::check`], the price of the served model ([`super::served`]),
//! [`cost::compute`], then `Store::charge_usage` — one transaction holding the usage
//! row, the balance or subscription windows and the key's quota. A request id is
//! acknowledged only after its transaction committed; a replay (already recorded) is
//! acknowledged too and changes nothing.
//!
//! Every record lands (gateway.proto "Acknowledgement semantics"):
//! - charged → `acked_request_ids`;
//! - a record that can never be charged as it is — malformed, a model with no price
//!   (no fallback), a cost out of range, its key / user / subscription gone, a value the
//!   database refuses for good — goes to the dead-letter table with its reason and the
//!   raw record ([`super::dead_letter`]) → `dead_lettered`; the data plane drops it, an
//!   operator lists it and re-charges it;
//! - a transient error of this record (a deadlock, a busy database) → neither, logged;
//!   the batch goes on and the data plane retries the record;
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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tollgate_shared::proto::gateway::v1 as pb;

use super::BillingSettings;
use super::cost::{self, Cost};
use super::dead_letter;
use super::price_lookup::{PriceSource, PriceTable};
use super::record::{self, Checked};
use super::served;
use crate::error::{Error, Result};
use crate::events::{Change, Invalidation, Invalidations, Scope};
use crate::metrics::BillingMetrics;
use crate::model::UsageRecord;
use crate::storage::{ChargeOutcome, StorageError, Store};

/// What to charge for one checked record, or why it can never be charged as it is.
/// `mapping` is the serving account's model mapping (operator aliases).
pub fn price(
    checked: &Checked,
    mapping: &BTreeMap<String, String>,
    prices: &PriceTable,
    settings: &BillingSettings,
) -> Result<Cost, String> {
    let r = &checked.report;
    let Some((name, rates, source)) = served::price_of(
        &r.model,
        &r.upstream_model,
        mapping,
        prices,
        settings.fallback,
    ) else {
        return Err(format!(
            "no price for model {:?} (served as {:?}); set a price, then re-charge",
            r.model, r.upstream_model
        ));
    };
    if source != PriceSource::Exact || name != r.model {
        tracing::debug!(request_id = r.request_id, model = r.model, priced = name, %source, "priced");
    }
    if r.estimated && !settings.charge_estimates {
        // Stored with its estimated tokens, flagged `estimated`, at zero cost.
        return Ok(Cost::default());
    }
    cost::compute(checked.tokens, rates, checked.rate_multiplier)
        .map_err(|e| format!("cannot price the record: {e}"))
}

/// Model mappings of the accounts a batch names, read at most once each.
#[derive(Default)]
pub(super) struct Mappings(HashMap<i64, BTreeMap<String, String>>);

impl Mappings {
    /// The serving account's mapping when the alias rule could apply, else none (no read).
    pub(super) async fn for_record(
        &mut self,
        store: &Store,
        checked: &Checked,
        prices: &PriceTable,
    ) -> Result<BTreeMap<String, String>> {
        let r = &checked.report;
        if !served::may_be_alias(&r.model, &r.upstream_model, prices) {
            return Ok(BTreeMap::new());
        }
        if let Some(m) = self.0.get(&r.account_id) {
            return Ok(m.clone());
        }
        let mapping = match store.get_account(r.account_id).await {
            Ok(a) => a.model_mapping,
            // A deleted account maps nothing any more: the served model is priced.
            Err(Error::NotFound(_)) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        self.0.insert(r.account_id, mapping.clone());
        Ok(mapping)
    }
}

/// How one record ended.
enum Landed {
    Charged(Box<UsageRecord>, ChargeOutcome),
    /// Can never be charged as it is.
    Permanent(String),
    /// Not stored; the data plane sends it again.
    Retry(Error),
    /// The database itself failed: stop the batch.
    Stop(Error),
}

/// Why a record was not charged.
pub(super) enum Failure {
    /// No retry of the same record can fix it (the reason).
    Permanent(String),
    /// Transient, or the database itself.
    Error(Error),
}

/// Validates, prices and charges one record.
pub(super) async fn charge_one(
    store: &Store,
    prices: &PriceTable,
    mappings: &mut Mappings,
    settings: &BillingSettings,
    report: pb::UsageReport,
    now_ms: i64,
) -> std::result::Result<(UsageRecord, ChargeOutcome), Failure> {
    charge_as(store, prices, mappings, settings, report, false, now_ms).await
}

/// [`charge_one`], with the record flagged `recovered` when it is the control plane's
/// own estimate (`recovered.rs`).
pub(super) async fn charge_as(
    store: &Store,
    prices: &PriceTable,
    mappings: &mut Mappings,
    settings: &BillingSettings,
    report: pb::UsageReport,
    recovered: bool,
    now_ms: i64,
) -> std::result::Result<(UsageRecord, ChargeOutcome), Failure> {
    let checked = record::check(report).map_err(Failure::Permanent)?;
    let mapping = mappings
        .for_record(store, &checked, prices)
        .await
        .map_err(Failure::Error)?;
    let cost = price(&checked, &mapping, prices, settings).map_err(Failure::Permanent)?;
    let mut usage = checked.into_record(cost, now_ms);
    usage.recovered = recovered;
    match store.charge_usage(&usage, now_ms).await {
        Ok(outcome) => Ok((usage, outcome)),
        Err(e) if is_permanent(&e) => Err(Failure::Permanent(e.to_string())),
        Err(e) => Err(Failure::Error(e)),
    }
}

async fn land(
    store: &Store,
    prices: &PriceTable,
    mappings: &mut Mappings,
    settings: &BillingSettings,
    report: pb::UsageReport,
    now_ms: i64,
) -> Landed {
    match charge_one(store, prices, mappings, settings, report, now_ms).await {
        Ok((usage, outcome)) => Landed::Charged(Box::new(usage), outcome),
        Err(Failure::Permanent(reason)) => Landed::Permanent(reason),
        Err(Failure::Error(e)) if belongs_to_record(&e) => Landed::Retry(e),
        Err(Failure::Error(e)) => Landed::Stop(e),
    }
}

/// Handles one `ReportUsage` call (see the module doc).
pub async fn report_usage(
    store: &Store,
    invalidations: &Invalidations,
    settings: &BillingSettings,
    metrics: &BillingMetrics,
    records: Vec<pb::UsageReport>,
    now_ms: i64,
) -> Result<pb::ReportUsageResponse> {
    let mut resp = pb::ReportUsageResponse::default();
    if records.is_empty() {
        return Ok(resp);
    }
    // One snapshot per call: price edits apply from the next batch.
    let prices = PriceTable::load(store).await?;
    let mut mappings = Mappings::default();
    let mut pending = PendingInvalidations::new(invalidations);
    let mut stopped = None;
    for report in records {
        let request_id = report.request_id.clone();
        let raw = report.clone();
        let started = std::time::Instant::now();
        let landed = land(store, &prices, &mut mappings, settings, report, now_ms).await;
        metrics
            .charge_latency
            .observe(started.elapsed().as_secs_f64());
        match landed {
            Landed::Charged(usage, outcome) => {
                pending.charged(&usage, &outcome);
                if outcome.inserted {
                    metrics.record("charged");
                    metrics.charged(&usage);
                } else {
                    metrics.record("replayed");
                    tracing::debug!(request_id, "usage record replayed; already charged");
                }
                resp.acked_request_ids.push(request_id);
            }
            Landed::Permanent(reason) => {
                match dead_letter::store(store, &raw, &reason, now_ms).await {
                    Ok(()) => {
                        metrics.record("dead_lettered");
                        resp.dead_lettered
                            .push(pb::DeadLettered { request_id, reason })
                    }
                    Err(e) if belongs_to_record(&e) => {
                        tracing::error!(request_id, error = %e, "dead letter not stored; will be retried");
                    }
                    Err(e) => {
                        tracing::error!(request_id, error = %e, "charging stopped; the rest of the batch will be retried");
                        stopped = Some(e);
                        break;
                    }
                }
            }
            Landed::Retry(e) => {
                metrics.record("retry");
                tracing::error!(request_id, error = %e, "usage record not charged; will be retried");
            }
            Landed::Stop(e) => {
                tracing::error!(request_id, error = %e, "charging stopped; the rest of the batch will be retried");
                stopped = Some(e);
                break;
            }
        }
    }
    drop(pending);
    match stopped {
        Some(e) if resp.acked_request_ids.is_empty() && resp.dead_lettered.is_empty() => Err(e),
        _ => Ok(resp),
    }
}

/// An error no retry of the same record can fix: a missing key, user or subscription,
/// an overflow guard, a value the database refuses (Postgres SQLSTATE classes 22 data
/// exception and 23 integrity violation; SQLite constraint, mismatch, too big).
pub(super) fn is_permanent(e: &Error) -> bool {
    match e {
        Error::NotFound(_) | Error::InvalidArgument { .. } => true,
        Error::Storage(StorageError::Rejected(sqlx::Error::Database(db))) => {
            let code = db.code().unwrap_or_default();
            if code.len() == 5 {
                // A Postgres SQLSTATE.
                code.starts_with("22") || code.starts_with("23")
            } else {
                // SQLite: the primary result code is the low byte of the extended one.
                matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(18..=20))
            }
        }
        _ => false,
    }
}

/// An error caused by this record's data rather than by the database being away.
pub(super) fn belongs_to_record(e: &Error) -> bool {
    match e {
        Error::Storage(e) => e.is_rejected_data(),
        _ => true,
    }
}

/// Key and user ids whose cached authorization changed; published when dropped.
pub(super) struct PendingInvalidations<'a> {
    bus: &'a Invalidations,
    keys: BTreeSet<i64>,
    users: BTreeSet<i64>,
}

impl<'a> PendingInvalidations<'a> {
    pub(super) fn new(bus: &'a Invalidations) -> Self {
        Self {
            bus,
            keys: BTreeSet::new(),
            users: BTreeSet::new(),
        }
    }

    /// What a committed charge changed. Only charges that change an authorization
    /// decision drop cached entries: invalidating on every charge would make the next
    /// request of every key pay an extra Authorize call. Smaller drifts (quota used,
    /// balance still positive) decide nothing; subscription windows are re-checked by
    /// admission, which reads them from storage.
    pub(super) fn charged(&mut self, usage: &UsageRecord, outcome: &ChargeOutcome) {
        if !outcome.inserted {
            return;
        }
        if outcome.superseded {
            // The estimate's charge was undone: the key or user may be usable again.
            self.key(usage.key_id);
            self.user(usage.user_id);
            return;
        }
        if outcome.key_exhausted {
            self.key(usage.key_id);
            tracing::info!(
                key_id = usage.key_id,
                quota_used_nanos = outcome.key_quota_used_nanos,
                "key quota exhausted"
            );
        }
        if outcome.balance_after_nanos.is_some_and(|b| b <= 0) {
            self.user(usage.user_id);
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
    use crate::billing::Rates;
    use crate::model::Price;

    fn gpt5() -> Price {
        Price {
            model: "gpt-5".into(),
            input_per_mtok_nanos: 1_250_000_000,
            output_per_mtok_nanos: 10_000_000_000,
            cached_input_per_mtok_nanos: 125_000_000,
            updated_at_ms: 0,
        }
    }

    fn table() -> PriceTable {
        PriceTable::new(&[gpt5()])
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

    fn price(checked: &Checked, prices: &PriceTable, s: &BillingSettings) -> Result<Cost, String> {
        super::price(checked, &BTreeMap::new(), prices, s)
    }

    #[test]
    fn priced_on_the_served_model() {
        let s = BillingSettings::default();
        // Requested "gpt-5-high" (unpriced itself), served as gpt-5.
        let c = price(&checked("gpt-5-high", false), &table(), &s).unwrap();
        assert_eq!((c.total_nanos, c.actual_nanos), (3_137_500, 6_275_000));
        // Requested a name with its own price, served as gpt-5: gpt-5's price.
        let mut t = vec![gpt5()];
        t.push(Price {
            model: "cheap".into(),
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 1,
            cached_input_per_mtok_nanos: 1,
            updated_at_ms: 0,
        });
        let c = price(&checked("cheap", false), &PriceTable::new(&t), &s).unwrap();
        assert_eq!(c.total_nanos, 3_137_500);
    }

    #[test]
    fn unpriced_models() {
        let mut unpriced = checked("o9", false);
        unpriced.report.upstream_model = "o9".into();
        let none = BillingSettings::default();
        let reason = price(&unpriced, &table(), &none).unwrap_err();
        assert!(reason.contains("\"o9\""), "{reason}");
        let fallback = BillingSettings {
            fallback: Some(Rates {
                input_per_mtok_nanos: 1_000_000,
                output_per_mtok_nanos: 0,
                cached_input_per_mtok_nanos: 0,
            }),
            ..none
        };
        let c = price(&unpriced, &table(), &fallback).unwrap();
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

    proptest::proptest! {
        /// The invariant of billing.md "Prices": a served request (some tokens) is billed
        /// at zero only when the price that applies is zero or the multiplier is zero;
        /// otherwise it is refused (dead-lettered), never silently free. Whatever the
        /// requested and served names and the account's mapping.
        #[test]
        fn never_free_by_accident(
            requested in "(gpt-5|cheap|free|o9|team)(-high|-2025-08-07)?",
            served in "(gpt-5|cheap|free|o9|team|)(-high|-2025-08-07)?",
            mapped in proptest::bool::ANY,
            // Multipliers of 0 or at least 1: a smaller one may round a 1-nano total to 0.
            multiplier in proptest::sample::select(vec!["0", "1", "1.5", "2"]),
            input in 1i64..100_000,
            output in 0i64..100_000,
        ) {
            let p = |model: &str, n: i64| Price {
                model: model.into(),
                input_per_mtok_nanos: n,
                output_per_mtok_nanos: n,
                cached_input_per_mtok_nanos: n,
                updated_at_ms: 0,
            };
            // Every list price is a whole number of nano-USD per token (billing.md).
            let table = PriceTable::new(&[p("gpt-5", 1_250_000_000), p("cheap", 1_000_000), p("free", 0)]);
            let mapping: BTreeMap<String, String> = if mapped {
                [(requested.clone(), served.clone())].into()
            } else {
                BTreeMap::new()
            };
            let c = record::check(pb::UsageReport {
                request_id: "r".into(),
                key_id: 1,
                user_id: 1,
                group_id: Some(1),
                model: requested.clone(),
                upstream_model: served.clone(),
                input_tokens: input,
                output_tokens: output,
                billing_mode: "balance".into(),
                rate_multiplier: multiplier.into(),
                ..Default::default()
            }).unwrap();
            if let Ok(cost) = super::price(&c, &mapping, &table, &BillingSettings::default())
                && cost.actual_nanos == 0
            {
                let name = served::priced_name(&requested, &served, &mapping, &table);
                let (rates, _) = table.lookup(name, None).unwrap();
                proptest::prop_assert!(
                    multiplier == "0" || rates == Rates::ZERO,
                    "{} served as {:?} billed at zero", requested, served
                );
            }
        }
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
