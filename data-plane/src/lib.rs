//! Tollgate data plane: a stateless proxy. It keeps one session with the control plane,
//! caches authorization, runs the Responses flow and streams upstream traffic.
//!
//! `serve(config, shutdown)` runs a whole data plane in-process; `main.rs` only parses
//! flags, installs logging and waits for a signal.

pub mod config;
pub mod control;
pub mod error;
pub mod health;
pub mod http_server;
pub mod metrics;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::{Error, Result};

use crate::control::session::{InvalidationSink, SessionState};
use crate::metrics::Metrics;

/// Bound listeners; tests bind port 0 and read the addresses back.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self> {
        Ok(Self {
            proxy: TcpListener::bind(config.listen).await?,
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }

    pub fn proxy_addr(&self) -> Result<SocketAddr> {
        Ok(self.proxy.local_addr()?)
    }

    pub fn admin_addr(&self) -> Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let listeners = Listeners::bind(&config).await?;
    serve_on(config, listeners, shutdown).await
}

/// Runs until `shutdown` is cancelled, then drains: not-ready → stop accepting → let
/// in-flight requests finish within the drain timeout → stop background tasks.
pub async fn serve_on(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let client = control::channel(&config.control_plane_url)?;
    let (state_tx, state_rx) = watch::channel(SessionState::default());
    let tasks = TaskTracker::new();
    // Background work stops after the servers drained, so in-flight requests keep their
    // session (and, later, their usage reporting) until the end.
    let background = CancellationToken::new();
    let sink: Arc<dyn InvalidationSink> = Arc::new(proxy::CacheSink::new(metrics.clone()));

    tasks.spawn(control::session::run(
        client,
        config.data_plane_id(),
        state_tx,
        sink,
        background.clone(),
    ));
    tasks.spawn(track_attachment(
        state_rx.clone(),
        metrics.clone(),
        background.clone(),
    ));

    let health = health::Health {
        session: state_rx.clone(),
        draining: shutdown.clone(),
        metrics: metrics.clone(),
    };
    let proxy_addr = listeners.proxy_addr()?;
    let admin_addr = listeners.admin_addr()?;
    tracing::info!(%proxy_addr, %admin_addr, control_plane = config.control_plane_url, "data plane serving");

    let admin_server = http_server::serve(
        listeners.admin,
        move |req, _peer| health.clone().handle(req),
        background.clone(),
        config.drain_timeout(),
        "admin",
    );
    let proxy = proxy::Proxy::new(metrics.clone());
    let proxy_server = http_server::serve(
        listeners.proxy,
        move |req, peer| proxy.clone().handle(req, peer),
        shutdown.clone(),
        config.drain_timeout(),
        "proxy",
    );
    let admin_task = tasks.spawn(admin_server);
    proxy_server.await;
    // The proxy drained; now the admin port, the session and the rest.
    background.cancel();
    tasks.close();
    tasks.wait().await;
    drop(admin_task);
    tracing::info!("data plane stopped");
    Ok(())
}

async fn track_attachment(
    mut rx: watch::Receiver<SessionState>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let attached = rx.borrow_and_update().attached();
        metrics.session_attached.set(i64::from(attached));
        tokio::select! {
            () = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}
