//! The client side: a rustls client configuration (trusting a CA bundle, optionally
//! presenting a client certificate) and a connector that lets a tonic `Channel` speak
//! TLS with it. The configuration is taken per new connection from a [`Reloading`], so
//! a rotated client certificate is used by the next connection without touching the
//! current one.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Reloading, TlsError, pem};

/// A client certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Builds the client configuration: trusts `ca`, presents `identity` if given, speaks h2.
pub fn client_config(
    ca: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, TlsError> {
    let roots = pem::roots(ca, "CA certificate")?;
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pem::certs(cert, "client certificate")?,
                pem::private_key(key, "client key")?,
            )
            .map_err(|e| TlsError(format!("client certificate and key do not match: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Loads `ca` (and the identity's files) and keeps them reloading.
pub fn reloading_client_config(
    ca: PathBuf,
    identity: Option<ClientIdentity>,
) -> Result<Reloading<ClientConfig>, TlsError> {
    let mut files = vec![ca];
    if let Some(id) = &identity {
        files.push(id.cert.clone());
        files.push(id.key.clone());
    }
    Reloading::load("control-plane client TLS", files, |c| match c {
        [ca] => client_config(ca, None),
        [ca, cert, key] => client_config(ca, Some((cert, key))),
        _ => Err(TlsError::new("unexpected TLS file set")),
    })
}

/// A tonic connector: TCP to the URI's host and port, then TLS with the current
/// configuration, verifying the server's name against the URI's host.
#[derive(Clone)]
pub struct TlsConnector {
    config: Reloading<ClientConfig>,
}

impl TlsConnector {
    pub fn new(config: Reloading<ClientConfig>) -> Self {
        Self { config }
    }

    /// The address to give tonic's `Endpoint` when this connector serves `url`: `https`
    /// becomes `http`. tonic, built with its own TLS feature (the Admin API reads peer
    /// certificates through it), refuses an `https` URI on a custom connector, but this
    /// connector does the TLS itself; host and port (443 when absent) are unchanged.
    pub fn endpoint_url(url: &str) -> String {
        match url.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => url.to_owned(),
        }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, TlsError>> + Send>>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = TlsError;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.current();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| TlsError::new("control-plane URL has no host"))?;
            // `[::1]` in a URI is `::1` for the socket and the certificate check.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let server_name = ServerName::try_from(host.clone())
                .map_err(|_| TlsError(format!("{host:?} is not a valid TLS server name")))?;
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| TlsError(format!("connect {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
                .map_err(|e| TlsError(format!("TLS handshake with {host}:{port}: {e}")))?;
            Ok(TokioIo::new(tls))
        })
    }
}
