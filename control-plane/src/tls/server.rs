//! The TLS listener: a rustls server configuration rebuilt when the certificate files
//! change, an accept loop that handshakes off the accept path, and the per-connection
//! identity (verified data plane or not) that the `Gateway` guard reads.
//!
//! Client certificates are optional at the TLS layer and checked after the handshake:
//! operators reach `Admin` with a bearer token and no certificate, and an anonymous or
//! foreign-CA caller of `Gateway` gets an `UNAUTHENTICATED` status it can read instead of
//! a failed handshake it cannot.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::tls::{Reloading, TlsError, pem};

/// A slow or silent client must not hold a handshake slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The current server configuration and the strict verifier of data-plane certificates
/// (built from the same CA file, so both rotate together).
pub struct ServerTls {
    config: Arc<ServerConfig>,
    data_plane_ca: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// From the PEM contents of the server chain, its key and the data-plane CA bundle.
    pub fn build(cert: &[u8], key: &[u8], client_ca: &[u8]) -> Result<Self, TlsError> {
        let provider = tollgate_shared::tls::provider();
        let roots = pem::roots(client_ca, "TOLLGATE_TLS_CLIENT_CA")?;
        let data_plane_ca =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError(format!("TOLLGATE_TLS_CLIENT_CA: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
            .with_client_cert_verifier(Arc::new(Deferred(data_plane_ca.clone())))
            .with_single_cert(
                pem::certs(cert, "TOLLGATE_TLS_CERT")?,
                pem::private_key(key, "TOLLGATE_TLS_KEY")?,
            )
            .map_err(|e| {
                TlsError(format!(
                    "TOLLGATE_TLS_CERT and TOLLGATE_TLS_KEY do not form a usable pair: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            data_plane_ca,
        })
    }

    /// Whether the presented chain (leaf first) is a data plane's: issued by the
    /// data-plane CA, valid now, usable for client authentication.
    fn identify(&self, chain: Option<&[CertificateDer<'static>]>) -> PeerIdentity {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return PeerIdentity::Anonymous;
        };
        match self
            .data_plane_ca
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            Ok(_) => PeerIdentity::DataPlane,
            Err(e) => PeerIdentity::Rejected(e.to_string()),
        }
    }
}

/// Who is at the other end of a connection, as far as TLS could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No client certificate.
    Anonymous,
    /// A certificate that the data-plane CA does not vouch for (why).
    Rejected(String),
    /// A certificate issued by the data-plane CA.
    DataPlane,
}

/// Per-connection facts, attached by tonic to every request on the connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    pub identity: PeerIdentity,
}

/// The TLS-layer verifier: accepts any client certificate whose holder proves its key
/// (signatures are checked by the strict verifier), leaving the verdict to [`identify`].
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// An accepted TLS connection and what is known about its peer.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` until `stop`, handshaking each connection in its own tracked
/// task with the configuration current at accept time; yields finished handshakes.
pub fn incoming(
    listener: TcpListener,
    tls: Reloading<ServerTls>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the open ones.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.current();
            let tx = tx.clone();
            let stop = stop.clone();
            handshakes.spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote_addr, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                let identity = tls.identify(stream.get_ref().1.peer_certificates());
                let info = PeerInfo {
                    remote_addr,
                    identity,
                };
                let _ = tx.send(Ok(TlsConn { stream, info })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
