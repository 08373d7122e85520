//! Validation of one `UsageReport` at the edge. A malformed record is refused for good
//! (`RejectedUsage` with the reason), so every check here must be one a retry cannot fix.

use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;
use tollgate_shared::proto::gateway::v1 as pb;

use super::cost::{Cost, Tokens};
use crate::model::UsageRecord;

/// Longest request id and model name accepted (the data plane sends UUIDs and model
/// names of a few dozen bytes).
const MAX_ID_LEN: usize = 256;
/// Free-text fields kept for operators are cut to this many bytes (at a char boundary).
const MAX_TEXT_LEN: usize = 1024;

/// A report that passed validation, with its parsed fields.
#[derive(Debug, Clone)]
pub struct Checked {
    pub report: pb::UsageReport,
    pub tokens: Tokens,
    pub billing_mode: BillingMode,
    pub rate_multiplier: Multiplier,
    pub account_cost_multiplier: Multiplier,
}

/// A request id the usage table can hold: not blank, at most `MAX_ID_LEN` bytes, no
/// control characters (a NUL is refused by Postgres).
pub fn check_request_id(id: &str) -> Result<(), String> {
    name("request_id", id)
}

fn name(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if v.len() > MAX_ID_LEN {
        return Err(format!("{field} is longer than {MAX_ID_LEN} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{field} contains a control character"));
    }
    Ok(())
}

/// Checks one report; the error is the reason it is dead-lettered with.
pub fn check(report: pb::UsageReport) -> Result<Checked, String> {
    let r = &report;
    check_request_id(&r.request_id)?;
    name("model", &r.model)?;
    // Empty only from data planes older than the served-model pricing (then the
    // requested model is priced).
    if !r.upstream_model.is_empty() {
        name("upstream_model", &r.upstream_model)?;
    }
    if r.key_id <= 0 {
        return Err(format!("key_id {} is not a key id", r.key_id));
    }
    if r.user_id <= 0 {
        return Err(format!("user_id {} is not a user id", r.user_id));
    }
    for (name, v) in [
        ("input_tokens", r.input_tokens),
        ("output_tokens", r.output_tokens),
        ("cached_tokens", r.cached_tokens),
        ("reasoning_tokens", r.reasoning_tokens),
        ("account_id", r.account_id),
        ("duration_ms", r.duration_ms),
    ] {
        if v < 0 {
            return Err(format!("{name} is negative ({v})"));
        }
    }
    let billing_mode: BillingMode = r.billing_mode.parse().map_err(|_| {
        format!(
            "unknown billing_mode {:?} (expected balance or subscription)",
            r.billing_mode
        )
    })?;
    if billing_mode == BillingMode::Subscription && r.subscription_id.is_none() {
        return Err("billing_mode subscription without subscription_id".into());
    }
    // A group always has a multiplier, so an empty one is a data-plane bug; without a
    // group the spec's default (1) applies. Never "0 means 1": 0 is free.
    let rate_multiplier = if r.rate_multiplier.trim().is_empty() && r.group_id.is_none() {
        Multiplier::ONE
    } else {
        multiplier("rate_multiplier", &r.rate_multiplier)?
    };
    // Statistics only: absent means the account default (1).
    let account_cost_multiplier = if r.account_cost_multiplier.trim().is_empty() {
        Multiplier::ONE
    } else {
        multiplier("account_cost_multiplier", &r.account_cost_multiplier)?
    };
    let tokens = Tokens {
        input: r.input_tokens,
        output: r.output_tokens,
        cached: r.cached_tokens,
    };
    Ok(Checked {
        report,
        tokens,
        billing_mode,
        rate_multiplier,
        account_cost_multiplier,
    })
}

fn multiplier(name: &str, v: &str) -> Result<Multiplier, String> {
    v.parse()
        .map_err(|e| format!("{name} {v:?} is not a multiplier: {e}"))
}

fn cut(mut s: String) -> String {
    // Kept for operators, never a reason to lose the record: Postgres refuses NUL.
    s.retain(|c| c != '\0');
    if s.len() > MAX_TEXT_LEN {
        let mut end = MAX_TEXT_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Checked {
    /// The usage row: every token count, every cost component, both multipliers.
    /// `created_at_ms` is when the request started (`started_at_ms`), or `now_ms` when
    /// the data plane did not say.
    pub fn into_record(self, cost: Cost, now_ms: i64) -> UsageRecord {
        let r = self.report;
        UsageRecord {
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
            input_cost_nanos: cost.input_nanos,
            output_cost_nanos: cost.output_nanos,
            cached_cost_nanos: cost.cached_nanos,
            total_cost_nanos: cost.total_nanos,
            actual_cost_nanos: cost.actual_nanos,
            rate_multiplier: self.rate_multiplier,
            account_cost_multiplier: self.account_cost_multiplier,
            billing_mode: self.billing_mode,
            stream: r.stream,
            duration_ms: r.duration_ms,
            first_token_ms: r.first_token_ms,
            user_agent: cut(r.user_agent),
            client_ip: cut(r.client_ip),
            reasoning_effort: cut(r.reasoning_effort),
            estimated: r.estimated,
            client_request_id: cut(r.client_request_id),
            upstream_request_id: cut(r.upstream_request_id),
            recovered: false,
            created_at_ms: if r.started_at_ms > 0 {
                r.started_at_ms
            } else {
                now_ms
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> pb::UsageReport {
        pb::UsageReport {
            request_id: "req-1".into(),
            key_id: 1,
            user_id: 2,
            account_id: 3,
            model: "gpt-5".into(),
            input_tokens: 10,
            output_tokens: 5,
            billing_mode: "balance".into(),
            rate_multiplier: "1".into(),
            ..Default::default()
        }
    }

    fn reason(f: impl FnOnce(&mut pb::UsageReport)) -> String {
        let mut r = report();
        f(&mut r);
        check(r).unwrap_err()
    }

    #[test]
    fn malformed_records_name_the_problem() {
        assert!(reason(|r| r.request_id = " ".into()).contains("request_id"));
        assert!(reason(|r| r.request_id = "x".repeat(300)).contains("request_id"));
        assert!(reason(|r| r.request_id = "a\0b".into()).contains("request_id"));
        assert!(reason(|r| r.model.clear()).contains("model"));
        assert!(reason(|r| r.model = "gpt-5\0".into()).contains("control character"));
        assert!(reason(|r| r.model = "x".repeat(300)).contains("model is longer"));
        assert!(reason(|r| r.upstream_model = "g\n".into()).contains("upstream_model"));
        assert!(reason(|r| r.key_id = 0).contains("key_id"));
        assert!(reason(|r| r.user_id = -1).contains("user_id"));
        assert!(reason(|r| r.input_tokens = -1).contains("input_tokens"));
        assert!(reason(|r| r.output_tokens = -1).contains("output_tokens"));
        assert!(reason(|r| r.cached_tokens = -1).contains("cached_tokens"));
        assert!(reason(|r| r.reasoning_tokens = -1).contains("reasoning_tokens"));
        assert!(reason(|r| r.billing_mode = "free".into()).contains("billing_mode"));
        assert!(reason(|r| r.billing_mode = "subscription".into()).contains("subscription_id"));
        assert!(reason(|r| r.rate_multiplier = "x".into()).contains("rate_multiplier"));
        assert!(reason(|r| r.rate_multiplier = "-1".into()).contains("rate_multiplier"));
        assert!(
            reason(|r| {
                r.group_id = Some(4);
                r.rate_multiplier.clear();
            })
            .contains("rate_multiplier")
        );
        assert!(
            reason(|r| r.account_cost_multiplier = "1.0000001".into())
                .contains("account_cost_multiplier")
        );
    }

    #[test]
    fn defaults_and_zero() {
        let mut r = report();
        r.rate_multiplier.clear();
        let c = check(r).unwrap();
        assert_eq!(c.rate_multiplier, Multiplier::ONE);
        assert_eq!(c.account_cost_multiplier, Multiplier::ONE);
        let mut r = report();
        r.group_id = Some(4);
        r.rate_multiplier = "0".into();
        r.account_cost_multiplier = "0.8".into();
        let c = check(r).unwrap();
        assert_eq!(c.rate_multiplier, Multiplier::ZERO);
        assert_eq!(c.account_cost_multiplier.ppm(), 800_000);
    }

    #[test]
    fn record_keeps_everything() {
        let mut r = report();
        r.started_at_ms = 0;
        r.user_agent = "é".repeat(600);
        r.first_token_ms = Some(12);
        r.reasoning_tokens = 7;
        r.estimated = true;
        let cost = Cost {
            input_nanos: 1,
            output_nanos: 2,
            cached_nanos: 3,
            total_nanos: 6,
            actual_nanos: 9,
        };
        let rec = check(r).unwrap().into_record(cost, 42);
        assert_eq!(rec.created_at_ms, 42);
        assert_eq!(rec.user_agent.len(), 1024);
        assert_eq!(
            (
                rec.input_cost_nanos,
                rec.output_cost_nanos,
                rec.cached_cost_nanos,
                rec.total_cost_nanos,
                rec.actual_cost_nanos
            ),
            (1, 2, 3, 6, 9)
        );
        assert_eq!((rec.reasoning_tokens, rec.first_token_ms), (7, Some(12)));
        assert!(rec.estimated);
        let mut r = report();
        r.started_at_ms = 7;
        assert_eq!(check(r).unwrap().into_record(cost, 42).created_at_ms, 7);
    }
}
