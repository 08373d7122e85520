//! Code both planes share: the generated wire contract, the error-code table, exact
//! money, the small domain vocabularies and logging setup. No plane-specific logic.

pub mod domain;
pub mod error;
pub mod money;
pub mod proto;
pub mod signal;
pub mod telemetry;
pub mod tls;

pub use error::{CodedError, ErrorCode, ErrorType};
pub use money::Multiplier;

/// Current time as unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
