//! `tollgate-admin group …`: groups with their rate multiplier and subscription limits.

use clap::{ArgAction, Args, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::args::{IdArg, PageArgs};
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a group.
    Create(CreateGroup),
    /// Show one group.
    Get(IdArg),
    /// List groups.
    List(PageArgs),
    /// Change the fields given; the others stay as they are.
    Update(UpdateGroup),
    /// Delete a group. A group with API keys is refused unless --cascade.
    Delete {
        #[command(flatten)]
        id: IdArg,
        /// Also disable the group's API keys (says how many).
        #[arg(long)]
        cascade: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateGroup {
    #[arg(long)]
    name: String,
    /// Default "openai".
    #[arg(long)]
    platform: Option<String>,
    /// Exact decimal; 0 = free, default 1.
    #[arg(long, value_parser = values::multiplier)]
    rate_multiplier: Option<String>,
    /// Default "standard".
    #[arg(long, value_parser = ["standard", "subscription"])]
    kind: Option<String>,
    /// Subscription groups: USD per day (0 = no limit).
    #[arg(long, value_parser = values::usd)]
    daily_limit: Option<i64>,
    /// Subscription groups: USD per week (0 = no limit).
    #[arg(long, value_parser = values::usd)]
    weekly_limit: Option<i64>,
    /// Subscription groups: USD per 30 days (0 = no limit).
    #[arg(long, value_parser = values::usd)]
    monthly_limit: Option<i64>,
    #[arg(long)]
    exclusive: bool,
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Args)]
pub struct UpdateGroup {
    #[command(flatten)]
    id: IdArg,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_parser = values::multiplier)]
    rate_multiplier: Option<String>,
    #[arg(long, value_parser = ["standard", "subscription"])]
    kind: Option<String>,
    #[arg(long, value_parser = values::usd)]
    daily_limit: Option<i64>,
    #[arg(long, value_parser = values::usd)]
    weekly_limit: Option<i64>,
    #[arg(long, value_parser = values::usd)]
    monthly_limit: Option<i64>,
    #[arg(long, value_parser = ["active", "disabled"])]
    status: Option<String>,
    /// true or false.
    #[arg(long, action = ArgAction::Set)]
    exclusive: Option<bool>,
    #[arg(long)]
    description: Option<String>,
}

const COLUMNS: &[&str] = &[
    "id",
    "name",
    "platform",
    "kind",
    "rate_multiplier",
    "status",
    "exclusive",
    "daily_limit",
    "weekly_limit",
    "monthly_limit",
];

pub async fn run(api: &mut AdminApi, cmd: GroupCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    match cmd {
        GroupCmd::Create(c) => {
            let req = pb::CreateGroupRequest {
                name: c.name,
                platform: c.platform.unwrap_or_default(),
                rate_multiplier: c.rate_multiplier.unwrap_or_default(),
                kind: c.kind.unwrap_or_default(),
                daily_limit_nanos: c.daily_limit.unwrap_or(0),
                weekly_limit_nanos: c.weekly_limit.unwrap_or(0),
                monthly_limit_nanos: c.monthly_limit.unwrap_or(0),
                exclusive: c.exclusive,
                description: c.description,
            };
            let g = api.create_group(req).await?.into_inner();
            out.record(&record(&g))
        }
        GroupCmd::Get(IdArg { id }) => {
            let g = api
                .get_group(pb::GetGroupRequest { id })
                .await?
                .into_inner();
            out.record(&record(&g))
        }
        GroupCmd::List(page) => {
            let req = pb::ListGroupsRequest { page: page.to_pb() };
            let resp = api.list_groups(req).await?.into_inner();
            let rows: Vec<Record> = resp.groups.iter().map(record).collect();
            out.page("groups", &rows, COLUMNS, &resp.next_page_token)
        }
        GroupCmd::Update(u) => {
            let id = u.id.id;
            let req = pb::UpdateGroupRequest {
                id,
                name: u.name,
                rate_multiplier: u.rate_multiplier,
                kind: u.kind,
                daily_limit_nanos: u.daily_limit,
                weekly_limit_nanos: u.weekly_limit,
                monthly_limit_nanos: u.monthly_limit,
                status: u.status,
                exclusive: u.exclusive,
                description: u.description,
            };
            if req
                == (pb::UpdateGroupRequest {
                    id,
                    ..Default::default()
                })
            {
                return Err(CliError::Usage(
                    "nothing to update: give at least one field".into(),
                ));
            }
            let g = api.update_group(req).await?.into_inner();
            out.record(&record(&g))
        }
        GroupCmd::Delete {
            id: IdArg { id },
            cascade,
        } => {
            let resp = api
                .delete_group(pb::DeleteGroupRequest { id, cascade })
                .await?
                .into_inner();
            out.deleted_disabling("group", id, resp.keys_disabled)
        }
    }
}

pub fn record(g: &pb::Group) -> Record {
    Record::new()
        .int("id", g.id)
        .str("name", &g.name)
        .str("platform", &g.platform)
        .str("rate_multiplier", &g.rate_multiplier)
        .str("kind", &g.kind)
        .usd("daily_limit", g.daily_limit_nanos)
        .usd("weekly_limit", g.weekly_limit_nanos)
        .usd("monthly_limit", g.monthly_limit_nanos)
        .str("status", &g.status)
        .bool("exclusive", g.exclusive)
        .str("description", &g.description)
        .time("created_at", g.created_at_ms)
        .time("updated_at", g.updated_at_ms)
}
