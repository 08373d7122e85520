//! Tollgate data plane: a stateless proxy. It keeps one session with the control plane,
//! caches authorization, runs the Responses flow and streams upstream traffic.
//!
//! `serve(config, shutdown)` runs a whole data plane in-process; `main.rs` only parses
//! flags, installs logging and waits for a signal.

pub mod config;
pub mod conn_limits;
pub mod control;
pub mod error;
pub mod health;
pub mod http_server;
pub mod metrics;
pub mod proxy;
pub mod request_id;
pub mod stack;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::{Error, Result};

use crate::control::ControlClient;
use crate::control::leases::LeaseRegistry;
use crate::control::session::{SessionHooks, SessionState};
use crate::control::usage::UsageSender;
use crate::metrics::Metrics;
use crate::proxy::cache::AuthCache;
use crate::proxy::responses::{Flow, Settings, upstream::UpstreamPool};

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
    let tls = control::tls::client_tls(&config)?;
    let control = ControlClient::new(
        control::channel(
            &config.control_plane_url,
            tls.clone().map(tollgate_shared::tls::TlsConnector::new),
        )?,
        metrics.clone(),
    );
    let settings = Settings::from_config(&config.flow)?;
    let (state_tx, state_rx) = watch::channel(SessionState::default());
    let tasks = TaskTracker::new();
    // Background work stops after the proxy drained, so in-flight requests keep their
    // session, releases and usage reporting until the end.
    let background = CancellationToken::new();
    let cache = AuthCache::new(control.clone(), config.flow.auth_cache_capacity);
    let (leases, release_rx) = LeaseRegistry::new();
    let (usage, usage_rx) = UsageSender::new();
    let hooks: Arc<dyn SessionHooks> = Arc::new(proxy::Hooks {
        cache: cache.clone(),
        leases: leases.clone(),
        metrics: metrics.clone(),
    });

    let data_plane_id = config.data_plane_id();
    let usage_policy = control::usage::QueuePolicy {
        memory_cap: config.usage_memory_cap,
        spill_path: config.usage_spill_path(&data_plane_id),
        flush_deadline: config.drain_timeout(),
    };
    if let Some(tls) = tls {
        tasks.spawn(tls.watch(config.tls_reload_interval(), background.clone()));
    }
    tasks.spawn(control::session::run(
        control.raw(),
        data_plane_id,
        state_tx,
        hooks,
        background.clone(),
    ));
    tasks.spawn(track_attachment(
        state_rx.clone(),
        metrics.clone(),
        background.clone(),
    ));
    tasks.spawn(control::leases::run_releaser(
        control.clone(),
        state_rx.clone(),
        release_rx,
        background.clone(),
    ));
    tasks.spawn(control::usage::run_reporter(
        control.clone(),
        usage_rx,
        background.clone(),
        usage_policy,
        metrics.clone(),
    ));

    let request_tasks = TaskTracker::new();
    let flow = Arc::new(Flow {
        cache,
        control,
        session: state_rx.clone(),
        settings,
        upstream: UpstreamPool::new(
            std::time::Duration::from_millis(config.flow.upstream_connect_timeout_ms),
            config.flow.allow_private_upstreams,
        ),
        leases,
        usage,
        throttle: proxy::throttle::InvalidKeyThrottle::new(
            config.edge.invalid_key_burst,
            config.edge.invalid_keys_per_minute,
        ),
        metrics: metrics.clone(),
        body_budget: proxy::body_budget::BodyBudget::new(
            config.flow.body_budget_bytes,
            config.flow.body_budget_per_key_bytes,
            std::time::Duration::from_millis(config.flow.body_budget_wait_ms),
        ),
        tasks: request_tasks.clone(),
    });

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
        tower::service_fn(move |req| health.clone().handle(req)),
        background.clone(),
        config.drain_timeout(),
        "admin",
        http_server::Limits::from_config(&config.edge),
    );
    let proxy = stack::proxy(
        proxy::Proxy::new(flow),
        metrics.clone(),
        config.flow.max_in_flight,
    );
    let proxy_server = http_server::serve(
        listeners.proxy,
        proxy,
        shutdown.clone(),
        config.drain_timeout(),
        "proxy",
        http_server::Limits {
            caps: Some(conn_limits::ConnectionCaps::new(
                config.edge.max_connections,
                config.edge.max_connections_per_ip,
                config
                    .flow
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| proxy::auth_info::parse_net(p))
                    .collect(),
                metrics.clone(),
            )),
            metrics: Some(metrics.clone()),
            ..http_server::Limits::from_config(&config.edge)
        },
    );
    tasks.spawn(admin_server);
    proxy_server.await;
    // Requests whose client left may still be reading the upstream for usage.
    request_tasks.close();
    if tokio::time::timeout(config.drain_timeout(), request_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached with requests still running");
    }
    // Now the session, releases, usage flush and the admin port.
    background.cancel();
    tasks.close();
    tasks.wait().await;
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
