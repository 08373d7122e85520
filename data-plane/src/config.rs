//! Data-plane configuration: flags with environment-variable fallbacks, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};

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

    /// Control-plane gRPC endpoint.
    #[arg(
        long,
        env = "TOLLGATE_CONTROL_PLANE_URL",
        default_value = "http://127.0.0.1:7600"
    )]
    pub control_plane_url: String,

    /// Stable id of this process for the control plane (default: hostname + random).
    #[arg(long, env = "TOLLGATE_DATA_PLANE_ID")]
    pub data_plane_id: Option<String>,

    /// On SIGTERM, how long in-flight requests and streams may run before being cut.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Structured JSON logs.
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// Defaults for tests and embedding: ephemeral ports, the given control plane.
    pub fn for_control_plane(url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_plane_url: url.into(),
            data_plane_id: None,
            drain_timeout_secs: 30,
            log_json: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let u = &self.control_plane_url;
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Error::Config(format!(
                "TOLLGATE_CONTROL_PLANE_URL must start with http:// or https://, got {u:?}"
            )));
        }
        if self.drain_timeout_secs == 0 || self.drain_timeout_secs > 3_600 {
            return Err(Error::Config(
                "TOLLGATE_DRAIN_TIMEOUT_SECS must be 1..=3600".into(),
            ));
        }
        Ok(())
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn data_plane_id(&self) -> String {
        self.data_plane_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dp".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }
}
