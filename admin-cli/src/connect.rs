//! Connection: endpoint, admin token resolution, and the bearer-token interceptor.

use std::path::Path;
use std::time::Duration;

use tollgate_shared::proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::{CliError, ConnectArgs};

/// Where a locally run control plane writes its generated admin token.
pub const DEFAULT_TOKEN_FILE: &str = ".tollgate/admin-token";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub type AdminApi = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A client for `args`. Connects lazily: an unreachable server shows up as `UNAVAILABLE`
/// on the first call.
pub fn client(args: &ConnectArgs) -> Result<AdminApi, CliError> {
    let token = resolve_token(args)?;
    let mut header: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        CliError::Usage("the admin token contains characters not allowed in a header".into())
    })?;
    header.set_sensitive(true);
    let endpoint = endpoint(&args.endpoint)?;
    Ok(AdminClient::with_interceptor(
        endpoint.connect_lazy(),
        Bearer(header),
    ))
}

fn endpoint(raw: &str) -> Result<Endpoint, CliError> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    if url.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--endpoint {raw}: TLS is not supported by this build; use http:// (e.g. through a port-forward)"
        )));
    }
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(CONNECT_TIMEOUT).timeout(CALL_TIMEOUT))
        .map_err(|e| CliError::Usage(format!("invalid --endpoint '{raw}': {e}")))
}

/// `--token`, then `--token-file`, then [`DEFAULT_TOKEN_FILE`] if it exists.
pub fn resolve_token(args: &ConnectArgs) -> Result<String, CliError> {
    if let Some(t) = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(t.to_owned());
    }
    if let Some(path) = &args.token_file {
        return read_token_file(path);
    }
    let default = Path::new(DEFAULT_TOKEN_FILE);
    if default.is_file() {
        return read_token_file(default);
    }
    Err(CliError::Usage(format!(
        "no admin token: pass --token or --token-file (or set TOLLGATE_ADMIN_TOKEN / \
         TOLLGATE_ADMIN_TOKEN_FILE), or run where {DEFAULT_TOKEN_FILE} exists"
    )))
}

fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read token file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>, file: Option<&Path>) -> ConnectArgs {
        ConnectArgs {
            endpoint: super::super::args::DEFAULT_ENDPOINT.into(),
            token: token.map(Into::into),
            token_file: file.map(Into::into),
        }
    }

    #[test]
    fn token_precedence_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "  from-file-0123456789 \nsecond line\n").unwrap();
        let t = resolve_token(&args(Some(" flag-token "), Some(&file))).unwrap();
        assert_eq!(t, "flag-token");
        let t = resolve_token(&args(None, Some(&file))).unwrap();
        assert_eq!(t, "from-file-0123456789");
        let t = resolve_token(&args(Some("  "), Some(&file))).unwrap();
        assert_eq!(t, "from-file-0123456789");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            resolve_token(&args(None, Some(&file))),
            Err(CliError::Usage(_))
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            resolve_token(&args(None, Some(&missing))),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn endpoints() {
        assert!(endpoint("http://127.0.0.1:7600").is_ok());
        assert!(endpoint("127.0.0.1:7600").is_ok());
        assert!(matches!(
            endpoint("https://cp.example.com"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(endpoint("http://"), Err(CliError::Usage(_))));
    }
}
