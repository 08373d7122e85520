//! `tollgate-admin usage …`: usage records and daily totals.

use clap::{Args, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::args::PageArgs;
use super::connect::AdminApi;
use super::render::{Out, Record, list_table};
use super::values;

#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Usage records matching the filter, newest first, with totals over the whole filter.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Totals per UTC day.
    Series {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Usage records that could not be charged as they were (newest first).
    DeadLetters {
        /// Also the ones already re-charged.
        #[arg(long)]
        all: bool,
        /// Only ids below this one (next page).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
    /// Charge a dead letter now (at most once), optionally under a corrected model.
    Recharge {
        id: i64,
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    #[arg(long)]
    key: Option<i64>,
    #[arg(long)]
    user: Option<i64>,
    #[arg(long)]
    account: Option<i64>,
    #[arg(long)]
    group: Option<i64>,
    /// Requested model.
    #[arg(long)]
    model: Option<String>,
    /// From this time, inclusive (YYYY-MM-DD, UTC midnight, or RFC 3339).
    #[arg(long, value_parser = values::timestamp, conflicts_with = "last_days")]
    from: Option<i64>,
    /// Up to this time, exclusive (YYYY-MM-DD, UTC midnight, or RFC 3339).
    #[arg(long, value_parser = values::timestamp)]
    to: Option<i64>,
    /// From this many days ago.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    last_days: Option<u32>,
}

impl FilterArgs {
    fn to_pb(&self) -> Option<pb::UsageFilter> {
        Some(pb::UsageFilter {
            key_id: self.key.unwrap_or(0),
            user_id: self.user.unwrap_or(0),
            account_id: self.account.unwrap_or(0),
            group_id: self.group.unwrap_or(0),
            model: self.model.clone().unwrap_or_default(),
            from_ms: self.from.or(self.last_days.map(values::days_ago)),
            to_ms: self.to,
        })
    }
}

const RECORD_COLUMNS: &[&str] = &[
    "created_at",
    "request_id",
    "client_request_id",
    "key_id",
    "user_id",
    "account_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "actual_cost",
    "billing_mode",
];

const DAY_COLUMNS: &[&str] = &[
    "day",
    "totals.requests",
    "totals.input_tokens",
    "totals.output_tokens",
    "totals.cached_tokens",
    "totals.total_cost",
    "totals.actual_cost",
];

pub async fn run(api: &mut AdminApi, cmd: UsageCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    match cmd {
        UsageCmd::Query { filter, page } => {
            let req = pb::QueryUsageRequest {
                filter: filter.to_pb(),
                page: page.to_pb(),
                newest_first: true,
            };
            let resp = api.query_usage(req).await?.into_inner();
            let rows: Vec<Record> = resp.records.iter().map(record).collect();
            let totals = resp.totals.as_ref().map(totals_record);
            if out.is_json() {
                let mut v = Record::new()
                    .recs("records", rows)
                    .rec("totals", totals)
                    .to_json();
                v["next_page_token"] = resp.next_page_token.into();
                return out.json(&v);
            }
            out.page("records", &rows, RECORD_COLUMNS, &resp.next_page_token)?;
            print_totals(out, totals)
        }
        UsageCmd::DeadLetters { all, before, limit } => {
            super::books::list_dead_letters(api, all, before, limit, out).await
        }
        UsageCmd::Recharge { id, model } => super::books::recharge(api, id, model, out).await,
        UsageCmd::Series { filter } => {
            let req = pb::UsageSeriesRequest {
                filter: filter.to_pb(),
            };
            let resp = api.usage_series(req).await?.into_inner();
            let days: Vec<Record> = resp
                .days
                .iter()
                .map(|d| {
                    Record::new()
                        .str("day", &d.day)
                        .rec("totals", d.totals.as_ref().map(totals_record))
                })
                .collect();
            let totals = resp.totals.as_ref().map(totals_record);
            if out.is_json() {
                let v = Record::new().recs("days", days).rec("totals", totals);
                return out.json(&v.to_json());
            }
            if days.is_empty() {
                out.line("no usage")?;
            } else {
                out.table(&list_table(&days, DAY_COLUMNS))?;
            }
            print_totals(out, totals)
        }
    }
}

fn print_totals(out: &mut Out<'_>, totals: Option<Record>) -> Result<(), CliError> {
    if let Some(t) = totals {
        out.line("totals:")?;
        out.record(&t)?;
    }
    Ok(())
}

pub fn totals_record(t: &pb::UsageTotals) -> Record {
    Record::new()
        .int("requests", t.requests)
        .int("input_tokens", t.input_tokens)
        .int("output_tokens", t.output_tokens)
        .int("cached_tokens", t.cached_tokens)
        .usd("total_cost", t.total_cost_nanos)
        .usd("actual_cost", t.actual_cost_nanos)
}

pub fn record(r: &pb::UsageRecord) -> Record {
    Record::new()
        .str("request_id", &r.request_id)
        .str("client_request_id", &r.client_request_id)
        .str("upstream_request_id", &r.upstream_request_id)
        .int("key_id", r.key_id)
        .int("user_id", r.user_id)
        .opt_int("group_id", r.group_id)
        .opt_int("subscription_id", r.subscription_id)
        .int("account_id", r.account_id)
        .str("model", &r.model)
        .str("upstream_model", &r.upstream_model)
        .int("input_tokens", r.input_tokens)
        .int("output_tokens", r.output_tokens)
        .int("cached_tokens", r.cached_tokens)
        .int("reasoning_tokens", r.reasoning_tokens)
        .usd("input_cost", r.input_cost_nanos)
        .usd("output_cost", r.output_cost_nanos)
        .usd("cached_cost", r.cached_cost_nanos)
        .usd("total_cost", r.total_cost_nanos)
        .usd("actual_cost", r.actual_cost_nanos)
        .str("rate_multiplier", &r.rate_multiplier)
        .str("account_cost_multiplier", &r.account_cost_multiplier)
        .str("billing_mode", &r.billing_mode)
        .bool("stream", r.stream)
        .int("duration_ms", r.duration_ms)
        .opt_int("first_token_ms", r.first_token_ms)
        .str("user_agent", &r.user_agent)
        .str("client_ip", &r.client_ip)
        .str("reasoning_effort", &r.reasoning_effort)
        .bool("estimated", r.estimated)
        .bool("recovered", r.recovered)
        .time("created_at", r.created_at_ms)
}
