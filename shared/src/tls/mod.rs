//! TLS between the planes, the parts both sides (and the admin CLI) share: one crypto
//! provider (ring), PEM loading, a client connector for tonic channels, and reloading of
//! certificate files that are rotated in place (cert-manager).
//!
//! Server-side policy (who may call `Gateway`) belongs to the control plane; this module
//! only knows certificates.

pub mod client;
pub mod pem;
pub mod reload;

use std::sync::Arc;

pub use client::{ClientIdentity, TlsConnector, client_config};
pub use reload::Reloading;

/// The only crypto provider either plane uses (ring: already in the build through
/// reqwest, so aws-lc is never compiled).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS set-up error, with the file or setting it concerns in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl TlsError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
