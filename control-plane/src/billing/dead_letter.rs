//! Dead letters: usage records that can never be charged as they are (billing.md "Every
//! admitted request ends in exactly one usage record"). Stored with the reason and the
//! record as JSON, acknowledged to the data plane as dead-lettered (so its queue never
//! blocks behind them), counted and listed for operators, and re-charged by an operator
//! — optionally under a corrected model — exactly once: the re-charge goes through
//! `Store::charge_usage`, idempotent by request id, and is then marked.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_shared::proto::gateway::v1 as pb;

use super::BillingSettings;
use super::charge::{self, Failure, Mappings, PendingInvalidations};
use super::price_lookup::PriceTable;
use super::record;
use crate::error::{Error, Result};
use crate::events::Invalidations;
use crate::model::{DeadLetter, UsageRecord};
use crate::storage::{ChargeBatch, Store};

/// The wire record as JSON (prost messages are not serde types). Field names are the
/// proto's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RawUsage {
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
    pub stream: bool,
    pub duration_ms: i64,
    pub first_token_ms: Option<i64>,
    pub user_agent: String,
    pub client_ip: String,
    pub reasoning_effort: String,
    pub estimated: bool,
    pub started_at_ms: i64,
    pub billing_mode: String,
    pub rate_multiplier: String,
    pub account_cost_multiplier: String,
    pub client_request_id: String,
    pub upstream_request_id: String,
}

impl From<&pb::UsageReport> for RawUsage {
    fn from(r: &pb::UsageReport) -> Self {
        Self {
            request_id: r.request_id.clone(),
            key_id: r.key_id,
            user_id: r.user_id,
            group_id: r.group_id,
            subscription_id: r.subscription_id,
            account_id: r.account_id,
            model: r.model.clone(),
            upstream_model: r.upstream_model.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            stream: r.stream,
            duration_ms: r.duration_ms,
            first_token_ms: r.first_token_ms,
            user_agent: r.user_agent.clone(),
            client_ip: r.client_ip.clone(),
            reasoning_effort: r.reasoning_effort.clone(),
            estimated: r.estimated,
            started_at_ms: r.started_at_ms,
            billing_mode: r.billing_mode.clone(),
            rate_multiplier: r.rate_multiplier.clone(),
            account_cost_multiplier: r.account_cost_multiplier.clone(),
            client_request_id: r.client_request_id.clone(),
            upstream_request_id: r.upstream_request_id.clone(),
        }
    }
}

impl From<RawUsage> for pb::UsageReport {
    fn from(r: RawUsage) -> Self {
        Self {
            request_id: r.request_id,
            key_id: r.key_id,
            user_id: r.user_id,
            group_id: r.group_id,
            subscription_id: r.subscription_id,
            account_id: r.account_id,
            model: r.model,
            upstream_model: r.upstream_model,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            stream: r.stream,
            duration_ms: r.duration_ms,
            first_token_ms: r.first_token_ms,
            user_agent: r.user_agent,
            client_ip: r.client_ip,
            reasoning_effort: r.reasoning_effort,
            estimated: r.estimated,
            started_at_ms: r.started_at_ms,
            billing_mode: r.billing_mode,
            rate_multiplier: r.rate_multiplier,
            account_cost_multiplier: r.account_cost_multiplier,
            client_request_id: r.client_request_id,
            upstream_request_id: r.upstream_request_id,
        }
    }
}

/// The JSON text of a record. Any byte is escaped (`\u0000`), so it stores on Postgres.
pub fn to_json(report: &pb::UsageReport) -> Result<String> {
    serde_json::to_string(&RawUsage::from(report))
        .map_err(|e| Error::Internal(format!("usage record as JSON: {e}")))
}

/// The id a dead letter is kept under: the record's request id when it is a usable one
/// (so a replay is recognised and a re-charge stays idempotent against a late
/// original), else `invalid:` + the SHA-256 of the JSON.
pub fn key_of(report: &pb::UsageReport, json: &str) -> String {
    if record::check_request_id(&report.request_id).is_ok() {
        report.request_id.clone()
    } else {
        format!("invalid:{}", hex::encode(Sha256::digest(json.as_bytes())))
    }
}

/// Stores one dead letter (a replay of one already stored changes nothing).
pub async fn store(
    store: &Store,
    report: &pb::UsageReport,
    reason: &str,
    now_ms: i64,
) -> Result<()> {
    let json = to_json(report)?;
    let key = key_of(report, &json);
    let new = store
        .insert_dead_letter(&key, reason, &json, now_ms)
        .await?;
    if new {
        log_stored(report, reason);
    }
    Ok(())
}

/// Stores one dead letter inside a usage batch's transaction (durable with its commit);
/// `true` when new: log it with [`log_stored`] once the batch committed.
pub async fn store_in(
    batch: &mut ChargeBatch,
    report: &pb::UsageReport,
    reason: &str,
    now_ms: i64,
) -> Result<bool> {
    let json = to_json(report)?;
    let key = key_of(report, &json);
    batch.insert_dead_letter(&key, reason, &json, now_ms).await
}

/// The operator's log line of a new dead letter.
pub fn log_stored(report: &pb::UsageReport, reason: &str) {
    let dead_letter = match to_json(report) {
        Ok(json) => key_of(report, &json),
        Err(_) => report.request_id.clone(),
    };
    tracing::warn!(
        request_id = report.request_id,
        dead_letter,
        reason,
        "usage record dead-lettered"
    );
}

/// The result of a re-charge.
#[derive(Debug, Clone)]
pub struct Recharged {
    pub dead_letter: DeadLetter,
    pub usage: UsageRecord,
    /// `false`: the request id was already charged (by the data plane's own late retry,
    /// or a concurrent re-charge); nothing was charged again.
    pub charged_now: bool,
}

/// Re-charges dead letter `id`, with `model` (if given) as both the requested and the
/// served model. Refused when already re-charged, or when the record still cannot be
/// charged (the reason says why: give a model, set a price, …).
pub async fn recharge(
    store: &Store,
    invalidations: &Invalidations,
    settings: &BillingSettings,
    id: i64,
    model: Option<&str>,
    now_ms: i64,
) -> Result<Recharged> {
    let dl = store.get_dead_letter(id).await?;
    if let Some(at) = dl.recharged_at_ms {
        return Err(Error::FailedPrecondition(format!(
            "dead letter {id} was already re-charged (at {at} ms, as {:?})",
            dl.recharged_model
        )));
    }
    let raw: RawUsage = serde_json::from_str(&dl.record)
        .map_err(|e| Error::Internal(format!("dead letter {id}: stored record unreadable: {e}")))?;
    let mut report = pb::UsageReport::from(raw);
    report.request_id = dl.request_id.clone();
    if let Some(m) = model {
        report.model = m.to_owned();
        report.upstream_model = m.to_owned();
    }
    let prices = PriceTable::load(store).await?;
    let mut mappings = Mappings::default();
    let (usage, outcome) =
        match charge::charge_one(store, &prices, &mut mappings, settings, report, now_ms).await {
            Ok(done) => done,
            Err(Failure::Permanent(reason)) => {
                return Err(Error::FailedPrecondition(format!(
                    "dead letter {id} still cannot be charged: {reason}"
                )));
            }
            Err(Failure::Error(e)) => return Err(e),
        };
    PendingInvalidations::new(invalidations).charged(&usage, &outcome);
    store
        .mark_dead_letter_recharged(id, &usage.upstream_model, now_ms)
        .await?;
    tracing::info!(
        dead_letter = id,
        request_id = usage.request_id,
        charged_now = outcome.inserted,
        "dead letter re-charged"
    );
    Ok(Recharged {
        dead_letter: store.get_dead_letter(id).await?,
        usage,
        charged_now: outcome.inserted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_byte() {
        let report = pb::UsageReport {
            request_id: "r\0".into(),
            model: format!("gpt-5\u{1}{}", "x".repeat(300)),
            group_id: Some(3),
            first_token_ms: Some(9),
            input_tokens: 12,
            rate_multiplier: "1.5".into(),
            ..Default::default()
        };
        let json = to_json(&report).unwrap();
        assert!(!json.contains('\0'), "NUL escaped for Postgres TEXT");
        let back: pb::UsageReport = serde_json::from_str::<RawUsage>(&json).unwrap().into();
        assert_eq!(back, report);
        let key = key_of(&report, &json);
        assert!(key.starts_with("invalid:") && key.len() == 8 + 64, "{key}");
        let good = pb::UsageReport {
            request_id: "req-1".into(),
            ..report
        };
        assert_eq!(key_of(&good, &json), "req-1");
    }
}
