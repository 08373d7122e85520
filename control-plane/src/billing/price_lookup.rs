//! Which price applies to a requested model (billing.md "Prices"): the exact name, then
//! the name without a date suffix, then its family base, then the configured fallback.
//!
//! The table is a snapshot of the `prices` table. `ReportUsage` loads one per call (the
//! table is a few dozen rows), so an admin `SetPrice` / `DeletePrice` applies from the
//! next batch on. Strict-pricing admission keeps one in the admission snapshot, which
//! both calls drop (`publish_local`) before they return.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::cost::Rates;
use crate::model::Price;

/// Reasoning-effort suffixes clients append to a model name (`gpt-5.1-codex-high`).
const EFFORT_SUFFIXES: [&str; 6] = ["-minimal", "-none", "-low", "-medium", "-high", "-xhigh"];

/// Where a price came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSource {
    Exact,
    /// The name without its date suffix.
    Undated(String),
    /// A family base (effort suffix stripped, then the longest listed prefix).
    Family(String),
    Fallback,
}

impl fmt::Display for PriceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::Undated(m) => write!(f, "undated {m}"),
            Self::Family(m) => write!(f, "family {m}"),
            Self::Fallback => f.write_str("fallback"),
        }
    }
}

/// A snapshot of the price table.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    by_model: HashMap<String, Rates>,
}

impl PriceTable {
    pub fn new(prices: &[Price]) -> Self {
        Self {
            by_model: prices
                .iter()
                .map(|p| (p.model.clone(), Rates::from(p)))
                .collect(),
        }
    }

    /// The price of `model` along the lookup chain; `None` when nothing matches and
    /// there is no fallback.
    pub fn lookup(&self, model: &str, fallback: Option<Rates>) -> Option<(Rates, PriceSource)> {
        if let Some(r) = self.by_model.get(model) {
            return Some((*r, PriceSource::Exact));
        }
        let undated = strip_date_suffix(model);
        if undated != model
            && let Some(r) = self.by_model.get(undated)
        {
            return Some((*r, PriceSource::Undated(undated.to_owned())));
        }
        if let Some(base) = self.family_base(undated) {
            return self
                .by_model
                .get(base)
                .map(|r| (*r, PriceSource::Family(base.to_owned())));
        }
        fallback.map(|r| (r, PriceSource::Fallback))
    }

    /// The effort suffix stripped, then the longest `-`-separated prefix that has a price
    /// (the stripped name itself included). Never the name it was given (that was tried).
    fn family_base<'m>(&self, name: &'m str) -> Option<&'m str> {
        let stripped = strip_effort_suffix(name);
        let mut candidate = stripped;
        loop {
            if candidate != name && self.by_model.contains_key(candidate) {
                return Some(candidate);
            }
            candidate = &candidate[..candidate.rfind('-')?];
            if candidate.is_empty() {
                return None;
            }
        }
    }
}

/// `gpt-5-2025-08-07` → `gpt-5`, `gpt-5-mini-20250807` → `gpt-5-mini`; anything else
/// unchanged. Only the shape is checked (digits), not the calendar.
pub fn strip_date_suffix(model: &str) -> &str {
    let b = model.as_bytes();
    let n = b.len();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    // The cut is always just before an ASCII '-', hence on a char boundary.
    // -YYYY-MM-DD
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(n - 10..n - 6)
        && digits(n - 5..n - 3)
        && digits(n - 2..n)
    {
        return &model[..n - 11];
    }
    // -YYYYMMDD
    if n > 9 && b[n - 9] == b'-' && digits(n - 8..n) {
        return &model[..n - 9];
    }
    model
}

/// `gpt-5.1-codex-high` → `gpt-5.1-codex`; a name that is only a suffix stays.
pub fn strip_effort_suffix(model: &str) -> &str {
    EFFORT_SUFFIXES
        .iter()
        .find_map(|s| model.strip_suffix(s).filter(|h| !h.is_empty()))
        .unwrap_or(model)
}

/// `TOLLGATE_FALLBACK_PRICE`: "input,output,cached" in USD per million tokens, exact
/// decimals ("1.25,10,0.125").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackPrice(pub Rates);

impl FromStr for FallbackPrice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [i, o, c] = parts.as_slice() else {
            return Err(format!(
                "fallback price {s:?} must be \"input,output,cached\" USD per million tokens"
            ));
        };
        let usd = |name: &str, v: &str| -> Result<i64, String> {
            let n = tollgate_shared::money::parse_usd(v)
                .map_err(|e| format!("fallback price {name}: {e}"))?;
            if n < 0 {
                return Err(format!("fallback price {name} must not be negative"));
            }
            Ok(n)
        };
        Ok(Self(Rates {
            input_per_mtok_nanos: usd("input", i)?,
            output_per_mtok_nanos: usd("output", o)?,
            cached_input_per_mtok_nanos: usd("cached", c)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn price(model: &str, input: i64) -> Price {
        Price {
            model: model.to_owned(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: input * 8,
            cached_input_per_mtok_nanos: input / 10,
            updated_at_ms: 0,
        }
    }

    fn table() -> PriceTable {
        PriceTable::new(&[
            price("gpt-5", 1),
            price("gpt-5.1", 2),
            price("gpt-5.1-codex", 3),
            price("gpt-5.1-codex-max", 4),
            price("gpt-5-mini", 5),
            price("gpt-5-2025-08-07", 6),
        ])
    }

    fn found(t: &PriceTable, model: &str) -> Option<(i64, PriceSource)> {
        t.lookup(model, None)
            .map(|(r, s)| (r.input_per_mtok_nanos, s))
    }

    #[test]
    fn chain_order() {
        let t = table();
        // Exact wins, even over a shorter base.
        assert_eq!(found(&t, "gpt-5.1-codex"), Some((3, PriceSource::Exact)));
        assert_eq!(found(&t, "gpt-5-2025-08-07"), Some((6, PriceSource::Exact)));
        // Date suffixes.
        assert_eq!(
            found(&t, "gpt-5.1-2025-11-13"),
            Some((2, PriceSource::Undated("gpt-5.1".into())))
        );
        assert_eq!(
            found(&t, "gpt-5-mini-20250807"),
            Some((5, PriceSource::Undated("gpt-5-mini".into())))
        );
        // Family bases.
        assert_eq!(
            found(&t, "gpt-5.1-codex-high"),
            Some((3, PriceSource::Family("gpt-5.1-codex".into())))
        );
        assert_eq!(
            found(&t, "gpt-5.1-codex-max-xhigh"),
            Some((4, PriceSource::Family("gpt-5.1-codex-max".into())))
        );
        assert_eq!(
            found(&t, "gpt-5.1-codex-mini"),
            Some((3, PriceSource::Family("gpt-5.1-codex".into())))
        );
        assert_eq!(
            found(&t, "gpt-5.1-codex-high-2025-01-02"),
            Some((3, PriceSource::Family("gpt-5.1-codex".into())))
        );
        assert_eq!(
            found(&t, "gpt-5-mini-low"),
            Some((5, PriceSource::Family("gpt-5-mini".into())))
        );
        // Nothing.
        assert_eq!(found(&t, "claude-3"), None);
        assert_eq!(found(&t, "gpt"), None);
        assert_eq!(found(&t, ""), None);
        assert_eq!(found(&t, "-high"), None);
        // Fallback last.
        let fb = Rates {
            input_per_mtok_nanos: 9,
            output_per_mtok_nanos: 9,
            cached_input_per_mtok_nanos: 9,
        };
        assert_eq!(
            t.lookup("claude-3", Some(fb)),
            Some((fb, PriceSource::Fallback))
        );
        assert_eq!(
            t.lookup("gpt-5", Some(fb))
                .map(|(r, _)| r.input_per_mtok_nanos),
            Some(1)
        );
    }

    #[test]
    fn date_suffix_shapes() {
        assert_eq!(strip_date_suffix("gpt-5-2025-08-07"), "gpt-5");
        assert_eq!(strip_date_suffix("gpt-5-20250807"), "gpt-5");
        assert_eq!(strip_date_suffix("gpt-5-2025087"), "gpt-5-2025087");
        assert_eq!(strip_date_suffix("gpt-5-2025-8-07"), "gpt-5-2025-8-07");
        assert_eq!(strip_date_suffix("-20250807"), "-20250807");
        assert_eq!(strip_date_suffix("20250807"), "20250807");
        assert_eq!(strip_date_suffix("gpt-5"), "gpt-5");
        assert_eq!(strip_date_suffix("é-2025-08-07"), "é");
        assert_eq!(strip_date_suffix("éé2025-08-07"), "éé2025-08-07");
        assert_eq!(strip_date_suffix("ééé20250807"), "ééé20250807");
        assert_eq!(strip_effort_suffix("gpt-5-xhigh"), "gpt-5");
        assert_eq!(strip_effort_suffix("gpt-5-high"), "gpt-5");
        assert_eq!(strip_effort_suffix("-high"), "-high");
        assert_eq!(strip_effort_suffix("gpt-5-ultra"), "gpt-5-ultra");
    }

    #[test]
    fn fallback_price_parses_exact_decimals() {
        let p: FallbackPrice = "1.25, 10,0.125".parse().unwrap();
        assert_eq!(
            p.0,
            Rates {
                input_per_mtok_nanos: 1_250_000_000,
                output_per_mtok_nanos: 10_000_000_000,
                cached_input_per_mtok_nanos: 125_000_000,
            }
        );
        assert!("1,2".parse::<FallbackPrice>().is_err());
        assert!("1,2,3,4".parse::<FallbackPrice>().is_err());
        assert!("1,-2,3".parse::<FallbackPrice>().is_err());
        assert!("1,x,3".parse::<FallbackPrice>().is_err());
        assert!("1,2,0.0000000001".parse::<FallbackPrice>().is_err());
    }

    proptest! {
        /// Whatever the name, lookup never panics, an exact entry always wins, and a
        /// found family base is a listed proper prefix of the name at a `-` boundary.
        #[test]
        fn lookup_is_total_and_prefix_bound(name in "[a-z0-9.-]{0,30}") {
            let t = table();
            match t.lookup(&name, None) {
                Some((_, PriceSource::Exact)) => prop_assert!(t.by_model.contains_key(&name)),
                Some((_, PriceSource::Undated(m) | PriceSource::Family(m))) => {
                    prop_assert!(!t.by_model.contains_key(&name));
                    prop_assert!(t.by_model.contains_key(&m));
                    prop_assert!(name.starts_with(&format!("{m}-")), "{} from {}", m, name);
                }
                Some((_, PriceSource::Fallback)) => prop_assert!(false, "no fallback given"),
                None => {}
            }
        }

        #[test]
        fn date_suffix_round_trip(base in "[a-z][a-z0-9.-]{0,20}", y in 1000..9999u32, mo in 1..12u32, d in 1..28u32) {
            let dashed = format!("{base}-{y:04}-{mo:02}-{d:02}");
            let compact = format!("{base}-{y:04}{mo:02}{d:02}");
            prop_assert_eq!(strip_date_suffix(&dashed), base.as_str());
            prop_assert_eq!(strip_date_suffix(&compact), base.as_str());
        }
    }
}
