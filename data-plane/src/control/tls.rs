//! Mutual TLS to the control plane: the data plane trusts the operator's CA for the
//! control plane's certificate and presents its own client certificate, both reloaded
//! when cert-manager rotates the files. A plaintext URL is refused unless allowed.

use std::time::Duration;

use rustls::ClientConfig;
use tollgate_shared::tls::{ClientIdentity, Reloading, client::reloading_client_config};

use crate::config::Config;
use crate::error::{Error, Result};

/// Start-time checks of the control-plane connection settings.
pub fn check(c: &Config) -> Result<()> {
    if c.control_plane_url.starts_with("http://") {
        if !c.allow_plaintext_control_plane {
            return Err(Error::Config(format!(
                "TOLLGATE_CONTROL_PLANE_URL {:?} is plaintext: use https:// with TOLLGATE_CONTROL_PLANE_CA, TOLLGATE_DP_CLIENT_CERT and TOLLGATE_DP_CLIENT_KEY, or set TOLLGATE_ALLOW_PLAINTEXT_CONTROL_PLANE",
                c.control_plane_url
            )));
        }
        return Ok(());
    }
    if c.control_plane_ca.is_none() || c.client_cert.is_none() || c.client_key.is_none() {
        return Err(Error::Config(
            "an https:// control-plane URL needs TOLLGATE_CONTROL_PLANE_CA, TOLLGATE_DP_CLIENT_CERT and TOLLGATE_DP_CLIENT_KEY".into(),
        ));
    }
    if !(100..=3_600_000).contains(&c.tls_reload_interval_ms) {
        return Err(Error::Config(
            "TOLLGATE_TLS_RELOAD_INTERVAL_MS must be 100..=3600000".into(),
        ));
    }
    Ok(())
}

/// The reloading client configuration for an `https://` URL (files read now: a missing
/// or bad file stops the start, naming it); `None` for an allowed `http://` URL.
pub fn client_tls(c: &Config) -> Result<Option<Reloading<ClientConfig>>> {
    if c.control_plane_url.starts_with("http://") {
        return Ok(None);
    }
    let (Some(ca), Some(cert), Some(key)) = (&c.control_plane_ca, &c.client_cert, &c.client_key)
    else {
        return Err(Error::Config(
            "an https:// control-plane URL needs TOLLGATE_CONTROL_PLANE_CA, TOLLGATE_DP_CLIENT_CERT and TOLLGATE_DP_CLIENT_KEY".into(),
        ));
    };
    let identity = ClientIdentity {
        cert: cert.clone(),
        key: key.clone(),
    };
    reloading_client_config(ca.clone(), Some(identity))
        .map(Some)
        .map_err(|e| Error::Config(e.to_string()))
}

impl Config {
    pub fn tls_reload_interval(&self) -> Duration {
        Duration::from_millis(self.tls_reload_interval_ms)
    }
}
