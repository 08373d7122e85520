//! Billing: what a request costs and charging it exactly once.
//!
//! - [`cost`]: the exact cost formula (integers only, one rounding per amount);
//! - [`price_lookup`]: the price of a model name (exact, undated, effort-less, alias,
//!   fallback);
//! - [`served`]: which name is priced — the served model, or an operator's alias;
//! - [`record`]: validation of a `UsageReport` from a data plane;
//! - [`dead_letter`]: records that can never be charged as they are — kept, listed and
//!   re-charged by operators;
//! - [`charge`]: the `ReportUsage` flow — validate, price, charge the batch in one
//!   transaction with a savepoint per record (`Store::begin_charge_batch`), acknowledge
//!   only once it committed, and publish the cache invalidations.

pub mod audit;
pub mod charge;
pub mod cost;
pub mod dead_letter;
pub mod price_lookup;
pub mod record;
pub mod recovered;
pub mod served;

pub use charge::report_usage;
pub use cost::{Cost, Rates, Tokens};
pub use price_lookup::{FallbackPrice, PriceTable};

use crate::config::Config;

/// Billing configuration, from `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingSettings {
    /// `TOLLGATE_FALLBACK_PRICE`: the price of models missing from the table. Without
    /// one, such models are refused at admission and their records dead-lettered.
    pub fallback: Option<Rates>,
    /// `TOLLGATE_CHARGE_ESTIMATES`: charge records whose token counts the data plane
    /// estimated; when false they are stored at zero cost (flagged `estimated`).
    pub charge_estimates: bool,
    /// `TOLLGATE_RECOVERED_OUTPUT_TOKENS`: the output allowance of the control plane's
    /// estimate for a lease reaped without a usage record (`recovered`).
    pub recovered_output_tokens: i64,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            fallback: None,
            charge_estimates: true,
            recovered_output_tokens: 1_000,
        }
    }
}

impl BillingSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            fallback: c.fallback_price.map(|p| p.0),
            charge_estimates: c.charge_estimates,
            recovered_output_tokens: c.recovered_output_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_flags() {
        let c = crate::config::parse_flags(&["cp"]).unwrap();
        assert_eq!(BillingSettings::from_config(&c), BillingSettings::default());
        let d = Config::for_data_dir("/tmp/unused");
        assert_eq!(BillingSettings::from_config(&d), BillingSettings::default());

        let c = crate::config::parse_flags(&[
            "cp",
            "--fallback-price",
            "1.25,10,0.125",
            "--charge-estimates",
            "false",
        ])
        .unwrap();
        assert_eq!(
            BillingSettings::from_config(&c),
            BillingSettings {
                fallback: Some(Rates {
                    input_per_mtok_nanos: 1_250_000_000,
                    output_per_mtok_nanos: 10_000_000_000,
                    cached_input_per_mtok_nanos: 125_000_000,
                }),
                charge_estimates: false,
                recovered_output_tokens: 1_000,
            }
        );
        let e = crate::config::parse_flags(&["cp", "--fallback-price", "1.25,10"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("input,output,cached"), "{e}");
    }
}
