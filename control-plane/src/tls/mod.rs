//! TLS of the gRPC port: which certificates (operator files, or in development mode a
//! generated local PKI), the listener that serves them with reload on rotation, and the
//! guard that admits only data planes to `Gateway`.
//!
//! `Admin`, health and reflection need no client certificate (operators use a bearer
//! token); `Gateway` needs the data-plane CA's. Production refuses to start without TLS.

pub mod dev;
pub mod guard;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_shared::tls::Reloading;
use tonic::transport::server::{Router, TcpIncoming};

use crate::config::Config;
use crate::error::{Error, Result};
pub use guard::GatewayGuard;
pub use server::{PeerIdentity, PeerInfo, ServerTls};

/// The resolved transport settings.
#[derive(Debug, Clone)]
pub enum TlsSetup {
    /// `TOLLGATE_INSECURE_PLAINTEXT` (development only): no TLS, `Gateway` unauthenticated.
    Plaintext,
    Files(TlsFiles),
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA of the data planes' client certificates.
    pub client_ca: PathBuf,
    pub reload_interval: Duration,
}

const PRODUCTION_NEEDS_TLS: &str = "production mode requires TLS: set TOLLGATE_TLS_CERT, TOLLGATE_TLS_KEY and TOLLGATE_TLS_CLIENT_CA (--tls-cert/--tls-key/--tls-client-ca)";

/// Operator files if given (all three), else plaintext if asked for outside production,
/// else (development) the generated PKI in the data dir.
pub fn resolve(c: &Config) -> Result<TlsSetup> {
    if !(100..=3_600_000).contains(&c.tls_reload_interval_ms) {
        return Err(Error::Config(
            "TOLLGATE_TLS_RELOAD_INTERVAL_MS must be 100..=3600000".into(),
        ));
    }
    let reload_interval = Duration::from_millis(c.tls_reload_interval_ms);
    match (&c.tls_cert, &c.tls_key, &c.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => {
            if c.insecure_plaintext {
                return Err(Error::Config(
                    "TOLLGATE_INSECURE_PLAINTEXT conflicts with TOLLGATE_TLS_CERT: choose one"
                        .into(),
                ));
            }
            Ok(TlsSetup::Files(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
                reload_interval,
            }))
        }
        (None, None, None) if c.production => Err(Error::Config(PRODUCTION_NEEDS_TLS.into())),
        (None, None, None) if c.insecure_plaintext => {
            tracing::warn!(
                "TOLLGATE_INSECURE_PLAINTEXT: serving without TLS; any peer can call Gateway"
            );
            Ok(TlsSetup::Plaintext)
        }
        (None, None, None) => {
            let mut names = Vec::new();
            let ip = c.listen.ip();
            if !ip.is_unspecified() && !ip.is_loopback() {
                names.push(ip.to_string());
            }
            let dev = dev::ensure(&c.data_dir, &names)?;
            Ok(TlsSetup::Files(TlsFiles {
                cert: dev.server_cert,
                key: dev.server_key,
                client_ca: dev.ca_cert,
                reload_interval,
            }))
        }
        _ if c.production => Err(Error::Config(PRODUCTION_NEEDS_TLS.into())),
        _ => Err(Error::Config(
            "TOLLGATE_TLS_CERT, TOLLGATE_TLS_KEY and TOLLGATE_TLS_CLIENT_CA must be set together"
                .into(),
        )),
    }
}

/// The listener with its TLS (or not), ready to serve a router, and the optional
/// plaintext health port (Kubernetes gRPC probes cannot speak TLS).
pub struct Transport {
    listener: TcpListener,
    tls: Option<(Reloading<ServerTls>, Duration)>,
    health: Option<TcpListener>,
}

impl Transport {
    /// Loads the certificates now, so a bad file stops the start with its name.
    pub fn new(setup: &TlsSetup, listener: TcpListener) -> Result<Self> {
        let tls = match setup {
            TlsSetup::Plaintext => None,
            TlsSetup::Files(f) => {
                let files = vec![f.cert.clone(), f.key.clone(), f.client_ca.clone()];
                let tls = Reloading::load("control-plane server TLS", files, |c| match c {
                    [cert, key, ca] => ServerTls::build(cert, key, ca),
                    _ => Err(tollgate_shared::tls::TlsError::new(
                        "unexpected TLS file set",
                    )),
                })
                .map_err(|e| Error::Config(e.to_string()))?;
                Some((tls, f.reload_interval))
            }
        };
        Ok(Self {
            listener,
            tls,
            health: None,
        })
    }

    /// Binds the plaintext health-only port (`TOLLGATE_HEALTH_LISTEN`), if configured.
    pub async fn bind_health_port(&mut self, addr: Option<SocketAddr>) -> Result<()> {
        if let Some(addr) = addr {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                Error::Config(format!(
                    "cannot listen on {addr} (set --health-listen / TOLLGATE_HEALTH_LISTEN): {e}"
                ))
            })?;
            self.health = Some(l);
        }
        Ok(())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The interceptor for the `Gateway` service.
    pub fn gateway_guard(&self) -> GatewayGuard {
        GatewayGuard::new(self.is_tls())
    }

    /// Serves `router` until `shutdown`, then lets its calls finish until `cut` (the
    /// calls still open then are dropped); serves `health_router` on the health port if
    /// bound, until the main server is done (probes see the drain's NOT_SERVING); with
    /// TLS, also watches the certificate files.
    pub async fn serve(
        self,
        router: Router,
        health_router: Router,
        shutdown: CancellationToken,
        cut: CancellationToken,
    ) -> std::result::Result<(), tonic::transport::Error> {
        // Stopped once the main server is done (also when it fails on its own), so the
        // wait below ends.
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        if let Some(l) = self.health {
            let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = health_router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled())
                    .await
                {
                    tracing::error!(error = %e, "health port failed");
                }
            });
        }
        let served = async {
            match self.tls {
                None => {
                    let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                        .await
                }
                Some((tls, interval)) => {
                    tasks.spawn(tls.clone().watch(interval, stop.clone()));
                    let incoming = server::incoming(self.listener, tls, &tasks, stop.clone());
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                        .await
                }
            }
        };
        let result = tokio::select! {
            r = served => r,
            () = cut.cancelled() => {
                tracing::warn!("drain: gRPC calls still open at the cut; dropping them");
                Ok(())
            }
        };
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        result
    }
}
