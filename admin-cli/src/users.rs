//! `tollgate-admin user …`: users, balance adjustments and the balance ledger.

use clap::{ArgGroup, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::args::{IdArg, PageArgs};
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Default "user".
        #[arg(long, value_parser = ["user", "admin"])]
        role: Option<String>,
        /// Requests in flight at once (default 5; 0 = unlimited).
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        concurrency: Option<i32>,
        #[arg(long, default_value = "")]
        notes: String,
        /// Initial balance in USD (recorded in the ledger), e.g. 100 or 12.50.
        #[arg(long, value_parser = values::usd)]
        balance: Option<i64>,
    },
    /// Show one user.
    Get(IdArg),
    /// List users.
    List {
        #[arg(long, value_parser = ["active", "disabled"])]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change the fields given; the others stay as they are.
    Update {
        #[command(flatten)]
        id: IdArg,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = ["user", "admin"])]
        role: Option<String>,
        #[arg(long, value_parser = ["active", "disabled"])]
        status: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        concurrency: Option<i32>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Delete a user. A user with API keys is refused unless --cascade.
    Delete {
        #[command(flatten)]
        id: IdArg,
        /// Also disable the user's API keys (says how many).
        #[arg(long)]
        cascade: bool,
    },
    /// Set, add to or subtract from the balance (USD), with a reason kept in the ledger.
    #[command(group(ArgGroup::new("op").required(true).args(["set", "add", "subtract"])))]
    Balance {
        #[command(flatten)]
        id: IdArg,
        /// New balance in USD.
        #[arg(long, value_parser = values::usd)]
        set: Option<i64>,
        /// USD to add.
        #[arg(long, value_parser = values::usd)]
        add: Option<i64>,
        /// USD to subtract.
        #[arg(long, value_parser = values::usd)]
        subtract: Option<i64>,
        /// Why the balance changes.
        #[arg(long)]
        reason: String,
        /// Let a subtraction take the balance below zero (refused otherwise).
        #[arg(long)]
        allow_negative: bool,
    },
    /// The user's balance ledger, newest first.
    Ledger {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        page: PageArgs,
    },
}

const COLUMNS: &[&str] = &[
    "id",
    "email",
    "name",
    "role",
    "status",
    "balance",
    "concurrency",
    "created_at",
];

const LEDGER_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "delta",
    "balance_after",
    "reason",
    "created_at",
];

pub async fn run(api: &mut AdminApi, cmd: UserCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    match cmd {
        UserCmd::Create {
            email,
            name,
            role,
            concurrency,
            notes,
            balance,
        } => {
            let req = pb::CreateUserRequest {
                email,
                name,
                role: role.unwrap_or_default(),
                concurrency,
                notes,
                initial_balance_nanos: balance.unwrap_or(0),
            };
            let user = api.create_user(req).await?.into_inner();
            out.record(&record(&user))
        }
        UserCmd::Get(IdArg { id }) => {
            let user = api.get_user(pb::GetUserRequest { id }).await?.into_inner();
            out.record(&record(&user))
        }
        UserCmd::List { status, page } => {
            let req = pb::ListUsersRequest {
                page: page.to_pb(),
                status: status.unwrap_or_default(),
            };
            let resp = api.list_users(req).await?.into_inner();
            let rows: Vec<Record> = resp.users.iter().map(record).collect();
            out.page("users", &rows, COLUMNS, &resp.next_page_token)
        }
        UserCmd::Update {
            id: IdArg { id },
            email,
            name,
            role,
            status,
            concurrency,
            notes,
        } => {
            let req = pb::UpdateUserRequest {
                id,
                email,
                name,
                role,
                status,
                concurrency,
                notes,
            };
            if req
                == (pb::UpdateUserRequest {
                    id,
                    ..Default::default()
                })
            {
                return Err(CliError::Usage(
                    "nothing to update: give at least one field".into(),
                ));
            }
            let user = api.update_user(req).await?.into_inner();
            out.record(&record(&user))
        }
        UserCmd::Delete {
            id: IdArg { id },
            cascade,
        } => {
            let resp = api
                .delete_user(pb::DeleteUserRequest { id, cascade })
                .await?
                .into_inner();
            out.deleted_disabling("user", id, resp.keys_disabled)
        }
        UserCmd::Balance {
            id: IdArg { id },
            set,
            add,
            subtract,
            reason,
            allow_negative,
        } => {
            let (op, amount) = match (set, add, subtract) {
                (Some(a), None, None) => (pb::BalanceOp::Set, a),
                (None, Some(a), None) => (pb::BalanceOp::Add, a),
                (None, None, Some(a)) => (pb::BalanceOp::Subtract, a),
                _ => {
                    return Err(CliError::Usage(
                        "give exactly one of --set, --add, --subtract".into(),
                    ));
                }
            };
            let req = pb::AdjustBalanceRequest {
                user_id: id,
                op: op.into(),
                amount_nanos: amount,
                reason,
                allow_negative,
            };
            let resp = api.adjust_balance(req).await?.into_inner();
            let user = resp.user.as_ref().map(record);
            let entry = resp.entry.as_ref().map(ledger_record);
            if out.is_json() {
                let r = Record::new().rec("user", user).rec("entry", entry);
                return out.json(&r.to_json());
            }
            if let Some(u) = user {
                out.record(&u)?;
            }
            if let Some(e) = entry {
                out.page("ledger entries", &[e], LEDGER_COLUMNS, "")?;
            }
            Ok(())
        }
        UserCmd::Ledger {
            id: IdArg { id },
            page,
        } => {
            let req = pb::ListBalanceLedgerRequest {
                user_id: id,
                page: page.to_pb(),
            };
            let resp = api.list_balance_ledger(req).await?.into_inner();
            let rows: Vec<Record> = resp.entries.iter().map(ledger_record).collect();
            out.page("entries", &rows, LEDGER_COLUMNS, &resp.next_page_token)
        }
    }
}

pub fn record(u: &pb::User) -> Record {
    Record::new()
        .int("id", u.id)
        .str("email", &u.email)
        .str("name", &u.name)
        .str("role", &u.role)
        .str("status", &u.status)
        .usd("balance", u.balance_nanos)
        .int("concurrency", u.concurrency)
        .str("notes", &u.notes)
        .time("created_at", u.created_at_ms)
        .time("updated_at", u.updated_at_ms)
}

pub fn ledger_record(e: &pb::LedgerEntry) -> Record {
    Record::new()
        .int("id", e.id)
        .int("user_id", e.user_id)
        .str("kind", &e.kind)
        .usd("delta", e.delta_nanos)
        .usd("balance_after", e.balance_after_nanos)
        .str("reason", &e.reason)
        .time("created_at", e.created_at_ms)
}
