//! A control plane and data planes running in this test process, on real sockets.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct ControlPlane {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub database_url: Option<String>,
    shutdown: CancellationToken,
    handle: JoinHandle<tollgate_control_plane::Result<()>>,
}

impl ControlPlane {
    /// Starts a control plane on an ephemeral port with the embedded SQLite default.
    pub async fn start() -> Self {
        Self::start_with(tempfile::tempdir().unwrap(), None, None).await
    }

    /// Starts on `addr` (port 0 = ephemeral) with the given data dir and database.
    pub async fn start_with(
        data_dir: tempfile::TempDir,
        database_url: Option<String>,
        addr: Option<SocketAddr>,
    ) -> Self {
        let mut config = tollgate_control_plane::Config::for_data_dir(data_dir.path());
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.database_url = database_url.clone();
        config.lease_grace_ms = 2_000;
        config.heartbeat_interval_ms = 200;
        let listener =
            TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))))
                .await
                .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(tollgate_control_plane::serve_on(
            config,
            listener,
            shutdown.clone(),
        ));
        Self {
            addr,
            data_dir,
            database_url,
            shutdown,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits; returns the data dir so a restart can reuse it.
    pub async fn stop(self) -> (tempfile::TempDir, Option<String>, SocketAddr) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        (self.data_dir, self.database_url, self.addr)
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
        let config = tollgate_data_plane::Config::for_control_plane(control_plane_url);
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

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
