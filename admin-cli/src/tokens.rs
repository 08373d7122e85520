//! `tollgate-admin token …`: named admin tokens with a scope. The secret is printed once,
//! at creation. And `tollgate-admin audit-log`: who changed what, newest first.

use clap::{Args, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_admin_token_request::Expiry;

use super::CliError;
use super::args::IdArg;
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a named admin token; its secret is shown this once.
    Create {
        /// Name recorded as the actor of the token's writes in the audit log.
        name: String,
        /// read (queries and usage), keys (users' keys and balances, plus read) or
        /// admin (everything, including tokens).
        #[arg(long)]
        scope: String,
        /// Expiry as an RFC 3339 time.
        #[arg(long, value_parser = values::timestamp, conflicts_with = "expires_in_days")]
        expires_at: Option<i64>,
        /// Expiry in days from now.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List live tokens (with --all, revoked ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke(IdArg),
}

/// Filters of `audit-log`.
#[derive(Debug, Clone, Args)]
pub struct AuditLogArgs {
    /// Only this actor (token name, certificate subject, or `bootstrap`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this RPC (e.g. CreateKey).
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    #[arg(long, value_parser = values::timestamp)]
    pub since: Option<i64>,
    /// Entries to show (default 50, at most 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Older entries: those with an id below this one.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub before_id: Option<i64>,
}

const TOKEN_COLUMNS: &[&str] = &[
    "id",
    "name",
    "scope",
    "token_hint",
    "created_by",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
];

const AUDIT_COLUMNS: &[&str] = &["id", "at", "actor", "action", "target", "details"];

pub async fn run(api: &mut AdminApi, cmd: TokenCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    let token = match cmd {
        TokenCmd::Create {
            name,
            scope,
            expires_at,
            expires_in_days,
        } => {
            let expiry = match (expires_at, expires_in_days) {
                (Some(at), _) => Some(Expiry::ExpiresAtMs(at)),
                (None, Some(days)) => Some(Expiry::ExpiresInDays(days)),
                (None, None) => None,
            };
            let req = pb::CreateAdminTokenRequest {
                name,
                scope,
                expiry,
            };
            let resp = api.create_admin_token(req).await?.into_inner();
            return print_created(out, resp);
        }
        TokenCmd::List { all } => {
            let req = pb::ListAdminTokensRequest {
                include_revoked: all,
            };
            let resp = api.list_admin_tokens(req).await?.into_inner();
            let rows: Vec<Record> = resp.tokens.iter().map(token_record).collect();
            return out.page("tokens", &rows, TOKEN_COLUMNS, "");
        }
        TokenCmd::Revoke(IdArg { id }) => {
            api.revoke_admin_token(pb::RevokeAdminTokenRequest { id })
                .await?
        }
    };
    out.record(&token_record(&token.into_inner()))
}

pub async fn audit_log(
    api: &mut AdminApi,
    args: AuditLogArgs,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let req = pb::ListAuditLogRequest {
        actor: args.actor.unwrap_or_default(),
        action: args.action.unwrap_or_default(),
        since_ms: args.since,
        limit: args.limit.unwrap_or(0),
        before_id: args.before_id.unwrap_or(0),
    };
    let resp = api.list_audit_log(req).await?.into_inner();
    let rows: Vec<Record> = resp.entries.iter().map(audit_record).collect();
    out.page("entries", &rows, AUDIT_COLUMNS, "")
}

fn print_created(out: &mut Out<'_>, resp: pb::CreateAdminTokenResponse) -> Result<(), CliError> {
    let token = resp.token.as_ref().map(token_record);
    if out.is_json() {
        let mut v = Record::new().rec("token", token).to_json();
        v["secret"] = resp.secret.into();
        return out.json(&v);
    }
    if let Some(t) = token {
        out.record(&t)?;
    }
    out.line("")?;
    out.line("Admin token (shown only this once; it cannot be retrieved again, store it now):")?;
    out.line("")?;
    out.line(&format!("    {}", resp.secret))?;
    out.line("")
}

fn token_record(t: &pb::AdminToken) -> Record {
    Record::new()
        .int("id", t.id)
        .str("name", &t.name)
        .str("scope", &t.scope)
        .str("token_hint", &t.token_hint)
        .str("created_by", &t.created_by)
        .time("created_at", t.created_at_ms)
        .opt_time("expires_at", t.expires_at_ms)
        .opt_time("last_used_at", t.last_used_at_ms)
        .opt_time("revoked_at", t.revoked_at_ms)
}

fn audit_record(e: &pb::AuditEntry) -> Record {
    Record::new()
        .int("id", e.id)
        .time("at", e.at_ms)
        .str("actor_kind", &e.actor_kind)
        .str("actor", &e.actor)
        .str("action", &e.action)
        .str("target", &e.target)
        .str("details", &e.details_json)
}
