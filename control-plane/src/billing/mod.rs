//! Billing: what a request costs and charging it exactly once.
//!
//! - [`cost`]: the exact cost formula (integers only, one rounding per amount);
//! - [`price_lookup`]: which price applies to a requested model;
//! - [`record`]: validation of a `UsageReport` from a data plane;
//! - [`charge`]: the `ReportUsage` flow — validate, price, charge each record in its own
//!   transaction (`Store::charge_usage`), acknowledge only what committed, and publish
//!   the cache invalidations.

pub mod charge;
pub mod cost;
pub mod price_lookup;
pub mod record;

pub use charge::report_usage;
pub use cost::{Cost, Rates, Tokens};
pub use price_lookup::{FallbackPrice, PriceTable};

use crate::config::Config;

/// Billing configuration, from `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingSettings {
    /// `TOLLGATE_STRICT_PRICING`: refuse records of models with no price (and no
    /// fallback). Otherwise they are stored at zero cost with a warning.
    pub strict_pricing: bool,
    /// `TOLLGATE_FALLBACK_PRICE`: the price of models missing from the table.
    pub fallback: Option<Rates>,
    /// `TOLLGATE_CHARGE_ESTIMATES`: charge records whose token counts the data plane
    /// estimated; when false they are stored at zero cost (flagged `estimated`).
    pub charge_estimates: bool,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            strict_pricing: false,
            fallback: None,
            charge_estimates: true,
        }
    }
}

impl BillingSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            strict_pricing: c.strict_pricing,
            fallback: c.fallback_price.map(|p| p.0),
            charge_estimates: c.charge_estimates,
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
            "--strict-pricing",
            "--fallback-price",
            "1.25,10,0.125",
            "--charge-estimates",
            "false",
        ])
        .unwrap();
        assert_eq!(
            BillingSettings::from_config(&c),
            BillingSettings {
                strict_pricing: true,
                fallback: Some(Rates {
                    input_per_mtok_nanos: 1_250_000_000,
                    output_per_mtok_nanos: 10_000_000_000,
                    cached_input_per_mtok_nanos: 125_000_000,
                }),
                charge_estimates: false,
            }
        );
        let e = crate::config::parse_flags(&["cp", "--fallback-price", "1.25,10"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("input,output,cached"), "{e}");
    }
}
