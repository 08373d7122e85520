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
use tollgate_shared::drain;

pub use config::Config;
pub use error::{Error, Result};

use crate::control::ControlClient;
use crate::control::leases::LeaseRegistry;
use crate::control::response_records::RecordSender;
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
        let bind = |addr, setting| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind {
                addr,
                setting,
                source,
            })
        };
        Ok(Self {
            proxy: bind(config.listen, "--listen / TOLLGATE_DP_LISTEN").await?,
            admin: bind(
                config.admin_listen,
                "--admin-listen / TOLLGATE_DP_ADMIN_LISTEN",
            )
            .await?,
        })
    }

    pub fn proxy_addr(&self) -> Result<SocketAddr> {
        Ok(self.proxy.local_addr()?)
    }

    pub fn admin_addr(&self) -> Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }
}

/// The binary: parse flags, install logging, serve until SIGINT/SIGTERM, then drain
/// (returning within the drain budget).
pub async fn main_from_env() -> std::process::ExitCode {
    let config = <Config as clap::Parser>::parse();
    if let Err(e) = tollgate_shared::telemetry::init(&tollgate_shared::telemetry::Options {
        service: "tollgate-data-plane",
        json: config.log_json,
        otlp_endpoint: config.otlp_endpoint.clone(),
        filter: None,
    }) {
        eprintln!("Error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let shutdown = CancellationToken::new();
    let server = serve(config, shutdown.clone());
    tokio::pin!(server);
    let result = tokio::select! {
        res = &mut server => res,
        () = tollgate_shared::signal::terminated() => {
            tracing::info!("shutdown signal received, draining");
            shutdown.cancel();
            server.await
        }
    };
    // Spans of the drain itself included.
    tollgate_shared::telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "data plane failed");
            // One line on stderr, exit status 1 (a port in use, a bad setting).
            tollgate_shared::exit::failed("tollgate-data-plane", &e)
        }
    }
}

pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let listeners = Listeners::bind(&config).await?;
    serve_on(config, listeners, shutdown).await
}

/// Runs until `shutdown` is cancelled, then drains within the one budget
/// (`TOLLGATE_DRAIN_TIMEOUT_SECS`, steps and instants in `tollgate_shared::drain`): not ready → stop
/// accepting → finish in-flight requests and streams → at the cut, end the rest with an
/// error event → flush usage → stop background tasks → flush telemetry.
pub async fn serve_on(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let tls = control::tls::client_tls(&config)?;
    let control = ControlClient::new(
        control::targets::Targets::new(
            &control::urls(&config.control_plane_url),
            tls.clone().map(tollgate_shared::tls::TlsConnector::new),
        )?,
        metrics.clone(),
        std::time::Duration::from_millis(config.flow.failover_wait_ms),
    );
    let settings = Settings::from_config(&config.flow)?;
    let (state_tx, state_rx) = watch::channel(SessionState::default());
    let tasks = TaskTracker::new();
    // Background work stops after the proxy drained, so in-flight requests keep their
    // session, releases and usage reporting until the end.
    let background = CancellationToken::new();
    let cache = AuthCache::new(
        control.clone(),
        config.flow.auth_cache_capacity,
        metrics.clone(),
    );
    let (leases, release_rx) = LeaseRegistry::new();
    let (usage, usage_rx) = UsageSender::new();
    let (records, records_rx) = RecordSender::new();
    let hooks: Arc<dyn SessionHooks> = Arc::new(proxy::Hooks {
        cache: cache.clone(),
        leases: leases.clone(),
        metrics: metrics.clone(),
    });

    let data_plane_id = config.data_plane_id();
    let usage_policy = control::usage::QueuePolicy {
        memory_cap: config.usage_memory_cap,
        spill_path: config.usage_spill_path(&data_plane_id),
        flush_deadline: drain::Plan::usage_flush_window(config.drain_timeout()),
    };
    // The usage reporter stops on its own token: after the requests, before the session.
    let usage_stop = CancellationToken::new();
    let usage_task = TaskTracker::new();
    if let Some(tls) = tls {
        tasks.spawn(tls.watch(config.tls_reload_interval(), background.clone()));
    }
    tasks.spawn(control::session::run(
        control.clone(),
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
    // Response records are answered before their requests do: stopped with the
    // background tasks, after the requests drained (what is still queued goes out then).
    tasks.spawn(control::response_records::run(
        control.clone(),
        records_rx,
        background.clone(),
    ));
    usage_task.spawn(control::usage::run_reporter(
        control.clone(),
        usage_rx,
        usage_stop.clone(),
        usage_policy,
        metrics.clone(),
    ));

    let request_tasks = TaskTracker::new();
    let drain_cut = CancellationToken::new();
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
        records,
        throttle: proxy::throttle::InvalidKeyThrottle::new(
            config.edge.invalid_key_burst,
            config.edge.invalid_keys_per_minute,
        ),
        metrics: metrics.clone(),
        body_budget: proxy::body_budget::BodyBudget::new(
            config.flow.body_budget_bytes,
            config.flow.body_budget_per_key_bytes,
            std::time::Duration::from_millis(config.flow.body_budget_wait_ms),
            metrics.flow.body_bytes_held.clone(),
        ),
        tasks: request_tasks.clone(),
        drain_cut: drain_cut.clone(),
    });

    let health = health::Health {
        session: state_rx.clone(),
        outage_grace: config.readiness_outage(),
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
        // Probes and scrapes are short; this port closes last, after the background tasks.
        std::time::Duration::from_secs(1),
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
    // The proxy server ends once shutdown came and its connections closed; the request
    // tasks may outlive their connections (a client that left: the upstream is still read
    // for usage).
    let drained = async {
        proxy_server.await;
        request_tasks.close();
        request_tasks.wait().await;
    };
    tokio::pin!(drained);
    // (Only shutdown ends the proxy server; `finished` guards against polling it twice.)
    let finished = tokio::select! {
        () = shutdown.cancelled() => false,
        () = &mut drained => true,
    };
    // Not ready and not accepting already (both follow `shutdown`); the budget starts now.
    let plan = drain::Plan::new(tokio::time::Instant::now(), config.drain_timeout());
    tracing::info!(
        budget_secs = config.drain_timeout_secs,
        "draining: not ready, no new connections, finishing in-flight requests"
    );
    if !finished && drain::until(plan.cut_at, &mut drained).await.is_none() {
        tracing::warn!("drain: requests still open at the cut; ending them with an error");
        drain_cut.cancel();
        if drain::until(plan.ended_by, &mut drained).await.is_none() {
            tracing::error!("drain: requests did not end after the cut; leaving them");
        }
    }
    // Every finished request has queued its usage: send it (the rest goes to the spill
    // file, replayed at the next start). Leases released without a record (none here:
    // cut requests report an estimate) are estimated by the control plane.
    usage_stop.cancel();
    usage_task.close();
    if drain::until(plan.stopped_by, usage_task.wait())
        .await
        .is_none()
    {
        tracing::error!("drain: the usage flush overran its window");
    }
    // Now the session (its leases are released with it), the releaser, the TLS watcher
    // and the admin port.
    background.cancel();
    tasks.close();
    if drain::until(plan.deadline, tasks.wait()).await.is_none() {
        tracing::error!("drain: background tasks overran the budget");
    }
    // Telemetry: logs are written synchronously; buffered trace spans are exported
    // now, bounded by `plan.deadline`.
    tollgate_shared::telemetry::flush_until(plan.deadline).await;
    tracing::info!(
        took_ms = plan.started.elapsed().as_millis(),
        "data plane stopped"
    );
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
