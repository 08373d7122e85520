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
/// Where a locally run control plane writes its development CA.
pub const DEFAULT_CA_FILE: &str = ".tollgate/tls/ca.crt";

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
    let channel = if endpoint.uri().scheme_str() == Some("https") {
        let url = tollgate_shared::tls::TlsConnector::endpoint_url(&endpoint.uri().to_string());
        self::endpoint(&url)?.connect_with_connector_lazy(tls_connector(args)?)
    } else {
        endpoint.connect_lazy()
    };
    Ok(AdminClient::with_interceptor(channel, Bearer(header)))
}

/// TLS trusting `--ca-cert` (else the development CA file); no client certificate: the
/// Admin API authenticates operators by token.
fn tls_connector(args: &ConnectArgs) -> Result<tollgate_shared::tls::TlsConnector, CliError> {
    let ca = match &args.ca_cert {
        Some(p) => p.clone(),
        None if Path::new(DEFAULT_CA_FILE).is_file() => DEFAULT_CA_FILE.into(),
        None => {
            return Err(CliError::Usage(format!(
                "--endpoint {}: pass --ca-cert (or TOLLGATE_ADMIN_CA_CERT) with the CA of the control plane's certificate, or run where {DEFAULT_CA_FILE} exists",
                args.endpoint
            )));
        }
    };
    let config = tollgate_shared::tls::client::reloading_client_config(ca, None)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(tollgate_shared::tls::TlsConnector::new(config))
}

/// A bare `host:port` means https: control planes serve TLS unless run in plaintext.
fn endpoint(raw: &str) -> Result<Endpoint, CliError> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(CONNECT_TIMEOUT).timeout(CALL_TIMEOUT))
        .map_err(|e| CliError::Usage(format!("invalid --endpoint '{raw}': {e}")))
}

/// `--token`, then `--token-file`, then [`DEFAULT_TOKEN_FILE`] if it exists.
pub fn resolve_token(args: &ConnectArgs) -> Result<String, CliError> {
    if let Some(t) = args
        .token
        .as_ref()
        .map(|t| t.expose().trim())
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
            ca_cert: None,
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
        let bare = endpoint("127.0.0.1:7600").unwrap();
        assert_eq!(
            bare.uri().scheme_str(),
            Some("https"),
            "bare address means TLS"
        );
        assert!(endpoint("https://cp.example.com").is_ok());
        assert!(matches!(endpoint("http://"), Err(CliError::Usage(_))));
    }
}
