//! Domain → wire conversions for Admin responses. Requests go the other way through the
//! validating handlers; these never fail. Secrets never cross here: `Account` leaves out
//! the credential and shows the proxy URL without its user name and password, and
//! `ApiKey` carries only the hint.

use tollgate_shared::proto::admin::v1 as pb;

use super::account_urls::strip_credentials;
use crate::model;

pub fn user(u: model::User) -> pb::User {
    pb::User {
        id: u.id,
        email: u.email,
        name: u.name,
        role: u.role.as_str().to_owned(),
        status: u.status.as_str().to_owned(),
        balance_nanos: u.balance_nanos,
        concurrency: u.concurrency,
        notes: u.notes,
        created_at_ms: u.created_at_ms,
        updated_at_ms: u.updated_at_ms,
    }
}

pub fn ledger_entry(e: model::LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        id: e.id,
        user_id: e.user_id,
        kind: e.kind,
        delta_nanos: e.delta_nanos,
        balance_after_nanos: e.balance_after_nanos,
        reason: e.reason,
        created_at_ms: e.created_at_ms,
    }
}

pub fn group(g: model::Group) -> pb::Group {
    pb::Group {
        id: g.id,
        name: g.name,
        platform: g.platform.as_str().to_owned(),
        rate_multiplier: g.rate_multiplier.to_string(),
        kind: g.kind.as_str().to_owned(),
        daily_limit_nanos: g.daily_limit_nanos,
        weekly_limit_nanos: g.weekly_limit_nanos,
        monthly_limit_nanos: g.monthly_limit_nanos,
        status: g.status.as_str().to_owned(),
        exclusive: g.exclusive,
        description: g.description,
        created_at_ms: g.created_at_ms,
        updated_at_ms: g.updated_at_ms,
    }
}

pub fn api_key(k: model::ApiKey, usage: model::UsageTotals) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id,
        user_id: k.user_id,
        name: k.name,
        group_id: k.group_id,
        status: k.status.as_str().to_owned(),
        ip_allow: k.ip_allow,
        ip_deny: k.ip_deny,
        quota_nanos: k.quota_nanos,
        quota_used_nanos: k.quota_used_nanos,
        expires_at_ms: k.expires_at_ms,
        key_hint: k.key_hint,
        created_at_ms: k.created_at_ms,
        updated_at_ms: k.updated_at_ms,
        last_used_at_ms: k.last_used_at_ms,
        usage: Some(usage_totals(usage)),
    }
}

pub fn account(a: model::Account) -> pb::Account {
    // Destructure so that a new field (a new secret, say) cannot slip out unnoticed.
    let model::Account {
        id,
        name,
        platform,
        kind,
        base_url,
        credential: _,
        concurrency,
        priority,
        status,
        error_message,
        schedulable,
        model_mapping,
        proxy_url,
        user_agent,
        rate_limited_until_ms,
        overloaded_until_ms,
        temp_unschedulable_until_ms,
        temp_unschedulable_reason,
        expires_at_ms,
        chatgpt_account_id,
        codex_usage,
        cost_multiplier,
        notes,
        groups,
        last_used_at_ms,
        created_at_ms,
        updated_at_ms,
    } = a;
    pb::Account {
        id,
        name,
        kind: kind.as_str().to_owned(),
        platform: platform.as_str().to_owned(),
        base_url,
        concurrency,
        priority,
        status: status.as_str().to_owned(),
        error_message,
        schedulable,
        model_mapping: model_mapping.into_iter().collect(),
        proxy_url: strip_credentials(&proxy_url),
        user_agent,
        rate_limited_until_ms,
        overloaded_until_ms,
        temp_unschedulable_until_ms,
        temp_unschedulable_reason,
        expires_at_ms,
        chatgpt_account_id,
        groups: groups.into_iter().map(account_group).collect(),
        codex_usage: codex_usage.into_iter().collect(),
        last_used_at_ms,
        created_at_ms,
        updated_at_ms,
        cost_multiplier: cost_multiplier.to_string(),
        notes,
    }
}

fn account_group(g: model::AccountGroup) -> pb::AccountGroup {
    pb::AccountGroup {
        group_id: g.group_id,
        priority: g.priority,
    }
}

pub fn subscription(s: model::Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id,
        user_id: s.user_id,
        group_id: s.group_id,
        starts_at_ms: s.starts_at_ms,
        expires_at_ms: s.expires_at_ms,
        status: s.status.as_str().to_owned(),
        daily_usage_nanos: s.daily_usage_nanos,
        weekly_usage_nanos: s.weekly_usage_nanos,
        monthly_usage_nanos: s.monthly_usage_nanos,
        daily_window_start_ms: s.daily_window_start_ms,
        weekly_window_start_ms: s.weekly_window_start_ms,
        monthly_window_start_ms: s.monthly_window_start_ms,
        notes: s.notes,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
    }
}

pub fn price(p: model::Price) -> pb::Price {
    pb::Price {
        model: p.model,
        input_per_mtok_nanos: p.input_per_mtok_nanos,
        output_per_mtok_nanos: p.output_per_mtok_nanos,
        cached_input_per_mtok_nanos: p.cached_input_per_mtok_nanos,
        updated_at_ms: p.updated_at_ms,
    }
}

pub fn usage_record(r: model::UsageRecord) -> pb::UsageRecord {
    pb::UsageRecord {
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
        input_cost_nanos: r.input_cost_nanos,
        output_cost_nanos: r.output_cost_nanos,
        cached_cost_nanos: r.cached_cost_nanos,
        total_cost_nanos: r.total_cost_nanos,
        actual_cost_nanos: r.actual_cost_nanos,
        rate_multiplier: r.rate_multiplier.to_string(),
        account_cost_multiplier: r.account_cost_multiplier.to_string(),
        billing_mode: r.billing_mode.as_str().to_owned(),
        stream: r.stream,
        duration_ms: r.duration_ms,
        first_token_ms: r.first_token_ms,
        user_agent: r.user_agent,
        client_ip: r.client_ip,
        reasoning_effort: r.reasoning_effort,
        estimated: r.estimated,
        created_at_ms: r.created_at_ms,
        client_request_id: r.client_request_id,
        upstream_request_id: r.upstream_request_id,
        recovered: r.recovered,
    }
}

pub fn usage_totals(t: model::UsageTotals) -> pb::UsageTotals {
    pb::UsageTotals {
        requests: t.requests,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        cached_tokens: t.cached_tokens,
        total_cost_nanos: t.total_cost_nanos,
        actual_cost_nanos: t.actual_cost_nanos,
    }
}

pub fn usage_day(d: model::UsageDay) -> pb::UsageDay {
    pb::UsageDay {
        day: d.day,
        totals: Some(usage_totals(d.totals)),
    }
}
