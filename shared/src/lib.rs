//! Code both planes share: the generated wire contract, the error-code table (with the
//! client-visible messages), the refusal rules both planes enforce, exact money, the small
//! domain vocabularies and logging setup. No logic that only one plane runs.

pub mod domain;
pub mod drain;
pub mod error;
pub mod exit;
pub mod metrics_text;
pub mod money;
pub mod private_dir;
pub mod proto;
pub mod redacted;
pub mod refusal;
pub mod served_model;
pub mod signal;
pub mod telemetry;
pub mod tls;

pub use error::{CodedError, ErrorCode, ErrorType};
pub use money::Multiplier;

/// One day in milliseconds: subscription windows, durations given in days, per-day
/// usage totals.
pub const DAY_MS: i64 = 86_400_000;

/// Current time as unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
