//! A control plane and data planes running in this test process, on real sockets.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

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
        format!("http://{}", self.addr)
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

    pub async fn start_with(config: tollgate_data_plane::Config) -> Self {
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
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IsolatedDataPlane {
    pub fn start(control_plane_url: &str) -> Self {
        let config = tollgate_data_plane::Config::for_control_plane(control_plane_url);
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
