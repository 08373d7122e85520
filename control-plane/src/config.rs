//! Control-plane configuration: flags with environment-variable fallbacks, validated at
//! start. Secrets (admin token, encryption key) come from the environment or a file;
//! outside production mode missing ones are generated into the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tollgate_shared::redacted::Redacted;

use crate::crypto::SecretBox;
use crate::error::{Error, Result};

/// Every default that both the flags and `Config::for_data_dir` use, written once.
pub mod defaults {
    pub const KEY_PREFIX: &str = "sk-";
    pub const LEASE_GRACE_MS: u64 = 10_000;
    pub const HEARTBEAT_INTERVAL_MS: u64 = 2_000;
    pub const CHARGE_ESTIMATES: bool = true;
    pub const RECOVERED_OUTPUT_TOKENS: i64 = 1_000;
    pub const USER_WAIT_TIMEOUT_MS: u64 = 30_000;
    pub const USER_EXTRA_PENDING: u32 = 20;
    pub const ACCOUNT_WAIT_TIMEOUT_MS: u64 = 30_000;
    pub const ACCOUNT_MAX_WAITERS: u32 = 100;
    pub const STICKY_WAIT_TIMEOUT_MS: u64 = 120_000;
    pub const STICKY_MAX_WAITERS: u32 = 3;
    pub const STICKY_TTL_MS: u64 = 3_600_000;
    /// OpenAI keeps stored responses 30 days.
    pub const RESPONSE_AFFINITY_TTL_MS: u64 = 30 * 24 * 3_600_000;
    pub const RESPONSE_AFFINITY_CACHE: u64 = 100_000;
    pub const RATE_LIMIT_COOLDOWN_MS: u64 = 300_000;
    pub const OVERLOAD_COOLDOWN_MS: u64 = 600_000;
    pub const OAUTH_REFRESH_MARGIN_MS: u64 = 1_800_000;
    pub const OAUTH_REFRESH_INTERVAL_MS: u64 = 300_000;
    pub const OAUTH_USE_MARGIN_MS: u64 = 60_000;
    pub const OAUTH_REFRESH_RETRIES: u32 = 3;
    pub const OAUTH_REFRESH_BACKOFF_MS: u64 = 1_000;
    pub const ELECTION_KEY: &str = "/tollgate/leader";
    pub const LEADER_LEASE_TTL_S: u64 = 5;
    pub const RECONCILE_WINDOW_MS: u64 = 3_000;
    pub const DRAIN_TIMEOUT_SECS: u64 = tollgate_shared::drain::DEFAULT_BUDGET_SECS;
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tollgate-control-plane",
    version,
    about = "Tollgate control plane"
)]
pub struct Config {
    /// gRPC listen address (Gateway, Admin, health, reflection).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:7600")]
    pub listen: SocketAddr,

    /// Directory for the embedded SQLite database and generated secrets.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = ".tollgate")]
    pub data_dir: PathBuf,

    /// `postgres://…` or `sqlite:…`. Default: SQLite file `tollgate.db` in the data dir.
    #[arg(long, env = "TOLLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Redacted>,

    /// Production mode: secrets must be configured, never generated.
    #[arg(long, env = "TOLLGATE_PRODUCTION")]
    pub production: bool,

    /// Admin API bearer token.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Redacted>,

    /// File holding the admin token (first line).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Admin mTLS: scopes of admin client certificates by subject common name, e.g.
    /// `billing-svc=keys,reporting=read` (scopes: read, keys, admin). Empty: client
    /// certificates grant no Admin access.
    #[arg(long, env = "TOLLGATE_ADMIN_CERT_SCOPES", default_value = "")]
    pub admin_cert_scopes: crate::admin::CertScopes,

    /// Base64 of the 32-byte key that encrypts upstream credentials at rest.
    #[arg(long, env = "TOLLGATE_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<Redacted>,

    /// File holding the base64 encryption key.
    #[arg(long, env = "TOLLGATE_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,

    /// PEM certificate chain the gRPC port serves (with --tls-key and --tls-client-ca;
    /// cert-manager's `tls.crt`). Reloaded when the file changes. Required in
    /// production; in development a local CA and certificates are generated in the
    /// data dir (`tls/`) when unset.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (cert-manager's `tls.key`).
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle that issues data-plane client certificates (cert-manager's
    /// `ca.crt`); only its certificates may call the Gateway service.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for rotation.
    #[arg(
        long,
        env = "TOLLGATE_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub tls_reload_interval_ms: u64,

    /// Optional plaintext port serving only gRPC health (for Kubernetes gRPC probes,
    /// which cannot speak TLS), e.g. 0.0.0.0:7601.
    #[arg(long, env = "TOLLGATE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Optional plain-HTTP port serving Prometheus metrics at `/metrics`, e.g.
    /// 0.0.0.0:9601 (no secrets there; keep it inside the cluster).
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, the whole drain's budget, seconds: health turns NOT_SERVING, sessions
    /// end, in-flight calls finish within its first four fifths, then storage closes.
    /// Keep it shorter than the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT_SECS", default_value_t = defaults::DRAIN_TIMEOUT_SECS)]
    pub drain_timeout_secs: u64,

    /// Serve gRPC without TLS (development only, refused in production): any peer can
    /// then call Gateway and receive upstream credentials in leases.
    #[arg(long, env = "TOLLGATE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// Allow `http://` account base URLs (default: https only).
    #[arg(long, env = "TOLLGATE_ALLOW_INSECURE_UPSTREAMS")]
    pub allow_insecure_upstreams: bool,

    /// Allow account base URLs on loopback / private / link-local hosts.
    #[arg(long, env = "TOLLGATE_ALLOW_PRIVATE_UPSTREAMS")]
    pub allow_private_upstreams: bool,

    /// If set, account base URL hosts must be one of these (comma-separated).
    #[arg(long, env = "TOLLGATE_UPSTREAM_HOST_ALLOWLIST", value_delimiter = ',')]
    pub upstream_host_allowlist: Vec<String>,

    /// Prefix of generated API keys.
    #[arg(long, env = "TOLLGATE_KEY_PREFIX", default_value = defaults::KEY_PREFIX)]
    pub key_prefix: String,

    /// A data-plane session gone longer than this loses its leases.
    #[arg(long, env = "TOLLGATE_LEASE_GRACE_MS", default_value_t = defaults::LEASE_GRACE_MS)]
    pub lease_grace_ms: u64,

    /// Heartbeat interval asked of data planes.
    #[arg(long, env = "TOLLGATE_HEARTBEAT_INTERVAL_MS", default_value_t = defaults::HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,

    /// Price of models missing from the price table: "input,output,cached" USD per
    /// million tokens, exact decimals (e.g. "1.25,10,0.125"). Without it (the default) a
    /// request for a model with no price is refused at admission (400
    /// `model_not_priced`) and nothing is ever served for free by omission.
    #[arg(long, env = "TOLLGATE_FALLBACK_PRICE")]
    pub fallback_price: Option<crate::billing::FallbackPrice>,

    /// Charge usage whose token counts the data plane estimated; false stores it at
    /// zero cost, flagged as estimated.
    #[arg(
        long,
        env = "TOLLGATE_CHARGE_ESTIMATES",
        default_value_t = defaults::CHARGE_ESTIMATES,
        action = clap::ArgAction::Set
    )]
    pub charge_estimates: bool,

    /// Output tokens charged for a request whose data plane died before reporting its
    /// usage (the control plane's estimate; input is the request's bytes / 4).
    #[arg(
        long,
        env = "TOLLGATE_RECOVERED_OUTPUT_TOKENS",
        default_value_t = defaults::RECOVERED_OUTPUT_TOKENS,
        value_parser = clap::value_parser!(i64).range(0..=100_000_000)
    )]
    pub recovered_output_tokens: i64,

    /// Structured JSON logs (each line carries its request's `request_id` and
    /// `trace_id`).
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,

    /// OTLP/gRPC collector to export trace spans to, e.g. http://otel-collector:4317
    /// (the standard OpenTelemetry variable). Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Responses endpoint of subscription (OAuth) accounts (tests point it at a fake).
    #[arg(
        long,
        env = "TOLLGATE_CODEX_URL",
        default_value = crate::admission::lease_url::DEFAULT_CODEX_URL
    )]
    pub codex_url: String,

    /// How long a request waits for one of its user's concurrency slots.
    #[arg(long, env = "TOLLGATE_USER_WAIT_TIMEOUT_MS", default_value_t = defaults::USER_WAIT_TIMEOUT_MS)]
    pub user_wait_timeout_ms: u64,

    /// Requests of one user waiting or running: max(concurrency, 1) + this.
    #[arg(long, env = "TOLLGATE_USER_EXTRA_PENDING", default_value_t = defaults::USER_EXTRA_PENDING)]
    pub user_extra_pending: u32,

    /// How long a request waits for an account slot when every account is busy.
    #[arg(
        long,
        env = "TOLLGATE_ACCOUNT_WAIT_TIMEOUT_MS",
        default_value_t = defaults::ACCOUNT_WAIT_TIMEOUT_MS
    )]
    pub account_wait_timeout_ms: u64,

    /// Waiters per account beyond which requests are turned away.
    #[arg(long, env = "TOLLGATE_ACCOUNT_MAX_WAITERS", default_value_t = defaults::ACCOUNT_MAX_WAITERS)]
    pub account_max_waiters: u32,

    /// How long a sticky session waits for its bound account.
    #[arg(
        long,
        env = "TOLLGATE_STICKY_WAIT_TIMEOUT_MS",
        default_value_t = defaults::STICKY_WAIT_TIMEOUT_MS
    )]
    pub sticky_wait_timeout_ms: u64,

    /// Waiters on a bound account beyond which a sticky session picks another account.
    #[arg(long, env = "TOLLGATE_STICKY_MAX_WAITERS", default_value_t = defaults::STICKY_MAX_WAITERS)]
    pub sticky_max_waiters: u32,

    /// Lifetime of a sticky-session binding, refreshed on use.
    #[arg(long, env = "TOLLGATE_STICKY_TTL_MS", default_value_t = defaults::STICKY_TTL_MS)]
    pub sticky_ttl_ms: u64,

    /// How long the account that created a response id is remembered, so that
    /// `previous_response_id` and /v1/responses/{id} reach it (response affinity).
    #[arg(
        long,
        env = "TOLLGATE_RESPONSE_AFFINITY_TTL_MS",
        default_value_t = defaults::RESPONSE_AFFINITY_TTL_MS
    )]
    pub response_affinity_ttl_ms: u64,

    /// Response owners cached in memory in front of the `response_owners` table.
    #[arg(
        long,
        env = "TOLLGATE_RESPONSE_AFFINITY_CACHE",
        default_value_t = defaults::RESPONSE_AFFINITY_CACHE
    )]
    pub response_affinity_cache: u64,

    /// Cool-down of a rate-limited (429) account when the upstream gives no reset time.
    #[arg(
        long,
        env = "TOLLGATE_RATE_LIMIT_COOLDOWN_MS",
        default_value_t = defaults::RATE_LIMIT_COOLDOWN_MS
    )]
    pub rate_limit_cooldown_ms: u64,

    /// Cool-down of an overloaded (529) account.
    #[arg(long, env = "TOLLGATE_OVERLOAD_COOLDOWN_MS", default_value_t = defaults::OVERLOAD_COOLDOWN_MS)]
    pub overload_cooldown_ms: u64,

    /// Operator rules for other 5xx answers and stream timeouts / connect errors (status
    /// 0): a JSON array like `[{"status":503,"keywords":["capacity"],"minutes":5}]`
    /// (keywords case-insensitive, any one matches, none = any). A match makes the
    /// account temporarily unschedulable for that many minutes.
    #[arg(long, env = "TOLLGATE_UNSCHEDULABLE_RULES", default_value = "[]")]
    pub unschedulable_rules: crate::admission::unschedulable_rules::UnschedulableRules,

    /// OAuth token endpoint of subscription logins (refresh and code exchange).
    #[arg(long, env = "TOLLGATE_OAUTH_TOKEN_URL", default_value = crate::oauth::DEFAULT_TOKEN_URL)]
    pub oauth_token_url: String,

    /// OAuth client id of subscription logins.
    #[arg(long, env = "TOLLGATE_OAUTH_CLIENT_ID", default_value = crate::oauth::DEFAULT_CLIENT_ID)]
    pub oauth_client_id: String,

    /// Authorization endpoint the onboarding URL points at.
    #[arg(long, env = "TOLLGATE_OAUTH_AUTHORIZE_URL", default_value = crate::oauth::DEFAULT_AUTHORIZE_URL)]
    pub oauth_authorize_url: String,

    /// Redirect URI of the onboarding flow (registered for the client id).
    #[arg(long, env = "TOLLGATE_OAUTH_REDIRECT_URI", default_value = crate::oauth::DEFAULT_REDIRECT_URI)]
    pub oauth_redirect_uri: String,

    /// Access tokens expiring within this are refreshed in the background.
    #[arg(
        long,
        env = "TOLLGATE_OAUTH_REFRESH_MARGIN_MS",
        default_value_t = defaults::OAUTH_REFRESH_MARGIN_MS
    )]
    pub oauth_refresh_margin_ms: u64,

    /// How often the background refresher looks for expiring access tokens.
    #[arg(
        long,
        env = "TOLLGATE_OAUTH_REFRESH_INTERVAL_MS",
        default_value_t = defaults::OAUTH_REFRESH_INTERVAL_MS
    )]
    pub oauth_refresh_interval_ms: u64,

    /// A selected account whose access token expires within this is refreshed before
    /// it is leased.
    #[arg(long, env = "TOLLGATE_OAUTH_USE_MARGIN_MS", default_value_t = defaults::OAUTH_USE_MARGIN_MS)]
    pub oauth_use_margin_ms: u64,

    /// Retries of a failing token refresh (transient failures only) before the account
    /// goes to `error`.
    #[arg(long, env = "TOLLGATE_OAUTH_REFRESH_RETRIES", default_value_t = defaults::OAUTH_REFRESH_RETRIES)]
    pub oauth_refresh_retries: u32,

    /// Wait before the first refresh retry; doubles per retry (at most 30 s).
    #[arg(
        long,
        env = "TOLLGATE_OAUTH_REFRESH_BACKOFF_MS",
        default_value_t = defaults::OAUTH_REFRESH_BACKOFF_MS
    )]
    pub oauth_refresh_backoff_ms: u64,

    /// etcd endpoints (comma-separated, e.g. http://etcd-0:2379). Set: the replicas
    /// campaign for leadership and only the leader serves Gateway and Admin. Unset (the
    /// embedded default): this control plane is always the leader.
    #[arg(long, env = "TOLLGATE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// The etcd key the leader holds (its value: the leader's advertised URL).
    #[arg(long, env = "TOLLGATE_ELECTION_KEY", default_value = defaults::ELECTION_KEY)]
    pub election_key: String,

    /// TTL of the leader's etcd lease in seconds. It is renewed every quarter TTL; a
    /// leader whose last renewal is older than three quarters of it stops serving, before
    /// the lease can expire and a standby can take over.
    #[arg(long, env = "TOLLGATE_LEADER_LEASE_TTL_S", default_value_t = defaults::LEADER_LEASE_TTL_S)]
    pub leader_lease_ttl_s: u64,

    /// The URL data planes dial to reach this replica, told to them by standbys as the
    /// leader's address (default: https://<listen address>, or http:// when plaintext).
    #[arg(long, env = "TOLLGATE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// After winning an election, Admit holds new grants back this long so that the data
    /// planes re-attach and declare the leases they hold first (no over-grant across a
    /// failover). Used only with etcd.
    #[arg(long, env = "TOLLGATE_RECONCILE_WINDOW_MS", default_value_t = defaults::RECONCILE_WINDOW_MS)]
    pub reconcile_window_ms: u64,
}

impl Config {
    /// A configuration for tests and embedding: defaults everywhere, given data dir,
    /// plaintext gRPC (set the `tls_*` files, or clear `insecure_plaintext` for the
    /// generated development PKI, to serve TLS).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database_url: None,
            production: false,
            admin_token: None,
            admin_token_file: None,
            admin_cert_scopes: crate::admin::CertScopes::default(),
            encryption_key: None,
            encryption_key_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval_ms: 10_000,
            insecure_plaintext: true,
            health_listen: None,
            metrics_listen: None,
            drain_timeout_secs: defaults::DRAIN_TIMEOUT_SECS,
            allow_insecure_upstreams: false,
            allow_private_upstreams: false,
            upstream_host_allowlist: Vec::new(),
            key_prefix: defaults::KEY_PREFIX.into(),
            lease_grace_ms: defaults::LEASE_GRACE_MS,
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_MS,
            fallback_price: None,
            charge_estimates: defaults::CHARGE_ESTIMATES,
            recovered_output_tokens: defaults::RECOVERED_OUTPUT_TOKENS,
            log_json: false,
            otlp_endpoint: None,
            codex_url: crate::admission::lease_url::DEFAULT_CODEX_URL.to_owned(),
            user_wait_timeout_ms: defaults::USER_WAIT_TIMEOUT_MS,
            user_extra_pending: defaults::USER_EXTRA_PENDING,
            account_wait_timeout_ms: defaults::ACCOUNT_WAIT_TIMEOUT_MS,
            account_max_waiters: defaults::ACCOUNT_MAX_WAITERS,
            sticky_wait_timeout_ms: defaults::STICKY_WAIT_TIMEOUT_MS,
            sticky_max_waiters: defaults::STICKY_MAX_WAITERS,
            sticky_ttl_ms: defaults::STICKY_TTL_MS,
            response_affinity_ttl_ms: defaults::RESPONSE_AFFINITY_TTL_MS,
            response_affinity_cache: defaults::RESPONSE_AFFINITY_CACHE,
            rate_limit_cooldown_ms: defaults::RATE_LIMIT_COOLDOWN_MS,
            overload_cooldown_ms: defaults::OVERLOAD_COOLDOWN_MS,
            unschedulable_rules: crate::admission::unschedulable_rules::UnschedulableRules::default(
            ),
            oauth_token_url: crate::oauth::DEFAULT_TOKEN_URL.to_owned(),
            oauth_client_id: crate::oauth::DEFAULT_CLIENT_ID.to_owned(),
            oauth_authorize_url: crate::oauth::DEFAULT_AUTHORIZE_URL.to_owned(),
            oauth_redirect_uri: crate::oauth::DEFAULT_REDIRECT_URI.to_owned(),
            oauth_refresh_margin_ms: defaults::OAUTH_REFRESH_MARGIN_MS,
            oauth_refresh_interval_ms: defaults::OAUTH_REFRESH_INTERVAL_MS,
            oauth_use_margin_ms: defaults::OAUTH_USE_MARGIN_MS,
            oauth_refresh_retries: defaults::OAUTH_REFRESH_RETRIES,
            oauth_refresh_backoff_ms: defaults::OAUTH_REFRESH_BACKOFF_MS,
            etcd_endpoints: Vec::new(),
            election_key: defaults::ELECTION_KEY.into(),
            leader_lease_ttl_s: defaults::LEADER_LEASE_TTL_S,
            advertise_url: None,
            reconcile_window_ms: defaults::RECONCILE_WINDOW_MS,
        }
    }

    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_timeout_secs)
    }

    /// Checks ranges and resolves secrets. Fails with a message naming the setting.
    pub fn resolve(&self) -> Result<Resolved> {
        if self.key_prefix.len() > 16
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Config(
                "TOLLGATE_KEY_PREFIX must be at most 16 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        if !(1_000..=600_000).contains(&self.lease_grace_ms) {
            return Err(Error::Config(
                "TOLLGATE_LEASE_GRACE_MS must be 1000..=600000".into(),
            ));
        }
        if self.heartbeat_interval_ms < 100 || self.heartbeat_interval_ms >= self.lease_grace_ms {
            return Err(Error::Config(
                "TOLLGATE_HEARTBEAT_INTERVAL_MS must be at least 100 and below the lease grace"
                    .into(),
            ));
        }
        if !(1..=3_600).contains(&self.drain_timeout_secs) {
            return Err(Error::Config(
                "TOLLGATE_DRAIN_TIMEOUT_SECS must be 1..=3600".into(),
            ));
        }
        self.check_admission()?;
        self.check_leadership()?;
        let admin_token = self.secret(
            self.admin_token.as_ref().map(Redacted::expose),
            self.admin_token_file.as_deref(),
            "admin-token",
            "admin token (TOLLGATE_ADMIN_TOKEN or TOLLGATE_ADMIN_TOKEN_FILE)",
            generate_admin_token,
        )?;
        if admin_token.len() < 16 {
            return Err(Error::Config(
                "the admin token must be at least 16 characters".into(),
            ));
        }
        let key_text = self.secret(
            self.encryption_key.as_ref().map(Redacted::expose),
            self.encryption_key_file.as_deref(),
            "encryption-key",
            "encryption key (TOLLGATE_ENCRYPTION_KEY or TOLLGATE_ENCRYPTION_KEY_FILE)",
            SecretBox::generate_key_b64,
        )?;
        let secrets = SecretBox::from_base64(&key_text)?;
        let tls = crate::tls::resolve(self)?;
        let database_url = match &self.database_url {
            Some(u) => u.expose().to_owned(),
            None => {
                tollgate_shared::private_dir::create(&self.data_dir).map_err(|e| {
                    Error::Config(format!(
                        "cannot create data dir {}: {e}",
                        self.data_dir.display()
                    ))
                })?;
                format!("sqlite://{}", self.data_dir.join("tollgate.db").display())
            }
        };
        Ok(Resolved {
            admin_token,
            secrets,
            database_url,
            tls,
        })
    }

    fn check_leadership(&self) -> Result<()> {
        if !(2..=300).contains(&self.leader_lease_ttl_s) {
            return Err(Error::Config(
                "TOLLGATE_LEADER_LEASE_TTL_S must be 2..=300".into(),
            ));
        }
        if self.reconcile_window_ms > 600_000 {
            return Err(Error::Config(
                "TOLLGATE_RECONCILE_WINDOW_MS must be at most 600000".into(),
            ));
        }
        if self.election_key.trim().is_empty() {
            return Err(Error::Config(
                "TOLLGATE_ELECTION_KEY must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// What standbys tell data planes to dial: the advertised URL, else this listen
    /// address with the scheme the gRPC port speaks.
    pub fn advertised(&self, listen: std::net::SocketAddr) -> String {
        match &self.advertise_url {
            Some(u) => u.clone(),
            None if self.insecure_plaintext => format!("http://{listen}"),
            None => format!("https://{listen}"),
        }
    }

    fn check_admission(&self) -> Result<()> {
        match url::Url::parse(self.codex_url.trim()) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => {
                return Err(Error::Config(
                    "TOLLGATE_CODEX_URL must be an http(s) URL with a host".into(),
                ));
            }
        }
        let waits = [
            ("TOLLGATE_USER_WAIT_TIMEOUT_MS", self.user_wait_timeout_ms),
            (
                "TOLLGATE_ACCOUNT_WAIT_TIMEOUT_MS",
                self.account_wait_timeout_ms,
            ),
            (
                "TOLLGATE_STICKY_WAIT_TIMEOUT_MS",
                self.sticky_wait_timeout_ms,
            ),
        ];
        for (name, v) in waits {
            if v > 600_000 {
                return Err(Error::Config(format!("{name} must be at most 600000")));
            }
        }
        if self.response_affinity_ttl_ms < 1_000 {
            return Err(Error::Config(
                "TOLLGATE_RESPONSE_AFFINITY_TTL_MS must be at least 1000".into(),
            ));
        }
        if self.sticky_ttl_ms < 1_000 {
            return Err(Error::Config(
                "TOLLGATE_STICKY_TTL_MS must be at least 1000".into(),
            ));
        }
        if self.rate_limit_cooldown_ms < 1_000 || self.overload_cooldown_ms < 1_000 {
            return Err(Error::Config(
                "TOLLGATE_RATE_LIMIT_COOLDOWN_MS and TOLLGATE_OVERLOAD_COOLDOWN_MS must be at least 1000"
                    .into(),
            ));
        }
        self.unschedulable_rules.validate().map_err(Error::Config)?;
        crate::oauth::check_config(self)?;
        Ok(())
    }

    /// A secret from its value, its file, or (outside production) a generated file in
    /// the data dir that later starts reuse.
    fn secret(
        &self,
        value: Option<&str>,
        file: Option<&Path>,
        generated_name: &str,
        what: &str,
        generate: fn() -> String,
    ) -> Result<String> {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            return Ok(v.to_owned());
        }
        if let Some(path) = file {
            return read_secret_file(path);
        }
        if self.production {
            return Err(Error::Config(format!(
                "production mode requires the {what}"
            )));
        }
        let path = self.data_dir.join(generated_name);
        if path.exists() {
            return read_secret_file(&path);
        }
        tollgate_shared::private_dir::create(&self.data_dir).map_err(|e| {
            Error::Config(format!(
                "cannot create data dir {}: {e}",
                self.data_dir.display()
            ))
        })?;
        let v = generate();
        write_private(&path, &v)?;
        tracing::info!(path = %path.display(), "generated {what}");
        Ok(v)
    }
}

#[derive(Clone)]
pub struct Resolved {
    pub admin_token: String,
    pub secrets: SecretBox,
    pub database_url: String,
    pub tls: crate::tls::TlsSetup,
}

/// Without the admin token and the database URL (it may carry a password); the
/// encryption key's `SecretBox` redacts itself.
impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("admin_token", &"<redacted>")
            .field("secrets", &self.secrets)
            .field("database_url", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

fn read_secret_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let v = text.lines().next().unwrap_or("").trim().to_owned();
    if v.is_empty() {
        return Err(Error::Config(format!("{} is empty", path.display())));
    }
    Ok(v)
}

fn write_private(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", path.display())))?;
    writeln!(f, "{value}")
        .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}

fn generate_admin_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("tga-{}", hex::encode(b))
}

/// Parses command-line flags alone, with every `TOLLGATE_*` variable ignored: unit tests
/// of the flags must not depend on the developer's environment.
#[cfg(test)]
pub(crate) fn parse_flags(args: &[&str]) -> std::result::Result<Config, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Config::command()
        .mut_args(|a| a.env(None::<&str>))
        .try_get_matches_from(args)?;
    Config::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_defaults_are_the_flag_defaults() {
        // A bare `tollgate-control-plane`, the environment ignored.
        let flags = parse_flags(&["tollgate-control-plane"]).unwrap();
        let mut embedded = Config::for_data_dir(&flags.data_dir);
        // Only the listen address and plaintext differ on purpose: tests and embedders
        // take an ephemeral port, and serve TLS when given files (or asked to generate).
        embedded.listen = flags.listen;
        assert!(embedded.insecure_plaintext && !flags.insecure_plaintext);
        embedded.insecure_plaintext = flags.insecure_plaintext;
        assert_eq!(format!("{embedded:?}"), format!("{flags:?}"));
    }

    #[test]
    fn production_requires_secrets() {
        let dir = std::env::temp_dir().join(format!("tg-cfg-{}", uuid::Uuid::new_v4()));
        let mut c = Config::for_data_dir(&dir);
        c.production = true;
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("admin token"), "{e}");
        c.admin_token = Some("0123456789abcdef0123".into());
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("encryption key"), "{e}");
        assert!(!dir.exists(), "production mode must not generate files");
    }

    #[test]
    fn dev_mode_generates_once_and_reuses() {
        let dir = std::env::temp_dir().join(format!("tg-cfg-{}", uuid::Uuid::new_v4()));
        let c = Config::for_data_dir(&dir);
        let a = c.resolve().unwrap();
        let b = c.resolve().unwrap();
        assert_eq!(a.admin_token, b.admin_token);
        assert!(a.database_url.starts_with("sqlite://"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn debug_of_the_config_shows_no_secret() {
        let dir = std::env::temp_dir().join(format!("tg-cfg-{}", uuid::Uuid::new_v4()));
        let mut c = Config::for_data_dir(&dir);
        c.admin_token = Some("admin-token-0123456789-secret".into());
        c.encryption_key = Some(SecretBox::generate_key_b64().into());
        c.database_url = Some("sqlite:///tmp/pw-hunter2.db".into());
        let key = c.encryption_key.clone().unwrap();
        let shown = format!("{c:?}");
        for secret in ["admin-token-0123456789-secret", key.expose(), "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let resolved = format!("{:?}", c.resolve().unwrap());
        for secret in ["admin-token-0123456789-secret", key.expose(), "hunter2"] {
            assert!(!resolved.contains(secret), "{secret} in {resolved}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
