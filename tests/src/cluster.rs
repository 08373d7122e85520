//! A control plane and data planes running in this test process, on real sockets.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_control_plane::tls::dev::DevPki;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// One development PKI per test process (generation costs a few milliseconds): every
/// control plane serves its server certificate and every data plane presents its
/// data-plane certificate, so the whole system is exercised over mutual TLS.
pub fn test_pki() -> &'static DevPki {
    static PKI: std::sync::OnceLock<DevPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| DevPki::generate(&[]).unwrap())
}

/// A channel to `url`: TLS trusting the test CA when `https://`, presenting
/// `identity` (PEM certificate and key) if given.
pub fn channel(url: &str, identity: Option<(&str, &str)>) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(5));
    if !url.starts_with("https://") {
        return endpoint.connect_lazy();
    }
    let config = tollgate_shared::tls::client_config(
        test_pki().ca_cert.as_bytes(),
        identity.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
    )
    .unwrap();
    endpoint.connect_with_connector_lazy(tollgate_shared::tls::TlsConnector::new(
        tollgate_shared::tls::Reloading::fixed(config),
    ))
}

/// Points a data-plane config without client TLS files at the test PKI (written into
/// `dir`), when its control-plane URL is `https://`.
fn with_test_client_tls(config: &mut tollgate_data_plane::Config, dir: &std::path::Path) {
    if !config.control_plane_url.starts_with("https://") || config.client_cert.is_some() {
        return;
    }
    let pki = test_pki();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    config.control_plane_ca = Some(write("ca.crt", &pki.ca_cert));
    config.client_cert = Some(write("tls.crt", &pki.data_plane_cert));
    config.client_key = Some(write("tls.key", &pki.data_plane_key));
}

pub struct ControlPlane {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub config: tollgate_control_plane::Config,
    shutdown: CancellationToken,
    handle: JoinHandle<tollgate_control_plane::Result<()>>,
}

/// Test defaults: known admin token, fast heartbeats, short lease grace, loopback
/// upstreams allowed (the fake upstream is plain HTTP on 127.0.0.1).
pub fn control_plane_config(data_dir: &std::path::Path) -> tollgate_control_plane::Config {
    let mut config = tollgate_control_plane::Config::for_data_dir(data_dir);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.lease_grace_ms = 2_000;
    config.heartbeat_interval_ms = 200;
    config.allow_insecure_upstreams = true;
    config.allow_private_upstreams = true;
    let tls = data_dir.join("test-tls");
    test_pki().write(&tls).unwrap();
    let paths = tollgate_control_plane::tls::dev::DevPaths::in_dir(&tls);
    config.tls_cert = Some(paths.server_cert);
    config.tls_key = Some(paths.server_key);
    config.tls_client_ca = Some(paths.ca_cert);
    config.insecure_plaintext = false;
    config
}

impl ControlPlane {
    /// Starts a control plane on an ephemeral port with the embedded SQLite default.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = control_plane_config(dir.path());
        Self::start_with(dir, config).await
    }

    /// Starts with the given config (its `listen` port 0 = ephemeral) and data dir.
    pub async fn start_with(
        data_dir: tempfile::TempDir,
        config: tollgate_control_plane::Config,
    ) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(tollgate_control_plane::serve_on(
            config.clone(),
            listener,
            shutdown.clone(),
        ));
        Self {
            addr,
            data_dir,
            config,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.config.insecure_plaintext {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// An anonymous channel (no client certificate) to this control plane.
    pub fn channel(&self) -> tonic::transport::Channel {
        channel(&self.url(), None)
    }

    /// Stops it and waits; returns the data dir and config (listening on the same
    /// address) so that a restart reuses both.
    pub async fn stop(self) -> (tempfile::TempDir, tollgate_control_plane::Config) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        let mut config = self.config;
        config.listen = self.addr;
        (self.data_dir, config)
    }

    /// Restarts on the same address, data dir and database.
    pub async fn restart(self) -> Self {
        let (dir, config) = self.stop().await;
        Self::start_with(dir, config).await
    }
}

pub struct DataPlane {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    _tls_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: JoinHandle<tollgate_data_plane::Result<()>>,
}

impl DataPlane {
    pub async fn start(control_plane_url: &str) -> Self {
        Self::start_with(tollgate_data_plane::Config::for_control_plane(
            control_plane_url,
        ))
        .await
    }

    pub async fn start_with(mut config: tollgate_data_plane::Config) -> Self {
        let tls_dir = tempfile::tempdir().unwrap();
        with_test_client_tls(&mut config, tls_dir.path());
        let listeners = tollgate_data_plane::Listeners::bind(&config).await.unwrap();
        let proxy_addr = listeners.proxy_addr().unwrap();
        let admin_addr = listeners.admin_addr().unwrap();
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(tollgate_data_plane::serve_on(
            config,
            listeners,
            shutdown.clone(),
        ));
        Self {
            proxy_addr,
            admin_addr,
            _tls_dir: tls_dir,
            shutdown,
            handle,
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Status code of `GET <admin>/path`, or 0 when the port does not answer.
    pub async fn admin_status(&self, path: &str) -> u16 {
        match reqwest::get(format!("{}{path}", self.admin_url())).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// The value of a counter/gauge line in `/metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Graceful stop (drain) and wait.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A data plane in its own runtime on its own thread, so that `kill` ends every task of
/// it at once — the in-process equivalent of `kill -9`: sockets close, nothing drains,
/// no release or usage is sent.
pub struct IsolatedDataPlane {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    _tls_dir: tempfile::TempDir,
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IsolatedDataPlane {
    pub fn start(control_plane_url: &str) -> Self {
        let mut config = tollgate_data_plane::Config::for_control_plane(control_plane_url);
        let tls_dir = tempfile::tempdir().unwrap();
        with_test_client_tls(&mut config, tls_dir.path());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.spawn(async move {
                let listeners = tollgate_data_plane::Listeners::bind(&config).await.unwrap();
                addr_tx
                    .send((
                        listeners.proxy_addr().unwrap(),
                        listeners.admin_addr().unwrap(),
                    ))
                    .unwrap();
                let _ = tollgate_data_plane::serve_on(config, listeners, CancellationToken::new())
                    .await;
            });
            let _ = kill_rx.recv();
            rt.shutdown_background();
        });
        let (proxy_addr, admin_addr) = addr_rx.recv().unwrap();
        Self {
            proxy_addr,
            admin_addr,
            _tls_dir: tls_dir,
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub async fn admin_status(&self, path: &str) -> u16 {
        match reqwest::get(format!("http://{}{path}", self.admin_addr)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for IsolatedDataPlane {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}
