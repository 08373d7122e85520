//! The top of the command line: global options and the resource subcommands. Each
//! resource's own subcommands live in its module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;

use super::{accounts, groups, keys, prices, subscriptions, tokens, usage, users};

/// Default Admin API endpoint (the control plane's default listen address).
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7600";

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-admin",
    version,
    about = "Manage a Tollgate control plane over its Admin gRPC API",
    long_about = "Manage a Tollgate control plane over its Admin gRPC API.\n\n\
        Money is in USD decimals (--quota 12.50), converted exactly to nano-USD; times are \
        a date (2025-01-31, UTC midnight) or RFC 3339 (2025-01-31T12:00:00Z). Output is a \
        table, or JSON with --json.",
    after_help = "Exit status:\n  \
        0  success\n  \
        1  the control plane refused or failed the call (FAILED_PRECONDITION, \
        PERMISSION_DENIED, UNAVAILABLE, ...; the message says which setting or flag to \
        change), it could not be reached, or output could not be written\n  \
        2  bad arguments or local configuration, INVALID_ARGUMENT or NOT_FOUND"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnectArgs,

    /// Print JSON (stable snake_case objects; money as *_nanos and *_usd) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Admin API address of the control plane.
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,

    /// Admin token. Default: --token-file, then `.tollgate/admin-token` if it exists.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<tollgate_shared::redacted::Redacted>,

    /// File whose first line is the admin token.
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA that issued the control plane's certificate (https endpoints). Default:
    /// `.tollgate/tls/ca.crt` (the development CA) if it exists.
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Users, their balance and its ledger.
    #[command(subcommand)]
    User(users::UserCmd),
    /// Groups (rate multiplier, subscription limits).
    #[command(subcommand)]
    Group(groups::GroupCmd),
    /// API keys.
    #[command(subcommand)]
    Key(keys::KeyCmd),
    /// Upstream accounts (credentials are write-only).
    #[command(subcommand)]
    Account(Box<accounts::AccountCmd>),
    /// Subscriptions of users to subscription groups.
    #[command(subcommand)]
    Subscription(subscriptions::SubscriptionCmd),
    /// Model prices, in USD per million tokens.
    #[command(subcommand)]
    Price(prices::PriceCmd),
    /// Usage records and daily totals.
    #[command(subcommand)]
    Usage(usage::UsageCmd),
    /// Check the books: key quotas, user balances, uncharged usage, waiting dead letters.
    Audit {
        /// A pending dead letter older than this many hours is a breach (default 24).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_dead_letter_age_hours: Option<u32>,
    },
    /// Named admin tokens with a scope (read, keys, admin).
    #[command(subcommand)]
    Token(tokens::TokenCmd),
    /// The audit log of Admin writes, newest first.
    AuditLog(tokens::AuditLogArgs),
}

/// Paging of list commands.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Page size (default 50, at most 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,

    /// Continue from the `next_page_token` of a previous page.
    #[arg(long)]
    pub page_token: Option<String>,
}

impl PageArgs {
    pub fn to_pb(&self) -> Option<pb::PageRequest> {
        Some(pb::PageRequest {
            limit: self.limit.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// A record id, the positional argument of get/update/delete commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct IdArg {
    /// The id.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub id: i64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_admin_rpc_has_a_subcommand() {
        let cmd = Cli::command();
        let expected: &[(&str, &[&str])] = &[
            (
                "user",
                &[
                    "create", "get", "list", "update", "delete", "balance", "ledger",
                ],
            ),
            ("group", &["create", "get", "list", "update", "delete"]),
            (
                "key",
                &[
                    "create",
                    "get",
                    "list",
                    "update",
                    "disable",
                    "enable",
                    "delete",
                    "reset-quota",
                    "clear-expiration",
                ],
            ),
            (
                "account",
                &[
                    "create",
                    "get",
                    "list",
                    "update",
                    "delete",
                    "set-groups",
                    "clear-error",
                    "clear-rate-limit",
                    "oauth-url",
                    "oauth-exchange",
                ],
            ),
            (
                "subscription",
                &["assign", "extend", "revoke", "get", "list"],
            ),
            // `import` is SetPrice per changed model.
            ("price", &["set", "get", "list", "delete", "import"]),
            ("usage", &["query", "series", "dead-letters", "recharge"]),
            ("token", &["create", "list", "revoke"]),
        ];
        let mut total = 0;
        for (resource, subs) in expected {
            let r = cmd.find_subcommand(resource).unwrap();
            let mut got: Vec<&str> = r.get_subcommands().map(|c| c.get_name()).collect();
            let mut want = subs.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{resource}");
            total += subs.iter().filter(|s| **s != "import").count();
        }
        // AuditBooks is the top-level `audit`, ListAuditLog the top-level `audit-log`.
        assert!(cmd.find_subcommand("audit").is_some());
        assert!(cmd.find_subcommand("audit-log").is_some());
        total += 2;
        // The Admin service has 49 RPCs.
        assert_eq!(total, 49);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "tollgate-admin",
            "user",
            "list",
            "--json",
            "--endpoint",
            "http://cp:7600",
            "--token",
            "t",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.conn.endpoint, "http://cp:7600");
        assert_eq!(cli.conn.token.as_ref().map(|t| t.expose()), Some("t"));
        assert!(
            !format!("{cli:?}").contains("\"t\""),
            "the token is redacted in Debug"
        );
    }
}
