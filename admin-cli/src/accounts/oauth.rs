//! `tollgate-admin account oauth-url` / `account oauth-exchange`: onboarding a
//! subscription (ChatGPT/Codex) login in two steps.
//!
//! 1. `oauth-url` prints an authorization URL and a session id. Open the URL, sign in;
//!    the browser is sent to the redirect URI (by default `http://localhost:1455/…`,
//!    which usually shows an error page — that is fine) with `?code=…&state=…`.
//! 2. `oauth-exchange --session <id>` with that code, or the whole callback URL (given
//!    with `--code`, or pasted on standard input so it stays out of the process list),
//!    creates the account.

use std::io::BufRead;

use clap::Args;
use tollgate_shared::proto::admin::v1 as pb;

use crate::CliError;
use crate::connect::AdminApi;
use crate::render::{Out, Record};
use crate::values;

#[derive(Debug, Args)]
pub struct OAuthUrl {
    /// Redirect URI registered for the OAuth client (default: the control plane's).
    #[arg(long)]
    redirect_uri: Option<String>,
}

#[derive(Debug, Args)]
pub struct OAuthExchange {
    /// The session id printed by `account oauth-url`.
    #[arg(long = "session", value_name = "SESSION_ID")]
    session_id: String,
    /// The `code` from the callback URL, or the whole callback URL. Read from standard
    /// input when omitted (it then stays out of the process list).
    #[arg(long)]
    code: Option<String>,
    /// The callback's `state` (checked against the session; taken from a pasted URL).
    #[arg(long)]
    state: Option<String>,
    /// Default: the login's email.
    #[arg(long)]
    name: Option<String>,
    /// GROUP_ID or GROUP_ID:PRIORITY (default priority 50; repeat or comma-separate).
    #[arg(long = "group", value_delimiter = ',', value_parser = values::account_group)]
    groups: Vec<pb::AccountGroup>,
    /// Requests in flight at once (default 3; 0 = unlimited).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    concurrency: Option<i32>,
    /// Lower is tried first (default 50).
    #[arg(long)]
    priority: Option<i32>,
    /// Outbound proxy for the exchange and for the account's traffic.
    #[arg(long)]
    proxy_url: Option<String>,
    /// Default: the ChatGPT plan.
    #[arg(long, default_value = "")]
    notes: String,
}

impl OAuthUrl {
    pub fn into_pb(self) -> pb::GenerateOAuthUrlRequest {
        pb::GenerateOAuthUrlRequest {
            redirect_uri: self.redirect_uri.unwrap_or_default(),
        }
    }
}

impl OAuthExchange {
    /// The request; `read_code` supplies the code when `--code` was not given.
    pub fn into_pb(
        self,
        read_code: impl FnOnce() -> Result<String, CliError>,
    ) -> Result<pb::ExchangeOAuthCodeRequest, CliError> {
        let code = match self.code {
            Some(c) => c,
            None => read_code()?,
        };
        if code.trim().is_empty() {
            return Err(CliError::Usage(
                "give the code (or the whole callback URL) with --code or on standard input".into(),
            ));
        }
        Ok(pb::ExchangeOAuthCodeRequest {
            session_id: self.session_id.trim().to_owned(),
            code: code.trim().to_owned(),
            state: self.state.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            groups: self.groups,
            concurrency: self.concurrency,
            priority: self.priority.unwrap_or(0),
            proxy_url: self.proxy_url.unwrap_or_default(),
            notes: self.notes,
        })
    }
}

/// The first line of standard input (with a prompt on a terminal).
pub fn code_from_stdin() -> Result<String, CliError> {
    use std::io::{IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        let mut err = std::io::stderr();
        write!(err, "Paste the callback URL (or just its code): ")?;
        err.flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

pub async fn url(api: &mut AdminApi, cmd: OAuthUrl, out: &mut Out<'_>) -> Result<(), CliError> {
    let r = api.generate_o_auth_url(cmd.into_pb()).await?.into_inner();
    out.record(&url_record(&r))
}

pub async fn exchange(
    api: &mut AdminApi,
    cmd: OAuthExchange,
) -> Result<tonic::Response<pb::Account>, CliError> {
    let req = cmd.into_pb(code_from_stdin)?;
    Ok(api.exchange_o_auth_code(req).await?)
}

pub fn url_record(r: &pb::GenerateOAuthUrlResponse) -> Record {
    Record::new()
        .str("auth_url", &r.auth_url)
        .str("session_id", &r.session_id)
        .str("state", &r.state)
        .time("expires_at", r.expires_at_ms)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::AccountCmd;
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
    fn oauth_url_takes_an_optional_redirect() {
        let AccountCmd::OauthUrl(c) = parse(&["oauth-url"]) else {
            panic!()
        };
        assert_eq!(c.into_pb().redirect_uri, "");
        let AccountCmd::OauthUrl(c) = parse(&["oauth-url", "--redirect-uri", "http://x:1/cb"])
        else {
            panic!()
        };
        assert_eq!(c.into_pb().redirect_uri, "http://x:1/cb");
    }

    #[test]
    fn oauth_exchange_builds_the_request() {
        let AccountCmd::OauthExchange(c) = parse(&[
            "oauth-exchange",
            "--session",
            "s1",
            "--code",
            "http://localhost:1455/auth/callback?code=c&state=st",
            "--group",
            "3:7",
            "--concurrency",
            "2",
            "--proxy-url",
            "socks5h://p:1080",
        ]) else {
            panic!()
        };
        let r = c.into_pb(|| panic!("stdin must not be read")).unwrap();
        assert_eq!(r.session_id, "s1");
        assert!(r.code.ends_with("code=c&state=st"));
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].priority, 7);
        assert_eq!(r.concurrency, Some(2));
        assert_eq!(r.proxy_url, "socks5h://p:1080");

        let AccountCmd::OauthExchange(c) = parse(&["oauth-exchange", "--session", "s1"]) else {
            panic!()
        };
        let r = c.into_pb(|| Ok(" pasted ".into())).unwrap();
        assert_eq!(r.code, "pasted");

        let AccountCmd::OauthExchange(c) = parse(&["oauth-exchange", "--session", "s1"]) else {
            panic!()
        };
        assert!(matches!(
            c.into_pb(|| Ok(String::new())),
            Err(CliError::Usage(_))
        ));
        assert!(Cli::try_parse_from(["tollgate-admin", "account", "oauth-exchange"]).is_err());
    }
}
