//! Exact money. Amounts are `i64` nano-USD (1 USD = 10^9); multipliers are exact decimals
//! held as millionths. No floating point anywhere: parsing goes through `rust_decimal`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

pub const NANOS_PER_USD: i64 = 1_000_000_000;
const PPM: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal number")]
    NotANumber(String),
    #[error("'{0}' has more precision than {1} decimal places")]
    TooPrecise(String, u32),
    #[error("'{0}' is out of range")]
    OutOfRange(String),
    #[error("'{0}' must not be negative")]
    Negative(String),
}

fn parse_scaled(s: &str, scale: u32) -> Result<i64, MoneyError> {
    let t = s.trim();
    let d = Decimal::from_str_exact(t).map_err(|_| MoneyError::NotANumber(t.to_owned()))?;
    let factor = Decimal::from(10_i64.pow(scale));
    let scaled = d
        .checked_mul(factor)
        .ok_or_else(|| MoneyError::OutOfRange(t.to_owned()))?;
    if scaled.fract() != Decimal::ZERO {
        return Err(MoneyError::TooPrecise(t.to_owned(), scale));
    }
    i64::try_from(scaled).map_err(|_| MoneyError::OutOfRange(t.to_owned()))
}

fn format_scaled(v: i64, scale: u32) -> String {
    let d = Decimal::from_i128_with_scale(i128::from(v), scale).normalize();
    d.to_string()
}

/// Parses a USD decimal string ("12.5", "-3", "0.000000001") into nano-USD.
pub fn parse_usd(s: &str) -> Result<i64, MoneyError> {
    parse_scaled(s, 9)
}

/// Formats nano-USD as a plain USD decimal without trailing zeros ("12.5", "0").
pub fn format_usd(nanos: i64) -> String {
    format_scaled(nanos, 9)
}

/// A non-negative exact multiplier (group rate, account cost), stored as millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Multiplier(i64);

impl Multiplier {
    pub const ONE: Multiplier = Multiplier(PPM);
    pub const ZERO: Multiplier = Multiplier(0);

    pub fn from_ppm(ppm: i64) -> Result<Self, MoneyError> {
        if ppm < 0 {
            return Err(MoneyError::Negative(format_scaled(ppm, 6)));
        }
        Ok(Self(ppm))
    }

    pub fn ppm(self) -> i64 {
        self.0
    }

    /// `amount × self`, rounded half to even to the nano-USD. Exact in i128; saturates
    /// at the i64 range (9.2 billion USD), which no single request can reach.
    pub fn apply(self, amount_nanos: i64) -> i64 {
        let p = i128::from(amount_nanos) * i128::from(self.0);
        let q = p.div_euclid(i128::from(PPM));
        let r = p.rem_euclid(i128::from(PPM));
        let half = i128::from(PPM) / 2;
        let rounded = if r > half || (r == half && q % 2 != 0) {
            q + 1
        } else {
            q
        };
        i64::try_from(rounded).unwrap_or(if rounded > 0 { i64::MAX } else { i64::MIN })
    }
}

impl FromStr for Multiplier {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = parse_scaled(s, 6)?;
        if v < 0 {
            return Err(MoneyError::Negative(s.trim().to_owned()));
        }
        Ok(Self(v))
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_scaled(self.0, 6))
    }
}

impl Default for Multiplier {
    fn default() -> Self {
        Self::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_usd_exactly() {
        assert_eq!(parse_usd("1.25"), Ok(1_250_000_000));
        assert_eq!(parse_usd("0.000000001"), Ok(1));
        assert_eq!(parse_usd("-3"), Ok(-3 * NANOS_PER_USD));
        assert!(matches!(
            parse_usd("0.0000000001"),
            Err(MoneyError::TooPrecise(..))
        ));
        assert!(matches!(parse_usd("abc"), Err(MoneyError::NotANumber(_))));
        assert!(parse_usd("1e30").is_err());
        assert_eq!(format_usd(12_500_000_000), "12.5");
        assert_eq!(format_usd(0), "0");
        assert_eq!(format_usd(-1), "-0.000000001");
    }

    #[test]
    fn multipliers() {
        let m: Multiplier = "1.5".parse().unwrap();
        assert_eq!(m.ppm(), 1_500_000);
        assert_eq!(m.to_string(), "1.5");
        assert_eq!(m.apply(1_000), 1_500);
        assert_eq!("0".parse::<Multiplier>().unwrap().apply(123), 0);
        assert!(matches!(
            "-1".parse::<Multiplier>(),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            "0.0000001".parse::<Multiplier>(),
            Err(MoneyError::TooPrecise(..))
        ));
        // half to even
        assert_eq!("0.5".parse::<Multiplier>().unwrap().apply(3), 2);
        assert_eq!("0.5".parse::<Multiplier>().unwrap().apply(5), 2);
    }

    proptest! {
        #[test]
        fn usd_round_trips(n in any::<i64>()) {
            prop_assert_eq!(parse_usd(&format_usd(n)), Ok(n));
        }

        #[test]
        fn one_is_identity(n in any::<i64>()) {
            prop_assert_eq!(Multiplier::ONE.apply(n), n);
        }
    }
}
