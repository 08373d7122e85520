//! The data plane's one error enum (startup and plumbing). Client-facing request errors
//! are `ErrorCode`s from the shared table, rendered by the rescue layer.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// A listen address that cannot be bound (in use, not local, privileged): the
    /// address and the setting that chose it.
    #[error("cannot listen on {addr} (set {setting}): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
