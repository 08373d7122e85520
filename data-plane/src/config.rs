//! Data-plane configuration: flags with environment-variable fallbacks, validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Every default that both the flags and the in-process constructors
/// (`FlowConfig::default`, `Config::for_control_plane`) use, written once.
mod defaults {
    pub const DRAIN_TIMEOUT_SECS: u64 = tollgate_shared::drain::DEFAULT_BUDGET_SECS;
    pub const USAGE_MEMORY_CAP: usize = 10_000;
    pub const BODY_LIMIT_BYTES: usize = 100 << 20;
    /// Request-body bytes held at once; each costs about three bytes of memory at peak
    /// (the bytes, the parsed JSON, the copy being sent upstream): ~1.5 GiB in all.
    pub const BODY_BUDGET_BYTES: usize = 512 << 20;
    /// One key's share: room for one body at the limit, so no key can take the budget.
    pub const BODY_BUDGET_PER_KEY_BYTES: usize = 128 << 20;
    pub const BODY_BUDGET_WAIT_MS: u64 = 5_000;
    pub const PING_INTERVAL_SECS: u64 = 10;
    pub const STREAM_KEEPALIVE_MS: u64 = 10_000;
    pub const STREAM_IDLE_TIMEOUT_MS: u64 = 180_000;
    pub const STREAM_LINE_LIMIT_BYTES: usize = 40 << 20;
    pub const MAX_ACCOUNT_SWITCHES: u32 = 3;
    pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// Ten minutes: a non-streaming request to a reasoning model gets its response head
    /// only once the whole answer is generated, which at high effort takes minutes;
    /// OpenAI's own SDKs wait 600 s by default. A streaming upstream sends its head
    /// within seconds, so deployments that serve only streaming clients can go lower.
    pub const UPSTREAM_HEADER_TIMEOUT_MS: u64 = 600_000;
    /// After the head of a non-streaming answer the body is already generated: reading
    /// it is transfer time only.
    pub const UPSTREAM_BODY_TIMEOUT_MS: u64 = 120_000;
    pub const MAX_IN_FLIGHT: usize = 10_000;
    pub const AUTH_CACHE_CAPACITY: u64 = 100_000;
    pub const DEFAULT_CODEX_MODEL: &str = "gpt-5.1-codex";
    pub const DEFAULT_ORIGINATOR: &str = "codex_cli_rs";
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const MAX_HEADER_BYTES: usize = 64 << 10;
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 200;
    pub const H2_MAX_PENDING_RESET_STREAMS: usize = 20;
    pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1_024;
    pub const MAX_CONNECTIONS: usize = 20_000;
    pub const MAX_CONNECTIONS_PER_IP: usize = 512;
    pub const INVALID_KEY_BURST: u32 = 20;
    pub const INVALID_KEYS_PER_MINUTE: u32 = 30;
    pub const READINESS_OUTAGE_MS: u64 = 30_000;
    pub const FAILOVER_WAIT_MS: u64 = 15_000;
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tollgate-data-plane",
    version,
    about = "Tollgate data-plane proxy"
)]
pub struct Config {
    /// Client-facing HTTP listen address (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "TOLLGATE_DP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Health, readiness and metrics listen address (never behind API-key auth).
    #[arg(
        long,
        env = "TOLLGATE_DP_ADMIN_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub admin_listen: SocketAddr,

    /// Control-plane gRPC endpoint: `https://` (mutual TLS), or `http://` only with
    /// --allow-plaintext-control-plane. Several, comma-separated, for replicas (the data
    /// plane follows the leader), or one Service address that routes to the leader.
    #[arg(
        long,
        env = "TOLLGATE_CONTROL_PLANE_URL",
        default_value = "https://127.0.0.1:7600"
    )]
    pub control_plane_url: String,

    /// PEM CA bundle that issued the control plane's server certificate (cert-manager's
    /// `ca.crt`; development: `<control-plane data dir>/tls/ca.crt`).
    #[arg(long, env = "TOLLGATE_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<PathBuf>,

    /// PEM client certificate proving this process is a data plane (issued by the CA the
    /// control plane's --tls-client-ca names; cert-manager's `tls.crt`). Reloaded on change.
    #[arg(long, env = "TOLLGATE_DP_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert (cert-manager's `tls.key`).
    #[arg(long, env = "TOLLGATE_DP_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    /// Accept an `http://` control-plane URL: leases carrying upstream credentials then
    /// cross the network in clear text.
    #[arg(long, env = "TOLLGATE_ALLOW_PLAINTEXT_CONTROL_PLANE")]
    pub allow_plaintext_control_plane: bool,

    /// How often the TLS files are checked for rotation.
    #[arg(
        long,
        env = "TOLLGATE_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub tls_reload_interval_ms: u64,

    /// Stable id of this process for the control plane (default: hostname + random).
    #[arg(long, env = "TOLLGATE_DATA_PLANE_ID")]
    pub data_plane_id: Option<String>,

    /// On SIGTERM, the whole drain's budget, seconds: requests and streams finish within
    /// its first four fifths, then the rest are ended and usage is flushed. Keep it
    /// shorter than the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT_SECS", default_value_t = defaults::DRAIN_TIMEOUT_SECS)]
    pub drain_timeout_secs: u64,

    /// Usage records held in memory while the control plane has not stored them; beyond
    /// this they wait in the spill file (never dropped).
    #[arg(long, env = "TOLLGATE_USAGE_MEMORY_CAP", default_value_t = defaults::USAGE_MEMORY_CAP)]
    pub usage_memory_cap: usize,

    /// The usage spill file (JSON lines, 0600, fsynced per batch; replayed at start).
    /// Default: `tollgate-usage-<id>.jsonl` in the OS temp dir, where `<id>` is the
    /// data-plane id when set, else the listen port. Put it on a persistent volume for
    /// records to survive a lost machine.
    #[arg(long, env = "TOLLGATE_USAGE_SPILL_PATH")]
    pub usage_spill_path: Option<std::path::PathBuf>,

    /// Structured JSON logs (each line carries its request's `request_id` and
    /// `trace_id`).
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,

    /// OTLP/gRPC collector to export trace spans to, e.g. http://otel-collector:4317
    /// (the standard OpenTelemetry variable). Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How long the data plane stays ready after losing its control plane (a failover
    /// takes seconds; readiness drops only after a sustained outage).
    #[arg(long, env = "TOLLGATE_READINESS_OUTAGE_MS", default_value_t = defaults::READINESS_OUTAGE_MS)]
    pub readiness_outage_ms: u64,

    #[command(flatten)]
    pub flow: FlowConfig,

    #[command(flatten)]
    pub edge: EdgeConfig,
}

/// Limits against abusive clients at the edge: slow or huge headers, connection floods,
/// HTTP/2 stream and reset floods, invalid-key guessing.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeConfig {
    /// An HTTP/1 request head not complete within this long closes the connection
    /// (slowloris), milliseconds.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_MS", default_value_t = defaults::HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,

    /// Largest request head (HTTP/1 read buffer, HTTP/2 header list), bytes; larger
    /// heads get 431 (HTTP/1) or a stream reset (HTTP/2).
    #[arg(long, env = "TOLLGATE_MAX_HEADER_BYTES", default_value_t = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "TOLLGATE_H2_MAX_CONCURRENT_STREAMS", default_value_t = defaults::H2_MAX_CONCURRENT_STREAMS)]
    pub h2_max_concurrent_streams: u32,

    /// HTTP/2 streams reset by the client before being accepted, per connection, beyond
    /// which the connection is closed (rapid-reset flood).
    #[arg(long, env = "TOLLGATE_H2_MAX_PENDING_RESET_STREAMS", default_value_t = defaults::H2_MAX_PENDING_RESET_STREAMS)]
    pub h2_max_pending_reset_streams: usize,

    /// HTTP/2 streams the server may reset for protocol errors on one connection before
    /// closing it.
    #[arg(long, env = "TOLLGATE_H2_MAX_LOCAL_ERROR_RESETS", default_value_t = defaults::H2_MAX_LOCAL_ERROR_RESETS)]
    pub h2_max_local_error_resets: usize,

    /// Client connections open at once; new ones beyond are closed at accept.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Client connections open at once from one socket peer address; new ones beyond are
    /// closed at accept. Peers in TOLLGATE_TRUSTED_PROXIES are exempt (they carry many
    /// clients).
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS_PER_IP", default_value_t = defaults::MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,

    /// Invalid API keys one client IP may send in a burst before getting 429 with
    /// Retry-After (without the key being looked up).
    #[arg(long, env = "TOLLGATE_INVALID_KEY_BURST", default_value_t = defaults::INVALID_KEY_BURST)]
    pub invalid_key_burst: u32,

    /// Sustained rate of invalid API keys allowed per client IP, per minute.
    #[arg(long, env = "TOLLGATE_INVALID_KEYS_PER_MINUTE", default_value_t = defaults::INVALID_KEYS_PER_MINUTE)]
    pub invalid_keys_per_minute: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: defaults::HEADER_READ_TIMEOUT_MS,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            h2_max_concurrent_streams: defaults::H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_reset_streams: defaults::H2_MAX_PENDING_RESET_STREAMS,
            h2_max_local_error_resets: defaults::H2_MAX_LOCAL_ERROR_RESETS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            invalid_key_burst: defaults::INVALID_KEY_BURST,
            invalid_keys_per_minute: defaults::INVALID_KEYS_PER_MINUTE,
        }
    }
}

/// Settings of the Responses flow (responses-flow.md; defaults are the spec's).
#[derive(Debug, Clone, clap::Args)]
pub struct FlowConfig {
    /// How long a new admission waits for the control plane during a failover (re-attach
    /// to the new leader, its reconcile window) before the client gets 503 with
    /// Retry-After, milliseconds.
    #[arg(long, env = "TOLLGATE_FAILOVER_WAIT_MS", default_value_t = defaults::FAILOVER_WAIT_MS)]
    pub failover_wait_ms: u64,

    /// Maximum request body, bytes.
    #[arg(long, env = "TOLLGATE_BODY_LIMIT_BYTES", default_value_t = defaults::BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,

    /// Request-body bytes (decoded) the data plane holds at once, over all requests: a
    /// body is charged as it is read and until the upstream has answered. Peak memory for
    /// bodies is about three times this.
    #[arg(long, env = "TOLLGATE_BODY_BUDGET_BYTES", default_value_t = defaults::BODY_BUDGET_BYTES)]
    pub body_budget_bytes: usize,

    /// One API key's share of TOLLGATE_BODY_BUDGET_BYTES (at least TOLLGATE_BODY_LIMIT_BYTES).
    #[arg(long, env = "TOLLGATE_BODY_BUDGET_PER_KEY_BYTES", default_value_t = defaults::BODY_BUDGET_PER_KEY_BYTES)]
    pub body_budget_per_key_bytes: usize,

    /// How long a body waits for budget room before it is refused (429 when its key's
    /// share is full, 503 when the whole budget is, both with Retry-After), milliseconds.
    #[arg(long, env = "TOLLGATE_BODY_BUDGET_WAIT_MS", default_value_t = defaults::BODY_BUDGET_WAIT_MS)]
    pub body_budget_wait_ms: u64,

    /// SSE ping interval while a streaming request waits for a slot, seconds (5-30).
    #[arg(long, env = "TOLLGATE_PING_INTERVAL_SECS", default_value_t = defaults::PING_INTERVAL_SECS)]
    pub ping_interval_secs: u64,

    /// Keep-alive comment interval while the upstream stream is silent, milliseconds.
    #[arg(long, env = "TOLLGATE_STREAM_KEEPALIVE_MS", default_value_t = defaults::STREAM_KEEPALIVE_MS)]
    pub stream_keepalive_ms: u64,

    /// Upstream stream silent this long → `stream_timeout`, milliseconds.
    #[arg(
        long,
        env = "TOLLGATE_STREAM_IDLE_TIMEOUT_MS",
        default_value_t = defaults::STREAM_IDLE_TIMEOUT_MS
    )]
    pub stream_idle_timeout_ms: u64,

    /// Longest single SSE line accepted from the upstream, bytes.
    #[arg(long, env = "TOLLGATE_STREAM_LINE_LIMIT_BYTES", default_value_t = defaults::STREAM_LINE_LIMIT_BYTES)]
    pub stream_line_limit_bytes: usize,

    /// Account switches on failover-class upstream answers.
    #[arg(long, env = "TOLLGATE_MAX_ACCOUNT_SWITCHES", default_value_t = defaults::MAX_ACCOUNT_SWITCHES)]
    pub max_account_switches: u32,

    /// Upstream connect timeout, milliseconds.
    #[arg(
        long,
        env = "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = defaults::UPSTREAM_CONNECT_TIMEOUT_MS
    )]
    pub upstream_connect_timeout_ms: u64,

    /// Upstream response head not received within this → the attempt fails over like a
    /// 5xx (a timeout outcome for the account's health; 504 `upstream_timeout` when no
    /// account answers), milliseconds. Default: see `defaults::UPSTREAM_HEADER_TIMEOUT_MS`.
    #[arg(
        long,
        env = "TOLLGATE_UPSTREAM_HEADER_TIMEOUT_MS",
        default_value_t = defaults::UPSTREAM_HEADER_TIMEOUT_MS
    )]
    pub upstream_header_timeout_ms: u64,

    /// A non-streaming upstream body not read completely within this after its head →
    /// 504 `stream_timeout` and a timeout outcome, milliseconds.
    #[arg(
        long,
        env = "TOLLGATE_UPSTREAM_BODY_TIMEOUT_MS",
        default_value_t = defaults::UPSTREAM_BODY_TIMEOUT_MS
    )]
    pub upstream_body_timeout_ms: u64,

    /// Connect to upstreams on loopback / private / link-local / metadata addresses
    /// (checked at connection time, after DNS; default: refused).
    #[arg(long, env = "TOLLGATE_ALLOW_PRIVATE_UPSTREAMS")]
    pub allow_private_upstreams: bool,

    /// File overriding the bundled default instructions, added for non-Codex clients
    /// that send none, on subscription accounts only (never on API-key accounts).
    #[arg(long, env = "TOLLGATE_DEFAULT_INSTRUCTIONS_FILE")]
    pub default_instructions_file: Option<std::path::PathBuf>,

    /// Model sent to subscription accounts for names outside the Codex family.
    #[arg(
        long,
        env = "TOLLGATE_DEFAULT_CODEX_MODEL",
        default_value = defaults::DEFAULT_CODEX_MODEL
    )]
    pub default_codex_model: String,

    /// `originator` sent to subscription accounts for clients other than Codex CLI.
    #[arg(
        long,
        env = "TOLLGATE_DEFAULT_ORIGINATOR",
        default_value = defaults::DEFAULT_ORIGINATOR
    )]
    pub default_originator: String,

    /// Peers whose X-Forwarded-For / X-Real-IP are honoured (IPs or CIDRs, comma-separated).
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Requests being processed at once (up to their response head) before new ones are
    /// shed with 503; streams in progress don't count once their head is sent.
    #[arg(long, env = "TOLLGATE_MAX_IN_FLIGHT", default_value_t = defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Authorization cache capacity (entries).
    #[arg(long, env = "TOLLGATE_AUTH_CACHE_CAPACITY", default_value_t = defaults::AUTH_CACHE_CAPACITY)]
    pub auth_cache_capacity: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            failover_wait_ms: defaults::FAILOVER_WAIT_MS,
            body_limit_bytes: defaults::BODY_LIMIT_BYTES,
            body_budget_bytes: defaults::BODY_BUDGET_BYTES,
            body_budget_per_key_bytes: defaults::BODY_BUDGET_PER_KEY_BYTES,
            body_budget_wait_ms: defaults::BODY_BUDGET_WAIT_MS,
            ping_interval_secs: defaults::PING_INTERVAL_SECS,
            stream_keepalive_ms: defaults::STREAM_KEEPALIVE_MS,
            stream_idle_timeout_ms: defaults::STREAM_IDLE_TIMEOUT_MS,
            stream_line_limit_bytes: defaults::STREAM_LINE_LIMIT_BYTES,
            max_account_switches: defaults::MAX_ACCOUNT_SWITCHES,
            upstream_connect_timeout_ms: defaults::UPSTREAM_CONNECT_TIMEOUT_MS,
            upstream_header_timeout_ms: defaults::UPSTREAM_HEADER_TIMEOUT_MS,
            upstream_body_timeout_ms: defaults::UPSTREAM_BODY_TIMEOUT_MS,
            allow_private_upstreams: false,
            default_instructions_file: None,
            default_codex_model: defaults::DEFAULT_CODEX_MODEL.into(),
            default_originator: defaults::DEFAULT_ORIGINATOR.into(),
            trusted_proxies: Vec::new(),
            auth_cache_capacity: defaults::AUTH_CACHE_CAPACITY,
            max_in_flight: defaults::MAX_IN_FLIGHT,
        }
    }
}

impl Config {
    /// Defaults for tests and embedding: ephemeral ports, the given control plane.
    pub fn for_control_plane(url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_plane_url: url.into(),
            control_plane_ca: None,
            client_cert: None,
            client_key: None,
            allow_plaintext_control_plane: false,
            tls_reload_interval_ms: 10_000,
            data_plane_id: None,
            drain_timeout_secs: defaults::DRAIN_TIMEOUT_SECS,
            usage_memory_cap: defaults::USAGE_MEMORY_CAP,
            usage_spill_path: None,
            log_json: false,
            otlp_endpoint: None,
            readiness_outage_ms: defaults::READINESS_OUTAGE_MS,
            flow: FlowConfig::default(),
            edge: EdgeConfig::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let urls = crate::control::urls(&self.control_plane_url);
        let https = self.control_plane_url.trim_start().starts_with("https://");
        if urls.is_empty() {
            return Err(Error::Config("TOLLGATE_CONTROL_PLANE_URL is empty".into()));
        }
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "TOLLGATE_CONTROL_PLANE_URL must start with http:// or https://, got {u:?}"
                )));
            }
            if u.starts_with("https://") != https {
                return Err(Error::Config(
                    "TOLLGATE_CONTROL_PLANE_URL: all addresses must use the same scheme".into(),
                ));
            }
        }
        if self.readiness_outage_ms > 3_600_000 || self.flow.failover_wait_ms > 600_000 {
            return Err(Error::Config(
                "TOLLGATE_READINESS_OUTAGE_MS must be at most 3600000 and TOLLGATE_FAILOVER_WAIT_MS at most 600000".into(),
            ));
        }
        crate::control::tls::check(self)?;
        let f = &self.flow;
        if !(5..=30).contains(&f.ping_interval_secs) {
            return Err(Error::Config(
                "TOLLGATE_PING_INTERVAL_SECS must be 5..=30".into(),
            ));
        }
        if f.max_in_flight == 0 {
            return Err(Error::Config(
                "TOLLGATE_MAX_IN_FLIGHT must be at least 1".into(),
            ));
        }
        if f.body_limit_bytes == 0 || f.stream_line_limit_bytes == 0 {
            return Err(Error::Config(
                "body and line limits must be positive".into(),
            ));
        }
        if !(f.body_limit_bytes <= f.body_budget_per_key_bytes
            && f.body_budget_per_key_bytes <= f.body_budget_bytes)
        {
            return Err(Error::Config(
                "TOLLGATE_BODY_LIMIT_BYTES <= TOLLGATE_BODY_BUDGET_PER_KEY_BYTES <= TOLLGATE_BODY_BUDGET_BYTES must hold (a body at the limit must fit a key's share)".into(),
            ));
        }
        if f.stream_keepalive_ms == 0 || f.stream_idle_timeout_ms < f.stream_keepalive_ms {
            return Err(Error::Config(
                "TOLLGATE_STREAM_IDLE_TIMEOUT_MS must be at least TOLLGATE_STREAM_KEEPALIVE_MS (> 0)".into(),
            ));
        }
        if f.upstream_header_timeout_ms == 0 || f.upstream_body_timeout_ms == 0 {
            return Err(Error::Config(
                "TOLLGATE_UPSTREAM_HEADER_TIMEOUT_MS and TOLLGATE_UPSTREAM_BODY_TIMEOUT_MS must be positive".into(),
            ));
        }
        for p in &f.trusted_proxies {
            if crate::proxy::auth_info::parse_net(p).is_none() {
                return Err(Error::Config(format!(
                    "TOLLGATE_TRUSTED_PROXIES: {p:?} is not an IP or CIDR"
                )));
            }
        }
        let e = &self.edge;
        if e.header_read_timeout_ms == 0 {
            return Err(Error::Config(
                "TOLLGATE_HEADER_READ_TIMEOUT_MS must be positive".into(),
            ));
        }
        if e.max_header_bytes < 8_192 {
            return Err(Error::Config(
                "TOLLGATE_MAX_HEADER_BYTES must be at least 8192".into(),
            ));
        }
        if e.h2_max_concurrent_streams == 0
            || e.max_connections == 0
            || e.max_connections_per_ip == 0
        {
            return Err(Error::Config(
                "TOLLGATE_H2_MAX_CONCURRENT_STREAMS, TOLLGATE_MAX_CONNECTIONS and TOLLGATE_MAX_CONNECTIONS_PER_IP must be at least 1".into(),
            ));
        }
        if e.invalid_key_burst == 0 || e.invalid_keys_per_minute == 0 {
            return Err(Error::Config(
                "TOLLGATE_INVALID_KEY_BURST and TOLLGATE_INVALID_KEYS_PER_MINUTE must be at least 1".into(),
            ));
        }
        if self.usage_memory_cap == 0 {
            return Err(Error::Config(
                "TOLLGATE_USAGE_MEMORY_CAP must be at least 1".into(),
            ));
        }
        if self.drain_timeout_secs == 0 || self.drain_timeout_secs > 3_600 {
            return Err(Error::Config(
                "TOLLGATE_DRAIN_TIMEOUT_SECS must be 1..=3600".into(),
            ));
        }
        Ok(())
    }

    pub fn readiness_outage(&self) -> Duration {
        Duration::from_millis(self.readiness_outage_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Where usage records spill: the configured path, else a file in the OS temp dir
    /// named so that a restarted process with the same id (or port) finds it again.
    pub fn usage_spill_path(&self, data_plane_id: &str) -> std::path::PathBuf {
        if let Some(p) = &self.usage_spill_path {
            return p.clone();
        }
        let id = match (&self.data_plane_id, self.listen.port()) {
            (Some(id), _) => id.clone(),
            (None, 0) => data_plane_id.to_owned(),
            (None, port) => format!("port-{port}"),
        };
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        std::env::temp_dir().join(format!("tollgate-usage-{safe}.jsonl"))
    }

    pub fn data_plane_id(&self) -> String {
        self.data_plane_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dp".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// The flags with no arguments and no environment: what a bare `tollgate-data-plane`
    /// runs with.
    fn flag_defaults() -> Config {
        let matches = Config::command()
            .mut_args(|a| a.env(None))
            .try_get_matches_from(["tollgate-data-plane"])
            .unwrap();
        Config::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn in_process_defaults_are_the_flag_defaults() {
        let flags = flag_defaults();
        let mut embedded = Config::for_control_plane(flags.control_plane_url.clone());
        // Only the listen addresses differ on purpose: tests and embedders take ephemeral ports.
        embedded.listen = flags.listen;
        embedded.admin_listen = flags.admin_listen;
        assert_eq!(format!("{embedded:?}"), format!("{flags:?}"));
        // The default URL is https: valid once the TLS files are named.
        let e = embedded.validate().unwrap_err().to_string();
        assert!(e.contains("TOLLGATE_DP_CLIENT_CERT"), "{e}");
        embedded.control_plane_ca = Some("ca.crt".into());
        embedded.client_cert = Some("tls.crt".into());
        embedded.client_key = Some("tls.key".into());
        embedded.validate().unwrap();
    }
}
