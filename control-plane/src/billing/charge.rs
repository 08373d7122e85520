//! `ReportUsage`: validate, price and charge a batch of usage records.
//!
//! Per record: [`record::check`], the price of the served model ([`super::served`]),
//! [`cost::compute`] — all before any write (reads only, on pool connections). Then the
//! whole batch is charged in ONE transaction (`Store::begin_charge_batch`,
//! `storage/charge_batch.rs`), each record in a savepoint of its own holding its usage
//! row, the balance or subscription windows and the key's quota: one commit (one fsync
//! on SQLite) per batch instead of one per record, while a record that fails rolls back
//! only its own savepoint. The data plane's batches are small (at most 100 records), so
//! the transaction is short; a failed commit costs a resend of one batch. Records are
//! charged ordered by (user, key) (the answer keeps the data plane's order), so
//! concurrent batches on Postgres lock the same rows in the same order and wait for
//! each other instead of deadlocking.
//!
//! A request id is acknowledged only after the batch's commit succeeded; if the commit
//! fails, nothing of the batch is acknowledged (nor dead-lettered) and the call fails:
//! the data plane sends the batch again, and idempotency by request id makes that safe.
//! A replay (already recorded) is acknowledged too and changes nothing. A real record
//! arriving after the control plane's estimate for its request supersedes it
//! (`storage/supersede.rs`), in its savepoint like any charge.
//!
//! Every record lands (gateway.proto "Acknowledgement semantics"):
//! - charged → `acked_request_ids`;
//! - a record that can never be charged as it is — malformed, a model with no price
//!   (no fallback), a cost out of range, its key / user / subscription gone, a value the
//!   database refuses for good — goes to the dead-letter table with its reason and the
//!   raw record ([`super::dead_letter`]), in the batch's transaction (in a savepoint of
//!   its own) → `dead_lettered` once committed; the data plane drops it, an operator
//!   lists it and re-charges it;
//! - a transient error of this record (a deadlock, a busy database) → neither, logged;
//!   its savepoint is rolled back, the batch goes on and the data plane retries the
//!   record;
//! - an error of the database itself (connection, pool timeout), or a savepoint that
//!   cannot be rolled back → the batch stops: the rest would fail the same way, slowly.
//!   The records before it are committed if the transaction still can be, and
//!   acknowledged; when nothing was, the call fails and the data plane backs off.
//!
//! Invalidations: a charged record may change what data planes cache for its key
//! (quota used, maybe the status) and its user (balance or subscription usage). They
//! are collected over the batch and published once per scope with all ids, right after
//! the commit — the control plane's own admission snapshot first (`publish` tells it
//! before the data planes), so Admit never admits on a cached balance or key the batch
//! exhausted once that is committed. Not before the commit: told early, the snapshot
//! would re-read the balance from storage while the batch is still open (the charges
//! invisible to other connections) and keep that stale value. While the batch is open
//! the snapshot holds what storage holds, committed state. Once the commit started they
//! are published also when the call is cancelled (`Drop`): what committed must reach
//! the caches either way; a batch cancelled before its commit rolled back and publishes
//! nothing.
//!
//! Metrics (`usage_records_total{outcome}` and the charged cost and tokens) count what
//! the commit made durable: `charged` / `replayed` / `dead_lettered` after it, `retry`
//! for the records it did not keep. `charge_latency_seconds` stays per record: the
//! record's own work (checks, pricing, its savepoint) plus the commit of its batch,
//! which it needed to be charged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

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
use crate::storage::{ChargeBatch, ChargeOutcome, StorageError, Store};

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

/// Why a record was not charged.
pub(super) enum Failure {
    /// No retry of the same record can fix it (the reason).
    Permanent(String),
    /// Transient, or the database itself.
    Error(Error),
}

/// Validates, prices and charges one record in its own transaction.
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
    let usage = to_record(store, prices, mappings, settings, report, recovered, now_ms).await?;
    match store.charge_usage(&usage, now_ms).await {
        Ok(outcome) => Ok((usage, outcome)),
        Err(e) => Err(failure(e)),
    }
}

/// Validates and prices one record: the usage row to charge. Reads only.
async fn to_record(
    store: &Store,
    prices: &PriceTable,
    mappings: &mut Mappings,
    settings: &BillingSettings,
    report: pb::UsageReport,
    recovered: bool,
    now_ms: i64,
) -> std::result::Result<UsageRecord, Failure> {
    let checked = record::check(report).map_err(Failure::Permanent)?;
    let mapping = mappings
        .for_record(store, &checked, prices)
        .await
        .map_err(Failure::Error)?;
    let cost = price(&checked, &mapping, prices, settings).map_err(Failure::Permanent)?;
    let mut usage = checked.into_record(cost, now_ms);
    usage.recovered = recovered;
    Ok(usage)
}

fn failure(e: Error) -> Failure {
    if is_permanent(&e) {
        Failure::Permanent(e.to_string())
    } else {
        Failure::Error(e)
    }
}

/// One record of a batch, checked and priced before the transaction opens.
struct Prepared {
    /// Its place in the call: answers keep the data plane's order.
    index: usize,
    raw: pb::UsageReport,
    /// The row to charge, or why the record can never be charged as it is.
    usage: std::result::Result<UsageRecord, String>,
    /// Time spent on this record alone: checking, pricing, its savepoint.
    own: Duration,
}

/// How one record of the batch ended inside the transaction (durable only once the
/// batch committed).
enum Landed {
    /// Charged, or a replay (`inserted: false`); the row is the record's `usage`.
    Charged(ChargeOutcome),
    /// Stored as a dead letter (`new`: not stored by an earlier try).
    DeadLettered { reason: String, new: bool },
    /// Not stored; the data plane sends it again.
    Retry,
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
    let (mut prepared, mut stopped) =
        prepare(store, &prices, settings, metrics, records, now_ms).await;
    if prepared.is_empty() {
        return stopped.map_or(Ok(resp), Err);
    }
    // Every batch locks users (their subscriptions) and keys in the same order, so two
    // batches charging the same users on Postgres wait for each other, never deadlock.
    prepared.sort_by_key(|p| p.usage.as_ref().ok().map(|u| (u.user_id, u.key_id)));

    let mut batch = store.begin_charge_batch().await?;
    let mut pending = PendingInvalidations::for_batch(invalidations);
    let mut landed = Vec::with_capacity(prepared.len());
    for mut p in prepared {
        let started = Instant::now();
        let result = land(&mut batch, &p, now_ms).await;
        p.own += started.elapsed();
        match result {
            Ok(l) => {
                if let (Landed::Charged(outcome), Ok(usage)) = (&l, &p.usage) {
                    pending.charged(usage, outcome);
                }
                landed.push((p, l));
            }
            Err(e) => {
                tracing::error!(request_id = p.raw.request_id, error = %e, "charging stopped; the rest of the batch will be retried");
                metrics.charge_latency.observe(p.own.as_secs_f64());
                stopped = Some(e);
                break;
            }
        }
    }

    let started = Instant::now();
    let committed = if batch.is_broken() {
        // Nothing of it can commit; dropping it rolls it back.
        Err(stopped
            .take()
            .unwrap_or_else(|| Error::Internal("the usage batch's transaction is broken".into())))
    } else {
        // From here the charges may be durable: their invalidations go out even if the
        // call is cancelled during the commit (one for nothing only costs a cache miss).
        pending.committing();
        let committed = batch.commit().await;
        // At once: the admission snapshot must not admit on what the batch just spent.
        drop(pending);
        committed
    };
    // A record's charge is its own work plus the commit that made it durable.
    let commit_time = started.elapsed();
    for (p, _) in &landed {
        metrics
            .charge_latency
            .observe((p.own + commit_time).as_secs_f64());
    }
    if let Err(e) = committed {
        // Nothing of the batch is durable: nothing is acknowledged.
        tracing::error!(error = %e, records = landed.len(), "usage batch not committed; it will be retried");
        for _ in &landed {
            metrics.record("retry");
        }
        return Err(e);
    }
    landed.sort_by_key(|(p, _)| p.index);
    for (p, l) in landed {
        let request_id = p.raw.request_id.clone();
        match l {
            Landed::Charged(outcome) => {
                if outcome.inserted {
                    metrics.record("charged");
                    if let Ok(usage) = &p.usage {
                        metrics.charged(usage);
                    }
                } else {
                    metrics.record("replayed");
                    tracing::debug!(request_id, "usage record replayed; already charged");
                }
                resp.acked_request_ids.push(request_id);
            }
            Landed::DeadLettered { reason, new } => {
                if new {
                    dead_letter::log_stored(&p.raw, &reason);
                }
                metrics.record("dead_lettered");
                resp.dead_lettered
                    .push(pb::DeadLettered { request_id, reason });
            }
            Landed::Retry => metrics.record("retry"),
        }
    }
    match stopped {
        Some(e) if resp.acked_request_ids.is_empty() && resp.dead_lettered.is_empty() => Err(e),
        _ => Ok(resp),
    }
}

/// Checks and prices the records, before the transaction opens: these are reads (an
/// account's model mapping) on pool connections, which a batch holding its write
/// transaction must not wait for (concurrent batches may hold the rest of the pool).
/// Stops at an error of the database itself: the records prepared so far go on.
async fn prepare(
    store: &Store,
    prices: &PriceTable,
    settings: &BillingSettings,
    metrics: &BillingMetrics,
    records: Vec<pb::UsageReport>,
    now_ms: i64,
) -> (Vec<Prepared>, Option<Error>) {
    let mut mappings = Mappings::default();
    let mut prepared = Vec::with_capacity(records.len());
    for (index, report) in records.into_iter().enumerate() {
        let started = Instant::now();
        let raw = report.clone();
        let usage = match to_record(
            store,
            prices,
            &mut mappings,
            settings,
            report,
            false,
            now_ms,
        )
        .await
        {
            Ok(usage) => Ok(usage),
            Err(Failure::Permanent(reason)) => Err(reason),
            Err(Failure::Error(e)) => {
                metrics
                    .charge_latency
                    .observe(started.elapsed().as_secs_f64());
                if !belongs_to_record(&e) {
                    tracing::error!(request_id = raw.request_id, error = %e, "charging stopped; the rest of the batch will be retried");
                    return (prepared, Some(e));
                }
                metrics.record("retry");
                tracing::error!(request_id = raw.request_id, error = %e, "usage record not charged; will be retried");
                continue;
            }
        };
        prepared.push(Prepared {
            index,
            raw,
            usage,
            own: started.elapsed(),
        });
    }
    (prepared, None)
}

/// Charges one prepared record inside the batch, or stores it as a dead letter; `Err`
/// when the database itself failed (or the transaction broke): the batch stops.
async fn land(
    batch: &mut ChargeBatch,
    p: &Prepared,
    now_ms: i64,
) -> std::result::Result<Landed, Error> {
    let request_id = &p.raw.request_id;
    let reason = match &p.usage {
        Err(reason) => reason.clone(),
        Ok(usage) => match batch.charge(usage, now_ms).await {
            Ok(outcome) => return Ok(Landed::Charged(outcome)),
            Err(e) if batch.is_broken() => return Err(e),
            Err(e) => match failure(e) {
                Failure::Permanent(reason) => reason,
                Failure::Error(e) if belongs_to_record(&e) => {
                    tracing::error!(request_id, error = %e, "usage record not charged; will be retried");
                    return Ok(Landed::Retry);
                }
                Failure::Error(e) => return Err(e),
            },
        },
    };
    match dead_letter::store_in(batch, &p.raw, &reason, now_ms).await {
        Ok(new) => Ok(Landed::DeadLettered { reason, new }),
        Err(e) if batch.is_broken() || !belongs_to_record(&e) => Err(e),
        Err(e) => {
            tracing::error!(request_id, error = %e, "dead letter not stored; will be retried");
            Ok(Landed::Retry)
        }
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

/// Key and user ids whose cached authorization changed; published when dropped, once
/// the charges are committed (or their commit was started).
pub(super) struct PendingInvalidations<'a> {
    bus: &'a Invalidations,
    keys: BTreeSet<i64>,
    users: BTreeSet<i64>,
    /// The charges reported are committed: the snapshot hears of each at once, and
    /// everything is published on drop. Before that (a batch still open), nothing is
    /// published: a snapshot told early would re-read the balance before the commit
    /// and keep it.
    committed: bool,
}

impl<'a> PendingInvalidations<'a> {
    /// For charges committed one by one (each in its own transaction).
    pub(super) fn new(bus: &'a Invalidations) -> Self {
        Self {
            bus,
            keys: BTreeSet::new(),
            users: BTreeSet::new(),
            committed: true,
        }
    }

    /// For the charges of one batch transaction: published after [`Self::committing`].
    pub(super) fn for_batch(bus: &'a Invalidations) -> Self {
        let mut pending = Self::new(bus);
        pending.committed = false;
        pending
    }

    /// The batch's commit starts: publish on drop, whether it succeeds or not (an
    /// invalidation of an entry that did not change only costs a cache miss).
    pub(super) fn committing(&mut self) {
        self.committed = true;
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

    /// Drops the control plane's cached key now when committed; data planes hear it on
    /// the way out.
    fn key(&mut self, id: i64) {
        if self.committed {
            self.bus
                .publish_local(Change::Invalidated(Invalidation::key(id)));
        }
        self.keys.insert(id);
    }

    /// Drops the control plane's cached user now when committed; data planes hear it on
    /// the way out.
    fn user(&mut self, id: i64) {
        if self.committed {
            self.bus
                .publish_local(Change::Invalidated(Invalidation::user(id)));
        }
        self.users.insert(id);
    }
}

impl Drop for PendingInvalidations<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // The batch never reached its commit: it rolled back, nothing changed.
            return;
        }
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

    /// A batch's invalidations wait for its commit: told while the batch is open, the
    /// admission snapshot would re-read and keep the balance from before the batch.
    /// A batch that never reached its commit (rolled back) publishes nothing.
    #[test]
    fn a_batch_publishes_only_once_its_commit_started() {
        let bus = Invalidations::new();
        let mut rx = bus.subscribe();
        let generation = bus.generation();
        {
            let mut p = PendingInvalidations::for_batch(&bus);
            p.key(3);
            p.user(1);
            assert_eq!(bus.generation(), generation, "the snapshot was told early");
        }
        assert!(rx.try_recv().is_err(), "a rolled-back batch published");
        assert_eq!(bus.generation(), generation);
        {
            let mut p = PendingInvalidations::for_batch(&bus);
            p.key(3);
            p.user(1);
            assert_eq!(bus.generation(), generation);
            p.committing();
        }
        assert_eq!(rx.try_recv().unwrap(), Invalidation::key(3));
        assert_eq!(rx.try_recv().unwrap(), Invalidation::user(1));
        assert!(bus.generation() > generation, "the snapshot was not told");
    }
}
