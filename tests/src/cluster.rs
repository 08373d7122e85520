//! A control plane and data planes running in this test process, on real sockets.
//!
//! [`ControlPlane`] is the one way tests start a control plane: through its public entry
//! point `serve_on(config, listener, shutdown)`, on `127.0.0.1:0`, waiting until it
//! serves (it migrates before it does). Its [`Home`] (data dir and test database)
//! outlives it, so a test can stop it, look at the database, and start it again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_control_plane::Config;
use tollgate_control_plane::storage::Store;
use tollgate_control_plane::tls::dev::{DevPaths, DevPki};
use tollgate_shared::proto::admin::v1::admin_client::AdminClient;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::db::{Backend, TestDb};

/// The admin token of every test control plane.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Adds `authorization: <value>` (or nothing) to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `Bearer <ADMIN_TOKEN>`.
    pub fn admin() -> Self {
        Self::header(Some(&format!("Bearer {ADMIN_TOKEN}")))
    }

    /// `authorization: <header>`, or no header at all.
    pub fn header(header: Option<&str>) -> Self {
        Self(header.map(|h| h.parse().unwrap()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An Admin API client that sends the admin token.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// The Admin API of the control plane at `url`, with the admin token.
pub fn admin_client(url: &str) -> Admin {
    AdminClient::with_interceptor(lazy_channel(url), Bearer::admin())
}

fn lazy_channel(url: &str) -> Channel {
    channel(url, None)
}

/// One development PKI per test process (generation costs a few milliseconds): every
/// system-test control plane serves its server certificate and every data plane presents
/// its data-plane certificate, so the whole system is exercised over mutual TLS.
pub fn test_pki() -> &'static DevPki {
    static PKI: std::sync::OnceLock<DevPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| DevPki::generate(&[]).unwrap())
}

/// A channel to `url` (connects on first use): TLS trusting the test CA when
/// `https://`, presenting `identity` (PEM certificate and key) if given.
pub fn channel(url: &str, identity: Option<(&str, &str)>) -> Channel {
    channel_trusting(url, &test_pki().ca_cert, identity)
}

/// [`channel`] trusting the CA `ca_pem` instead of the test CA.
pub fn channel_trusting(url: &str, ca_pem: &str, identity: Option<(&str, &str)>) -> Channel {
    let endpoint = Endpoint::from_shared(tollgate_shared::tls::TlsConnector::endpoint_url(url))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    if !url.starts_with("https://") {
        return endpoint.connect_lazy();
    }
    let config = tollgate_shared::tls::client_config(
        ca_pem.as_bytes(),
        identity.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
    )
    .unwrap();
    endpoint.connect_with_connector_lazy(tollgate_shared::tls::TlsConnector::new(
        tollgate_shared::tls::Reloading::fixed(config),
    ))
}

/// Points a data-plane config without client TLS files at the test PKI (written into
/// `dir`), when its control-plane URL is `https://`.
pub(crate) fn with_test_client_tls(
    config: &mut tollgate_data_plane::Config,
    dir: &std::path::Path,
) {
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

/// The configuration every test control plane starts from: defaults, its data dir and
/// the known admin token. Built in code, so the developer's `TOLLGATE_*` variables never
/// reach a test.
pub fn base_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::for_data_dir(data_dir);
    config.admin_token = Some(ADMIN_TOKEN.into());
    // Well inside `ControlPlane::stop`'s wait, whatever calls a test leaves open.
    config.drain_timeout_secs = 10;
    config
}

/// System-test defaults: mutual TLS with the test PKI (written into the data dir), fast
/// heartbeats, short lease grace, loopback upstreams allowed (the fake upstream is plain
/// HTTP on 127.0.0.1).
pub fn control_plane_config(data_dir: &std::path::Path) -> Config {
    let mut config = base_config(data_dir);
    config.lease_grace_ms = 2_000;
    config.heartbeat_interval_ms = 200;
    config.allow_insecure_upstreams = true;
    config.allow_private_upstreams = true;
    let tls = data_dir.join("test-tls");
    test_pki().write(&tls).unwrap();
    let paths = DevPaths::in_dir(&tls);
    config.tls_cert = Some(paths.server_cert);
    config.tls_key = Some(paths.server_key);
    config.tls_client_ca = Some(paths.ca_cert);
    config.insecure_plaintext = false;
    config
}

/// What a control plane keeps across restarts: its data dir (generated secrets, the
/// embedded SQLite) and, if it has one, its test database. Cloning shares them; they are
/// deleted when the last clone goes.
#[derive(Clone)]
pub struct Home {
    data_dir: Arc<tempfile::TempDir>,
    db: Option<Arc<TestDb>>,
}

impl Home {
    /// A fresh data dir; the database is the embedded SQLite in it.
    pub fn embedded() -> Self {
        Self {
            data_dir: Arc::new(tempfile::tempdir().unwrap()),
            db: None,
        }
    }

    /// A fresh data dir and a fresh test database on `backend`.
    pub async fn on(backend: Backend) -> Self {
        Self {
            data_dir: Arc::new(tempfile::tempdir().unwrap()),
            db: Some(Arc::new(TestDb::new(backend).await)),
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    pub fn db(&self) -> Option<&TestDb> {
        self.db.as_deref()
    }

    /// `base_config` pointed at this home's database.
    pub fn config(&self) -> Config {
        let mut config = base_config(self.data_dir());
        config.database_url = self.db.as_ref().map(|db| db.url.clone().into());
        config
    }
}

pub struct ControlPlane {
    pub addr: SocketAddr,
    pub config: Config,
    pub home: Home,
    shutdown: CancellationToken,
    /// `None` once stopped.
    handle: Option<JoinHandle<tollgate_control_plane::Result<()>>>,
}

impl ControlPlane {
    /// System-test defaults ([`control_plane_config`]) on the embedded SQLite.
    pub async fn start() -> Self {
        let home = Home::embedded();
        let config = control_plane_config(home.data_dir());
        Self::start_with(home, config).await
    }

    /// A fresh test database on `backend`; `configure` adjusts [`base_config`].
    pub async fn on(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let home = Home::on(backend).await;
        let mut config = home.config();
        configure(&mut config);
        Self::start_with(home, config).await
    }

    /// Starts with `config` (its `listen` port 0 = ephemeral) in `home`, and waits until
    /// it serves; panics with its error if it exits first.
    pub async fn start_with(home: Home, config: Config) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods)] // awaited in `stop`, aborted on drop
        let handle = tokio::spawn(tollgate_control_plane::serve_on(
            config.clone(),
            listener,
            shutdown.clone(),
        ));
        let cp = Self {
            addr,
            config,
            home,
            shutdown,
            handle: Some(handle),
        };
        cp.wait_serving().await;
        cp
    }

    /// Health says SERVING once the store is migrated and the services are up.
    async fn wait_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            // A fresh channel each time: a development CA appears only once it started.
            let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel());
            let req = tonic_health::pb::HealthCheckRequest::default();
            if let Ok(r) = health.check(req).await
                && r.get_ref().status == ServingStatus::Serving as i32
            {
                return;
            }
            assert!(
                !self.handle.as_ref().is_some_and(JoinHandle::is_finished),
                "control plane exited before serving"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "control plane did not serve within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
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

    /// A channel to it (connects on first use), anonymous at TLS.
    pub fn channel(&self) -> Channel {
        channel_trusting(&self.url(), &self.ca_pem(), None)
    }

    /// The CA its clients trust: the file of its client CA (test set-ups issue server and
    /// data-plane certificates from one CA), the generated development CA, else the
    /// test CA.
    fn ca_pem(&self) -> String {
        let path = match &self.config.tls_client_ca {
            Some(p) => p.clone(),
            None => self.home.data_dir().join("tls").join("ca.crt"),
        };
        std::fs::read_to_string(path).unwrap_or_else(|_| test_pki().ca_cert.clone())
    }

    /// The Admin API with the admin token.
    pub fn admin(&self) -> Admin {
        AdminClient::with_interceptor(self.channel(), Bearer::admin())
    }

    /// The Admin API sending `authorization: <header>` (or no header).
    pub fn admin_with(&self, header: Option<&str>) -> Admin {
        AdminClient::with_interceptor(self.channel(), Bearer::header(header))
    }

    /// The Gateway API, as a data plane calls it (with the data-plane certificate).
    pub fn gateway(&self) -> GatewayClient<Channel> {
        let pki = test_pki();
        let identity = (pki.data_plane_cert.as_str(), pki.data_plane_key.as_str());
        GatewayClient::new(channel(&self.url(), Some(identity)))
    }

    /// The database URL it uses (the embedded SQLite's when it has no test database).
    pub fn database_url(&self) -> String {
        self.config.resolve().unwrap().database_url
    }

    /// A store on its database with its encryption key: to seed rows the Admin API does
    /// not write and to read what was stored (decrypted).
    pub async fn store(&self) -> Store {
        let resolved = self.config.resolve().unwrap();
        Store::connect(&resolved.database_url, resolved.secrets)
            .await
            .unwrap()
    }

    /// Stops it and waits; returns its home and config (listening on the same address)
    /// so that a restart reuses both.
    pub async fn stop(mut self) -> (Home, Config) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), handle)
                .await
                .expect("control plane stops within 20 s")
                .unwrap()
                .unwrap();
        }
        let mut config = self.config.clone();
        config.listen = self.addr;
        (self.home.clone(), config)
    }

    /// Restarts on the same address, data dir and database.
    pub async fn restart(self) -> Self {
        let (home, config) = self.stop().await;
        Self::start_with(home, config).await
    }
}

impl Drop for ControlPlane {
    /// A test that ends without `stop` (a panic) does not leave it serving.
    fn drop(&mut self) {
        self.shutdown.cancel();
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

    /// `config` with private upstreams allowed: the fake upstream is on 127.0.0.1.
    pub async fn start_with(mut config: tollgate_data_plane::Config) -> Self {
        config.flow.allow_private_upstreams = true;
        Self::start_exact(config).await
    }

    /// `config` as given (the outbound address rule as the config says).
    pub async fn start_exact(mut config: tollgate_data_plane::Config) -> Self {
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
        match crate::http_client()
            .get(format!("{}{path}", self.admin_url()))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// The value of a counter/gauge line in `/metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = crate::http_client()
            .get(format!("{}/metrics", self.admin_url()))
            .send()
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
        config.flow.allow_private_upstreams = true;
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
        match crate::http_client()
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
        {
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
