//! `tollgate-admin subscription …`: users' subscriptions to subscription groups.

use clap::{ArgGroup, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry;

use super::CliError;
use super::args::{IdArg, PageArgs};
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

#[derive(Debug, Subcommand)]
pub enum SubscriptionCmd {
    /// Subscribe a user to a subscription group, until --expires-at or for --days.
    #[command(group(ArgGroup::new("expiry").required(true).args(["expires_at", "days"])))]
    Assign {
        #[arg(long)]
        user: i64,
        /// A subscription group.
        #[arg(long)]
        group: i64,
        /// RFC 3339; default now.
        #[arg(long, value_parser = values::timestamp)]
        starts_at: Option<i64>,
        /// RFC 3339.
        #[arg(long, value_parser = values::timestamp)]
        expires_at: Option<i64>,
        /// Length in days.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: Option<u32>,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Push the expiry back by --days.
    Extend {
        #[command(flatten)]
        id: IdArg,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
    },
    /// End a subscription now.
    Revoke(IdArg),
    /// Show one subscription.
    Get(IdArg),
    /// List subscriptions, optionally of one user or group.
    List {
        #[arg(long)]
        user: Option<i64>,
        #[arg(long)]
        group: Option<i64>,
        #[command(flatten)]
        page: PageArgs,
    },
}

const COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "group_id",
    "status",
    "starts_at",
    "expires_at",
    "daily_usage",
    "weekly_usage",
    "monthly_usage",
];

pub async fn run(
    api: &mut AdminApi,
    cmd: SubscriptionCmd,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let sub = match cmd {
        SubscriptionCmd::Assign {
            user,
            group,
            starts_at,
            expires_at,
            days,
            notes,
        } => {
            let expiry = match (expires_at, days) {
                (Some(at), _) => Some(Expiry::ExpiresAtMs(at)),
                (None, Some(d)) => Some(Expiry::DurationDays(d)),
                (None, None) => None,
            };
            let req = pb::AssignSubscriptionRequest {
                user_id: user,
                group_id: group,
                starts_at_ms: starts_at,
                expiry,
                notes,
            };
            api.assign_subscription(req).await?
        }
        SubscriptionCmd::Extend {
            id: IdArg { id },
            days,
        } => {
            api.extend_subscription(pb::ExtendSubscriptionRequest { id, days })
                .await?
        }
        SubscriptionCmd::Revoke(IdArg { id }) => {
            api.revoke_subscription(pb::RevokeSubscriptionRequest { id })
                .await?
        }
        SubscriptionCmd::Get(IdArg { id }) => {
            api.get_subscription(pb::GetSubscriptionRequest { id })
                .await?
        }
        SubscriptionCmd::List { user, group, page } => {
            let req = pb::ListSubscriptionsRequest {
                user_id: user.unwrap_or(0),
                group_id: group.unwrap_or(0),
                page: page.to_pb(),
            };
            let resp = api.list_subscriptions(req).await?.into_inner();
            let rows: Vec<Record> = resp.subscriptions.iter().map(record).collect();
            return out.page("subscriptions", &rows, COLUMNS, &resp.next_page_token);
        }
    };
    out.record(&record(&sub.into_inner()))
}

pub fn record(s: &pb::Subscription) -> Record {
    Record::new()
        .int("id", s.id)
        .int("user_id", s.user_id)
        .int("group_id", s.group_id)
        .time("starts_at", s.starts_at_ms)
        .time("expires_at", s.expires_at_ms)
        .str("status", &s.status)
        .usd("daily_usage", s.daily_usage_nanos)
        .usd("weekly_usage", s.weekly_usage_nanos)
        .usd("monthly_usage", s.monthly_usage_nanos)
        .opt_time("daily_window_start", s.daily_window_start_ms)
        .opt_time("weekly_window_start", s.weekly_window_start_ms)
        .opt_time("monthly_window_start", s.monthly_window_start_ms)
        .str("notes", &s.notes)
        .time("created_at", s.created_at_ms)
        .time("updated_at", s.updated_at_ms)
}
