//! `tollgate-admin account …`: upstream accounts. Credentials go in, never come out.

use std::collections::HashMap;

use clap::{ArgAction, Args, Subcommand};
use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::args::{IdArg, PageArgs};
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

mod credential;
mod oauth;

use credential::{Credential, CredentialArgs};

#[derive(Debug, Subcommand)]
pub enum AccountCmd {
    /// Create an account (API key with --api-key/--api-key-file, or OAuth with --access-token).
    Create(CreateAccount),
    /// Show one account.
    Get(IdArg),
    /// List accounts.
    List {
        #[arg(long)]
        group: Option<i64>,
        #[arg(long, value_parser = ["active", "disabled", "error"])]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change the fields given; the model mapping is replaced only when given.
    Update(UpdateAccount),
    /// Delete an account.
    Delete(IdArg),
    /// Replace the account's group memberships.
    SetGroups {
        #[command(flatten)]
        id: IdArg,
        /// GROUP_ID or GROUP_ID:PRIORITY (default priority 50; repeat or comma-separate).
        #[arg(long = "group", value_delimiter = ',', value_parser = values::account_group,
              required_unless_present = "none", conflicts_with = "none")]
        groups: Vec<pb::AccountGroup>,
        /// Remove the account from every group.
        #[arg(long)]
        none: bool,
    },
    /// Clear the error status.
    ClearError(IdArg),
    /// Clear the rate limit, overload cool-down and temporary unschedulable period.
    ClearRateLimit(IdArg),
    /// Onboard a subscription login, step 1: print an authorization URL (PKCE) and the
    /// session id to pass to `oauth-exchange`.
    OauthUrl(oauth::OAuthUrl),
    /// Step 2: exchange the code (or the whole callback URL) and create the account.
    OauthExchange(oauth::OAuthExchange),
}

#[derive(Debug, Args)]
pub struct CreateAccount {
    #[arg(long)]
    name: String,
    /// Default "openai".
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    credential: CredentialArgs,
    /// API-key accounts; default https://api.openai.com.
    #[arg(long)]
    base_url: Option<String>,
    /// Requests in flight at once (default 3; 0 = unlimited).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    concurrency: Option<i32>,
    /// Lower is tried first (default 50).
    #[arg(long)]
    priority: Option<i32>,
    /// requested=upstream model (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::mapping)]
    model_map: Vec<(String, String)>,
    #[arg(long)]
    proxy_url: Option<String>,
    #[arg(long)]
    user_agent: Option<String>,
    /// GROUP_ID or GROUP_ID:PRIORITY (default priority 50; repeat or comma-separate).
    #[arg(long = "group", value_delimiter = ',', value_parser = values::account_group)]
    groups: Vec<pb::AccountGroup>,
    /// Exact decimal, for operator statistics (default 1).
    #[arg(long, value_parser = values::multiplier)]
    cost_multiplier: Option<String>,
    #[arg(long, default_value = "")]
    notes: String,
}

#[derive(Debug, Args)]
pub struct UpdateAccount {
    #[command(flatten)]
    id: IdArg,
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    credential: CredentialArgs,
    #[arg(long)]
    base_url: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    concurrency: Option<i32>,
    #[arg(long)]
    priority: Option<i32>,
    #[arg(long, value_parser = ["active", "disabled"])]
    status: Option<String>,
    /// true or false.
    #[arg(long, action = ArgAction::Set)]
    schedulable: Option<bool>,
    /// Replace the model mapping: requested=upstream (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = values::mapping, num_args = 1..)]
    model_map: Option<Vec<(String, String)>>,
    /// Replace the model mapping with an empty one.
    #[arg(long, conflicts_with = "model_map")]
    clear_model_map: bool,
    #[arg(long, conflicts_with = "no_proxy")]
    proxy_url: Option<String>,
    /// Remove the outbound proxy.
    #[arg(long)]
    no_proxy: bool,
    #[arg(long)]
    user_agent: Option<String>,
    #[arg(long, value_parser = values::multiplier)]
    cost_multiplier: Option<String>,
    #[arg(long)]
    notes: Option<String>,
}

impl CreateAccount {
    fn into_pb(self) -> Result<pb::CreateAccountRequest, CliError> {
        use pb::create_account_request::Credential as C;
        let credential = match self.credential.resolve()? {
            Some(Credential::ApiKey(c)) => C::ApiKey(c),
            Some(Credential::OAuth(c)) => C::Oauth(c),
            None => {
                return Err(CliError::Usage(
                    "an account needs a credential: --api-key / --api-key-file, or --access-token"
                        .into(),
                ));
            }
        };
        Ok(pb::CreateAccountRequest {
            name: self.name,
            platform: self.platform.unwrap_or_default(),
            credential: Some(credential),
            base_url: self.base_url.unwrap_or_default(),
            concurrency: self.concurrency,
            priority: self.priority.unwrap_or(0),
            model_mapping: self.model_map.into_iter().collect(),
            proxy_url: self.proxy_url.unwrap_or_default(),
            user_agent: self.user_agent.unwrap_or_default(),
            groups: self.groups,
            cost_multiplier: self.cost_multiplier.unwrap_or_default(),
            notes: self.notes,
        })
    }
}

impl UpdateAccount {
    fn into_pb(self) -> Result<pb::UpdateAccountRequest, CliError> {
        use pb::update_account_request::Credential as C;
        let credential = self.credential.resolve()?.map(|c| match c {
            Credential::ApiKey(c) => C::ApiKey(c),
            Credential::OAuth(c) => C::Oauth(c),
        });
        let model_mapping = match (self.model_map, self.clear_model_map) {
            (Some(pairs), _) => Some(pb::StringMap {
                entries: pairs.into_iter().collect::<HashMap<_, _>>(),
            }),
            (None, true) => Some(pb::StringMap::default()),
            (None, false) => None,
        };
        Ok(pb::UpdateAccountRequest {
            id: self.id.id,
            name: self.name,
            credential,
            base_url: self.base_url,
            concurrency: self.concurrency,
            priority: self.priority,
            status: self.status,
            schedulable: self.schedulable,
            model_mapping,
            proxy_url: if self.no_proxy {
                Some(String::new())
            } else {
                self.proxy_url
            },
            user_agent: self.user_agent,
            cost_multiplier: self.cost_multiplier,
            notes: self.notes,
        })
    }
}

const COLUMNS: &[&str] = &[
    "id",
    "name",
    "kind",
    "platform",
    "status",
    "schedulable",
    "priority",
    "concurrency",
    "groups",
    "base_url",
];

pub async fn run(api: &mut AdminApi, cmd: AccountCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    let account = match cmd {
        AccountCmd::Create(c) => api.create_account(c.into_pb()?).await?,
        AccountCmd::Get(IdArg { id }) => api.get_account(pb::GetAccountRequest { id }).await?,
        AccountCmd::List {
            group,
            status,
            page,
        } => {
            let req = pb::ListAccountsRequest {
                page: page.to_pb(),
                group_id: group.unwrap_or(0),
                status: status.unwrap_or_default(),
            };
            let resp = api.list_accounts(req).await?.into_inner();
            let rows: Vec<Record> = resp.accounts.iter().map(record).collect();
            return out.page("accounts", &rows, COLUMNS, &resp.next_page_token);
        }
        AccountCmd::Update(u) => {
            let id = u.id.id;
            let req = u.into_pb()?;
            if req
                == (pb::UpdateAccountRequest {
                    id,
                    ..Default::default()
                })
            {
                return Err(CliError::Usage(
                    "nothing to update: give at least one field".into(),
                ));
            }
            api.update_account(req).await?
        }
        AccountCmd::Delete(IdArg { id }) => {
            api.delete_account(pb::DeleteAccountRequest { id }).await?;
            return out.deleted("account", id.into());
        }
        AccountCmd::SetGroups {
            id: IdArg { id },
            groups,
            none: _,
        } => {
            let req = pb::SetAccountGroupsRequest {
                account_id: id,
                groups,
            };
            api.set_account_groups(req).await?
        }
        AccountCmd::ClearError(IdArg { id }) => {
            api.clear_account_error(pb::AccountIdRequest { id }).await?
        }
        AccountCmd::ClearRateLimit(IdArg { id }) => {
            api.clear_account_rate_limit(pb::AccountIdRequest { id })
                .await?
        }
        AccountCmd::OauthUrl(c) => return oauth::url(api, c, out).await,
        AccountCmd::OauthExchange(c) => oauth::exchange(api, c).await?,
    };
    out.record(&record(&account.into_inner()))
}

pub fn record(a: &pb::Account) -> Record {
    let groups = a
        .groups
        .iter()
        .map(|g| {
            Record::new()
                .int("group_id", g.group_id)
                .int("priority", g.priority)
        })
        .collect();
    Record::new()
        .int("id", a.id)
        .str("name", &a.name)
        .str("kind", &a.kind)
        .str("platform", &a.platform)
        .str("base_url", &a.base_url)
        .int("concurrency", a.concurrency)
        .int("priority", a.priority)
        .str("status", &a.status)
        .str("error_message", &a.error_message)
        .bool("schedulable", a.schedulable)
        .map("model_mapping", &a.model_mapping)
        .str("proxy_url", &a.proxy_url)
        .str("user_agent", &a.user_agent)
        .opt_time("rate_limited_until", a.rate_limited_until_ms)
        .opt_time("overloaded_until", a.overloaded_until_ms)
        .opt_time("temp_unschedulable_until", a.temp_unschedulable_until_ms)
        .str("temp_unschedulable_reason", &a.temp_unschedulable_reason)
        .opt_time("expires_at", a.expires_at_ms)
        .str("chatgpt_account_id", &a.chatgpt_account_id)
        .recs("groups", groups)
        .map("codex_usage", &a.codex_usage)
        .str("cost_multiplier", &a.cost_multiplier)
        .str("notes", &a.notes)
        .opt_time("last_used_at", a.last_used_at_ms)
        .time("created_at", a.created_at_ms)
        .time("updated_at", a.updated_at_ms)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> AccountCmd {
        let cli = Cli::try_parse_from(["tollgate-admin", "account"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Account(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_needs_one_credential() {
        let AccountCmd::Create(c) = parse(&[
            "create",
            "--name",
            "a",
            "--api-key",
            "sk-up",
            "--group",
            "1:10,2",
            "--model-map",
            "gpt-5=gpt-5.1",
        ]) else {
            panic!()
        };
        let r = c.into_pb().unwrap();
        assert!(matches!(
            r.credential,
            Some(pb::create_account_request::Credential::ApiKey(ref k)) if k.api_key == "sk-up"
        ));
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.groups[1].priority, values::DEFAULT_GROUP_PRIORITY);
        assert_eq!(
            r.model_mapping.get("gpt-5").map(String::as_str),
            Some("gpt-5.1")
        );

        let AccountCmd::Create(c) = parse(&["create", "--name", "a"]) else {
            panic!()
        };
        assert!(matches!(c.into_pb(), Err(CliError::Usage(_))));
        assert!(
            Cli::try_parse_from([
                "tollgate-admin",
                "account",
                "create",
                "--name",
                "a",
                "--api-key",
                "k",
                "--access-token",
                "t"
            ])
            .is_err()
        );
    }

    #[test]
    fn update_is_partial() {
        let AccountCmd::Update(u) = parse(&["update", "5", "--schedulable", "false"]) else {
            panic!()
        };
        let r = u.into_pb().unwrap();
        assert_eq!(r.schedulable, Some(false));
        assert!(r.credential.is_none() && r.model_mapping.is_none() && r.proxy_url.is_none());
        let AccountCmd::Update(u) = parse(&["update", "5", "--clear-model-map", "--no-proxy"])
        else {
            panic!()
        };
        let r = u.into_pb().unwrap();
        assert_eq!(r.model_mapping, Some(pb::StringMap::default()));
        assert_eq!(r.proxy_url.as_deref(), Some(""));
        let AccountCmd::Update(u) = parse(&[
            "update",
            "5",
            "--access-token",
            "at",
            "--refresh-token",
            "rt",
        ]) else {
            panic!()
        };
        let r = u.into_pb().unwrap();
        assert!(matches!(
            r.credential,
            Some(pb::update_account_request::Credential::Oauth(ref o))
                if o.access_token == "at" && o.refresh_token == "rt"
        ));
    }

    #[test]
    fn set_groups_needs_groups_or_none() {
        assert!(matches!(
            parse(&["set-groups", "5", "--none"]),
            AccountCmd::SetGroups { ref groups, .. } if groups.is_empty()
        ));
        assert!(Cli::try_parse_from(["tollgate-admin", "account", "set-groups", "5"]).is_err());
    }
}
