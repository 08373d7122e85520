//! The edge between the generated Gateway types and the data plane's domain types.
//! Answers from the control plane are validated here; nothing past `control/` sees a
//! wire type.

use std::time::Duration;

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::{GroupKind, GroupStatus, SubscriptionStatus, UserStatus};
use tollgate_shared::proto::gateway::v1 as pb;

use super::domain::{
    AccountLease, Admission, AdmitRequest, Authorization, HeldLease, Invalidation,
    InvalidationScope, Lease, Outcome, OutcomeKind, ResponseRecord, Secret, UsageAck, UsageReport,
};
use crate::proxy::auth_info::{GroupInfo, KeyInfo, SubscriptionInfo, UserInfo, parse_net};

/// The cache lifetime the control plane may ask for, clamped to sane bounds.
const TTL_MIN_MS: u32 = 100;
const TTL_MAX_MS: u32 = 300_000;

pub fn authorization(resp: pb::AuthorizeResponse) -> Authorization {
    Authorization {
        key: resp.key.map(key_info),
        ttl: Duration::from_millis(u64::from(resp.ttl_ms.clamp(TTL_MIN_MS, TTL_MAX_MS))),
    }
}

/// Statuses parsed once (IP lists too); an unknown key status stays `None` (treated as
/// disabled by the checks).
pub fn key_info(k: pb::KeyAuth) -> KeyInfo {
    KeyInfo {
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

pub fn admit_request(r: AdmitRequest) -> pb::AdmitRequest {
    pb::AdmitRequest {
        session_id: r.session_id,
        request_id: r.request_id,
        key_id: r.key_id,
        model: r.model,
        session_hash: r.session_hash,
        excluded_account_ids: r.excluded_account_ids,
        user_lease_id: r.user_lease_id.unwrap_or_default(),
        stream: r.stream,
        default_codex_model: r.default_codex_model,
        response_id: r.response_id,
        response_operation: r.response_operation,
        request_bytes: r.request_bytes,
    }
}

pub fn admission(resp: pb::AdmitResponse) -> Admission {
    match resp.result {
        Some(pb::admit_response::Result::Lease(lease)) => self::lease(lease),
        Some(pb::admit_response::Result::Rejection(r)) => Admission::Refused {
            code: ErrorCode::from_name(&r.code).unwrap_or(ErrorCode::Internal),
            message: r.message,
        },
        None => Admission::Malformed {
            lease_id: None,
            reason: "Admission returned no result",
        },
    }
}

/// A lease must name its account, of a kind this build knows; otherwise it is useless
/// but still granted, so it is handed back for release.
fn lease(mut l: pb::Lease) -> Admission {
    let malformed = |lease_id: String, reason| Admission::Malformed {
        lease_id: Some(lease_id).filter(|id| !id.is_empty()),
        reason,
    };
    // Taken, not copied: the account (its model mapping above all) moves into the lease.
    let Some(a) = l.account.take() else {
        return malformed(l.lease_id, "Admission returned no account");
    };
    let Ok(kind) = a.kind.parse() else {
        return malformed(
            l.lease_id,
            "Admission returned an account of an unknown kind",
        );
    };
    Admission::Granted(Box::new(Lease {
        lease_id: l.lease_id,
        user_id: l.user_id,
        group_id: l.group_id,
        subscription_id: l.subscription_id,
        billing_mode: l.billing_mode,
        rate_multiplier: l.rate_multiplier,
        queued: std::time::Duration::from_micros(u64::try_from(l.queued_us).unwrap_or(0)),
        account: AccountLease {
            account_id: a.account_id,
            kind,
            upstream_url: a.upstream_url,
            bearer: Secret::new(a.bearer),
            chatgpt_account_id: a.chatgpt_account_id,
            model_mapping: a.model_mapping,
            proxy_url: Secret::new(a.proxy_url),
            user_agent: a.user_agent,
            cost_multiplier: a.cost_multiplier,
        },
    }))
}

pub fn response_record(r: ResponseRecord) -> pb::RecordResponseRequest {
    pb::RecordResponseRequest {
        response_id: r.response_id,
        account_id: r.account_id,
        user_id: r.user_id,
        request_id: r.request_id,
    }
}

pub fn held_lease(h: HeldLease) -> pb::HeldLease {
    pb::HeldLease {
        lease_id: h.lease_id,
        user_id: h.user_id,
        account_id: h.account_id,
    }
}

/// An unknown scope drops everything: safe, if wasteful.
pub fn invalidation(msg: pb::Invalidate) -> Invalidation {
    use pb::invalidate::Scope;
    let scope = match Scope::try_from(msg.scope).unwrap_or(Scope::All) {
        Scope::Key => InvalidationScope::Keys,
        Scope::User => InvalidationScope::Users,
        Scope::Group => InvalidationScope::Groups,
        Scope::Account => InvalidationScope::Accounts,
        Scope::All | Scope::Unspecified => InvalidationScope::All,
    };
    Invalidation {
        scope,
        ids: msg.ids,
    }
}

pub fn outcome(o: Outcome) -> pb::ReportOutcomeRequest {
    use pb::report_outcome_request::Kind;
    let kind = match o.kind {
        OutcomeKind::HttpStatus => Kind::HttpStatus,
        OutcomeKind::ConnectError => Kind::ConnectError,
        OutcomeKind::StreamTimeout => Kind::StreamTimeout,
        OutcomeKind::Success => Kind::Success,
    };
    pb::ReportOutcomeRequest {
        account_id: o.account_id,
        request_id: o.request_id,
        status: o.status.map_or(0, u32::from),
        kind: kind as i32,
        message: o.message,
        headers: o.headers,
        body: o.body,
    }
}

pub fn usage_report(u: UsageReport) -> pb::UsageReport {
    pb::UsageReport {
        request_id: u.request_id,
        key_id: u.key_id,
        user_id: u.user_id,
        group_id: u.group_id,
        subscription_id: u.subscription_id,
        account_id: u.account_id,
        model: u.model,
        upstream_model: u.upstream_model,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cached_tokens: u.cached_tokens,
        reasoning_tokens: u.reasoning_tokens,
        stream: u.stream,
        duration_ms: u.duration_ms,
        first_token_ms: u.first_token_ms,
        user_agent: u.user_agent,
        client_ip: u.client_ip,
        reasoning_effort: u.reasoning_effort,
        estimated: u.estimated,
        started_at_ms: u.started_at_ms,
        billing_mode: u.billing_mode,
        rate_multiplier: u.rate_multiplier,
        account_cost_multiplier: u.account_cost_multiplier,
        client_request_id: u.client_request_id,
        upstream_request_id: u.upstream_request_id,
    }
}

pub fn usage_ack(resp: pb::ReportUsageResponse) -> UsageAck {
    UsageAck {
        acked: resp.acked_request_ids,
        rejected: resp
            .rejected
            .into_iter()
            .map(|r| (r.request_id, r.reason))
            .collect(),
        dead_lettered: resp
            .dead_lettered
            .into_iter()
            .map(|r| (r.request_id, r.reason))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> pb::AccountLease {
        pb::AccountLease {
            account_id: 7,
            kind: "oauth".into(),
            bearer: "tok".into(),
            ..Default::default()
        }
    }

    fn granted(lease: pb::Lease) -> Admission {
        admission(pb::AdmitResponse {
            result: Some(pb::admit_response::Result::Lease(lease)),
        })
    }

    #[test]
    fn a_lease_without_account_is_handed_back() {
        let a = granted(pb::Lease {
            lease_id: "L1".into(),
            account: None,
            ..Default::default()
        });
        assert!(
            matches!(a, Admission::Malformed { lease_id: Some(ref id), .. } if id == "L1"),
            "{a:?}"
        );
    }

    #[test]
    fn an_unknown_account_kind_is_handed_back() {
        let a = granted(pb::Lease {
            lease_id: "L2".into(),
            account: Some(pb::AccountLease {
                kind: "carrier_pigeon".into(),
                ..account()
            }),
            ..Default::default()
        });
        assert!(
            matches!(a, Admission::Malformed { lease_id: Some(ref id), .. } if id == "L2"),
            "{a:?}"
        );
    }

    #[test]
    fn a_valid_lease_has_a_typed_account() {
        let Admission::Granted(l) = granted(pb::Lease {
            lease_id: "L3".into(),
            account: Some(account()),
            ..Default::default()
        }) else {
            panic!("not granted")
        };
        assert_eq!(l.account.kind, tollgate_shared::domain::AccountKind::OAuth);
        assert_eq!(l.account.bearer.expose(), "tok");
        assert!(l.account.proxy_url.is_empty());
    }

    #[test]
    fn unknown_refusal_codes_become_internal() {
        let a = admission(pb::AdmitResponse {
            result: Some(pb::admit_response::Result::Rejection(pb::Rejection {
                code: "no_such_code".into(),
                message: "m".into(),
            })),
        });
        assert!(matches!(
            a,
            Admission::Refused {
                code: ErrorCode::Internal,
                ..
            }
        ));
    }
}
