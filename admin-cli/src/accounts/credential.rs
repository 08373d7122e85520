//! Account credential flags, shared by `account create` and `account update`.

use std::path::PathBuf;

use clap::Args;
use tollgate_shared::proto::admin::v1 as pb;

use crate::{CliError, values};

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// Upstream API key. Prefer --api-key-file: command lines are visible to other users.
    #[arg(long, conflicts_with_all = ["api_key_file", "access_token"])]
    api_key: Option<String>,
    /// File whose first line is the upstream API key.
    #[arg(long, conflicts_with = "access_token")]
    api_key_file: Option<PathBuf>,
    /// OAuth (subscription) account: access token.
    #[arg(long)]
    access_token: Option<String>,
    /// OAuth: refresh token.
    #[arg(long, requires = "access_token")]
    refresh_token: Option<String>,
    /// OAuth: access-token expiry (RFC 3339).
    #[arg(long, value_parser = values::timestamp, requires = "access_token")]
    token_expires_at: Option<i64>,
    /// OAuth: ChatGPT account id.
    #[arg(long, requires = "access_token")]
    chatgpt_account_id: Option<String>,
    /// OAuth: id token.
    #[arg(long, requires = "access_token")]
    id_token: Option<String>,
}

pub enum Credential {
    ApiKey(pb::ApiKeyCredential),
    OAuth(pb::OAuthCredential),
}

impl CredentialArgs {
    /// The credential given, if any (clap has already ruled out mixing kinds).
    pub fn resolve(&self) -> Result<Option<Credential>, CliError> {
        if let Some(k) = self.api_key.as_deref() {
            return Ok(Some(api_key(k)));
        }
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            let key = text.lines().next().unwrap_or("").trim();
            if key.is_empty() {
                return Err(CliError::Usage(format!("{} is empty", path.display())));
            }
            return Ok(Some(api_key(key)));
        }
        Ok(self.access_token.as_ref().map(|access| {
            Credential::OAuth(pb::OAuthCredential {
                access_token: access.trim().to_owned(),
                refresh_token: self.refresh_token.clone().unwrap_or_default(),
                expires_at_ms: self.token_expires_at,
                chatgpt_account_id: self.chatgpt_account_id.clone().unwrap_or_default(),
                id_token: self.id_token.clone().unwrap_or_default(),
            })
        }))
    }
}

fn api_key(k: &str) -> Credential {
    Credential::ApiKey(pb::ApiKeyCredential {
        api_key: k.trim().to_owned(),
    })
}
