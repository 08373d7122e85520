//! `tollgate-admin key …`: API keys. The secret is printed once, at creation.

use clap::{Args, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_key_request::Expiry;

use super::CliError;
use super::args::{IdArg, PageArgs};
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::{usage, values};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key; its secret is shown this once.
    Create(CreateKey),
    /// Show one key with its usage totals.
    Get(IdArg),
    /// List keys, optionally of one user or group.
    List {
        #[arg(long)]
        user: Option<i64>,
        #[arg(long)]
        group: Option<i64>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change the fields given; IP lists are replaced only when given.
    Update(UpdateKey),
    /// Disable a key.
    Disable(IdArg),
    /// Enable a disabled key.
    Enable(IdArg),
    /// Delete a key.
    Delete(IdArg),
    /// quota_used = 0; a quota_exhausted key becomes active.
    ResetQuota(IdArg),
    /// Remove the expiry; an expired key becomes active.
    ClearExpiration(IdArg),
}

#[derive(Debug, Args)]
pub struct CreateKey {
    /// Owner.
    #[arg(long)]
    user: i64,
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long)]
    group: Option<i64>,
    /// Spending limit in USD (default 0 = unlimited).
    #[arg(long, value_parser = values::usd)]
    quota: Option<i64>,
    /// Expiry as an RFC 3339 time.
    #[arg(long, value_parser = values::timestamp, conflicts_with = "expires_in_days")]
    expires_at: Option<i64>,
    /// Expiry in days from now.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    expires_in_days: Option<u32>,
    /// Allowed client IPs/CIDRs (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::ip_or_cidr)]
    ip_allow: Vec<String>,
    /// Denied client IPs/CIDRs (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::ip_or_cidr)]
    ip_deny: Vec<String>,
    /// Use this key instead of generating one (at least 16 of [A-Za-z0-9_-]).
    #[arg(long)]
    custom_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateKey {
    #[command(flatten)]
    id: IdArg,
    #[arg(long)]
    name: Option<String>,
    /// Move the key to this group.
    #[arg(long, conflicts_with = "no_group")]
    group: Option<i64>,
    /// Take the key out of its group.
    #[arg(long)]
    no_group: bool,
    /// Spending limit in USD (0 = unlimited).
    #[arg(long, value_parser = values::usd)]
    quota: Option<i64>,
    /// New expiry (RFC 3339; must be in the future). See also `key clear-expiration`.
    #[arg(long, value_parser = values::timestamp, conflicts_with = "expires_in_days")]
    expires_at: Option<i64>,
    /// New expiry in days from now.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    expires_in_days: Option<u32>,
    /// Replace the allow list (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::ip_or_cidr, num_args = 1..)]
    ip_allow: Option<Vec<String>>,
    /// Replace the allow list with an empty one.
    #[arg(long, conflicts_with = "ip_allow")]
    clear_ip_allow: bool,
    /// Replace the deny list (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::ip_or_cidr, num_args = 1..)]
    ip_deny: Option<Vec<String>>,
    /// Replace the deny list with an empty one.
    #[arg(long, conflicts_with = "ip_deny")]
    clear_ip_deny: bool,
}

impl CreateKey {
    fn into_pb(self) -> pb::CreateKeyRequest {
        let expiry = match (self.expires_at, self.expires_in_days) {
            (Some(at), _) => Some(Expiry::ExpiresAtMs(at)),
            (None, Some(days)) => Some(Expiry::ExpiresInDays(days)),
            (None, None) => None,
        };
        pb::CreateKeyRequest {
            user_id: self.user,
            name: self.name,
            group_id: self.group,
            quota_nanos: self.quota.unwrap_or(0),
            expiry,
            ip_allow: self.ip_allow,
            ip_deny: self.ip_deny,
            custom_key: self.custom_key.unwrap_or_default(),
        }
    }
}

impl UpdateKey {
    fn into_pb(self) -> pb::UpdateKeyRequest {
        let list = |given: Option<Vec<String>>, clear: bool| match (given, clear) {
            (Some(values), _) => Some(pb::StringList { values }),
            (None, true) => Some(pb::StringList::default()),
            (None, false) => None,
        };
        pb::UpdateKeyRequest {
            id: self.id.id,
            name: self.name,
            group_id: if self.no_group { Some(0) } else { self.group },
            quota_nanos: self.quota,
            expires_at_ms: self
                .expires_at
                .or(self.expires_in_days.map(values::days_from_now)),
            ip_allow: list(self.ip_allow, self.clear_ip_allow),
            ip_deny: list(self.ip_deny, self.clear_ip_deny),
        }
    }
}

const COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "name",
    "group_id",
    "status",
    "key_hint",
    "quota",
    "quota_used",
    "expires_at",
    "last_used_at",
];

pub async fn run(api: &mut AdminApi, cmd: KeyCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    let key = match cmd {
        KeyCmd::Create(c) => {
            let resp = api.create_key(c.into_pb()).await?.into_inner();
            return print_created(out, resp);
        }
        KeyCmd::List { user, group, page } => {
            let req = pb::ListKeysRequest {
                user_id: user.unwrap_or(0),
                group_id: group.unwrap_or(0),
                page: page.to_pb(),
            };
            let resp = api.list_keys(req).await?.into_inner();
            let rows: Vec<Record> = resp.keys.iter().map(record).collect();
            return out.page("keys", &rows, COLUMNS, &resp.next_page_token);
        }
        KeyCmd::Delete(IdArg { id }) => {
            api.delete_key(pb::KeyIdRequest { id }).await?;
            return out.deleted("key", id.into());
        }
        KeyCmd::Update(u) => {
            let id = u.id.id;
            let req = u.into_pb();
            if req
                == (pb::UpdateKeyRequest {
                    id,
                    ..Default::default()
                })
            {
                return Err(CliError::Usage(
                    "nothing to update: give at least one field".into(),
                ));
            }
            api.update_key(req).await?
        }
        KeyCmd::Get(IdArg { id }) => api.get_key(pb::GetKeyRequest { id }).await?,
        KeyCmd::Disable(IdArg { id }) => api.disable_key(pb::KeyIdRequest { id }).await?,
        KeyCmd::Enable(IdArg { id }) => api.enable_key(pb::KeyIdRequest { id }).await?,
        KeyCmd::ResetQuota(IdArg { id }) => api.reset_key_quota(pb::KeyIdRequest { id }).await?,
        KeyCmd::ClearExpiration(IdArg { id }) => {
            api.clear_key_expiration(pb::KeyIdRequest { id }).await?
        }
    };
    out.record(&record(&key.into_inner()))
}

fn print_created(out: &mut Out<'_>, resp: pb::CreateKeyResponse) -> Result<(), CliError> {
    let key = resp.key.as_ref().map(record);
    if out.is_json() {
        let mut v = Record::new().rec("key", key).to_json();
        v["secret"] = resp.secret.into();
        return out.json(&v);
    }
    if let Some(k) = key {
        out.record(&k)?;
    }
    out.line("")?;
    out.line("API key (shown only this once; it cannot be retrieved again, store it now):")?;
    out.line("")?;
    out.line(&format!("    {}", resp.secret))?;
    out.line("")
}

pub fn record(k: &pb::ApiKey) -> Record {
    Record::new()
        .int("id", k.id)
        .int("user_id", k.user_id)
        .str("name", &k.name)
        .opt_int("group_id", k.group_id)
        .str("status", &k.status)
        .str("key_hint", &k.key_hint)
        .usd("quota", k.quota_nanos)
        .usd("quota_used", k.quota_used_nanos)
        .opt_time("expires_at", k.expires_at_ms)
        .list("ip_allow", &k.ip_allow)
        .list("ip_deny", &k.ip_deny)
        .opt_time("last_used_at", k.last_used_at_ms)
        .time("created_at", k.created_at_ms)
        .time("updated_at", k.updated_at_ms)
        .rec("usage", k.usage.as_ref().map(usage::totals_record))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn update(args: &[&str]) -> pb::UpdateKeyRequest {
        let cli =
            Cli::try_parse_from(["tollgate-admin", "key", "update"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Key(KeyCmd::Update(u)) => u.into_pb(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_lists_replace_only_when_given() {
        let r = update(&["3", "--name", "n"]);
        assert_eq!(r.ip_allow, None);
        assert_eq!(r.ip_deny, None);
        let r = update(&[
            "3",
            "--ip-allow",
            "10.0.0.1,10.1.0.0/16",
            "--ip-allow",
            "::1",
        ]);
        assert_eq!(
            r.ip_allow.unwrap().values,
            ["10.0.0.1", "10.1.0.0/16", "::1"]
        );
        assert_eq!(r.ip_deny, None);
        let r = update(&["3", "--clear-ip-allow", "--ip-deny", "1.2.3.4"]);
        assert_eq!(r.ip_allow, Some(pb::StringList::default()));
        assert_eq!(r.ip_deny.unwrap().values, ["1.2.3.4"]);
        assert!(
            Cli::try_parse_from([
                "tollgate-admin",
                "key",
                "update",
                "3",
                "--clear-ip-allow",
                "--ip-allow",
                "1.2.3.4"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["tollgate-admin", "key", "update", "3", "--ip-allow", "x"])
                .is_err()
        );
    }

    #[test]
    fn update_money_group_and_expiry() {
        let r = update(&["3", "--quota", "12.50", "--no-group"]);
        assert_eq!(r.quota_nanos, Some(12_500_000_000));
        assert_eq!(r.group_id, Some(0));
        let r = update(&["3", "--expires-at", "2030-01-01T00:00:00Z", "--group", "4"]);
        assert_eq!(r.expires_at_ms, Some(1_893_456_000_000));
        assert_eq!(r.group_id, Some(4));
        let r = update(&["3", "--expires-in-days", "1"]);
        let t = r.expires_at_ms.unwrap();
        assert!(t > tollgate_shared::now_ms() + 86_000_000);
    }

    #[test]
    fn create_expiry_and_money() {
        let cli = Cli::try_parse_from([
            "tollgate-admin",
            "key",
            "create",
            "--user",
            "1",
            "--quota",
            "0.1",
            "--expires-in-days",
            "30",
            "--ip-deny",
            "10.0.0.0/8",
        ])
        .unwrap();
        let Command::Key(KeyCmd::Create(c)) = cli.command else {
            panic!("not key create")
        };
        let r = c.into_pb();
        assert_eq!(r.quota_nanos, 100_000_000);
        assert_eq!(r.expiry, Some(Expiry::ExpiresInDays(30)));
        assert_eq!(r.ip_deny, ["10.0.0.0/8"]);
        assert!(r.ip_allow.is_empty());
        assert!(
            Cli::try_parse_from([
                "tollgate-admin",
                "key",
                "create",
                "--user",
                "1",
                "--expires-in-days",
                "3",
                "--expires-at",
                "2030-01-01T00:00:00Z"
            ])
            .is_err()
        );
    }
}
