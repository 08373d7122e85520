//! Which price applies to a model name (billing.md "Prices"). For the name, then its
//! undated form (strict `-YYYYMMDD` / `-YYYY-MM-DD` suffix), then its effort-less form
//! (one of six known reasoning-effort suffixes): the exact price, else an explicit
//! alias (`price_aliases`) whose target has an exact price. Then the configured
//! fallback. Never a prefix match: `gpt-5-pro` is `gpt-5-pro` or nothing, not `gpt-5`.
//!
//! Which *name* is priced (the served model, or an operator's alias) is decided by
//! [`super::served`]. The table is a snapshot of the `prices` and `price_aliases`
//! tables: `ReportUsage` loads one per call; Admit keeps one in the admission snapshot,
//! which `SetPrice` / `DeletePrice` / `price import` drop (`publish_local`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::cost::Rates;
use crate::error::Result;
use crate::model::{Price, PriceAlias};
use crate::storage::Store;

/// Reasoning-effort suffixes clients append to a model name (`gpt-5.1-codex-high`).
const EFFORT_SUFFIXES: [&str; 6] = ["-minimal", "-none", "-low", "-medium", "-high", "-xhigh"];

/// Where a price came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSource {
    Exact,
    /// The name without its date and/or effort suffix, priced exactly.
    Stripped(String),
    /// An explicit alias: (the name looked up, the model whose price it takes).
    Alias(String, String),
    Fallback,
}

impl fmt::Display for PriceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::Stripped(m) => write!(f, "as {m}"),
            Self::Alias(a, m) => write!(f, "alias {a} of {m}"),
            Self::Fallback => f.write_str("fallback"),
        }
    }
}

/// A snapshot of the price and alias tables.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    by_model: HashMap<String, Rates>,
    aliases: HashMap<String, String>,
}

impl PriceTable {
    /// Prices only, no aliases.
    pub fn new(prices: &[Price]) -> Self {
        Self::with_aliases(prices, &[])
    }

    pub fn with_aliases(prices: &[Price], aliases: &[PriceAlias]) -> Self {
        Self {
            by_model: prices
                .iter()
                .map(|p| (p.model.clone(), Rates::from(p)))
                .collect(),
            aliases: aliases
                .iter()
                .map(|a| (a.alias.clone(), a.model.clone()))
                .collect(),
        }
    }

    /// Both tables, read now.
    pub async fn load(store: &Store) -> Result<Self> {
        let prices = store.list_prices().await?;
        let aliases = store.list_price_aliases().await?;
        Ok(Self::with_aliases(&prices, &aliases))
    }

    /// Whether `model` itself has a row (no suffix stripping, no alias).
    pub fn has_exact(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// The price of `model` along the lookup chain; `None` when nothing matches and
    /// there is no fallback.
    pub fn lookup(&self, model: &str, fallback: Option<Rates>) -> Option<(Rates, PriceSource)> {
        self.lookup_table(model)
            .or_else(|| fallback.map(|r| (r, PriceSource::Fallback)))
    }

    /// The chain without the fallback.
    pub fn lookup_table(&self, model: &str) -> Option<(Rates, PriceSource)> {
        let undated = strip_date_suffix(model);
        let bare = strip_effort_suffix(undated);
        let bare = strip_date_suffix(bare);
        let mut candidates = vec![model];
        for c in [undated, bare] {
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        for name in &candidates {
            if let Some(r) = self.by_model.get(*name) {
                let source = if *name == model {
                    PriceSource::Exact
                } else {
                    PriceSource::Stripped((*name).to_owned())
                };
                return Some((*r, source));
            }
            if let Some(target) = self.aliases.get(*name)
                && let Some(r) = self.by_model.get(target)
            {
                return Some((*r, PriceSource::Alias((*name).to_owned(), target.clone())));
            }
        }
        None
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
        PriceTable::with_aliases(
            &[
                price("gpt-5", 1),
                price("gpt-5.1", 2),
                price("gpt-5.1-codex", 3),
                price("gpt-5.1-codex-max", 4),
                price("gpt-5-mini", 5),
                price("gpt-5-2025-08-07", 6),
                price("gpt-5-pro", 7),
                price("gpt-5-nano", 8),
                price("gpt-5.1-codex-mini", 9),
            ],
            &[
                PriceAlias {
                    alias: "gpt-5-codex-mini".into(),
                    model: "gpt-5.1-codex-mini".into(),
                    updated_at_ms: 0,
                },
                PriceAlias {
                    alias: "dangling".into(),
                    model: "not-priced".into(),
                    updated_at_ms: 0,
                },
            ],
        )
    }

    fn found(t: &PriceTable, model: &str) -> Option<(i64, PriceSource)> {
        t.lookup(model, None)
            .map(|(r, s)| (r.input_per_mtok_nanos, s))
    }

    fn stripped(m: &str) -> PriceSource {
        PriceSource::Stripped(m.into())
    }

    #[test]
    fn chain_order() {
        let t = table();
        // Exact wins, even over a shorter base.
        assert_eq!(found(&t, "gpt-5.1-codex"), Some((3, PriceSource::Exact)));
        assert_eq!(found(&t, "gpt-5-2025-08-07"), Some((6, PriceSource::Exact)));
        // Variants are priced as themselves, never as a shorter priced prefix.
        assert_eq!(found(&t, "gpt-5-pro"), Some((7, PriceSource::Exact)));
        assert_eq!(found(&t, "gpt-5-nano"), Some((8, PriceSource::Exact)));
        assert_eq!(
            found(&t, "gpt-5.1-codex-mini"),
            Some((9, PriceSource::Exact))
        );
        assert_eq!(
            found(&t, "gpt-5-pro-high"),
            Some((7, stripped("gpt-5-pro")))
        );
        // Date suffixes.
        assert_eq!(
            found(&t, "gpt-5.1-2025-11-13"),
            Some((2, stripped("gpt-5.1")))
        );
        assert_eq!(
            found(&t, "gpt-5-mini-20250807"),
            Some((5, stripped("gpt-5-mini")))
        );
        // Effort suffixes (after the date, or before it).
        assert_eq!(
            found(&t, "gpt-5.1-codex-high"),
            Some((3, stripped("gpt-5.1-codex")))
        );
        assert_eq!(
            found(&t, "gpt-5.1-codex-max-xhigh"),
            Some((4, stripped("gpt-5.1-codex-max")))
        );
        assert_eq!(
            found(&t, "gpt-5.1-codex-high-2025-01-02"),
            Some((3, stripped("gpt-5.1-codex")))
        );
        assert_eq!(
            found(&t, "gpt-5-mini-2025-08-07-low"),
            Some((5, stripped("gpt-5-mini")))
        );
        // Explicit aliases, also under a suffix; an alias to nothing prices nothing.
        assert_eq!(
            found(&t, "gpt-5-codex-mini"),
            Some((
                9,
                PriceSource::Alias("gpt-5-codex-mini".into(), "gpt-5.1-codex-mini".into())
            ))
        );
        assert_eq!(found(&t, "gpt-5-codex-mini-high").map(|f| f.0), Some(9));
        assert_eq!(found(&t, "dangling"), None);
        // No prefix rule: these were once priced as gpt-5 / gpt-5.1-codex.
        assert_eq!(found(&t, "gpt-5-ultra"), None);
        assert_eq!(found(&t, "gpt-5.1-codex-mini-turbo"), None);
        assert_eq!(
            found(&t, &format!("gpt-5.1-codex-{}", "x".repeat(300))),
            None
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
        /// stripped name is the given one minus date and effort suffixes only.
        #[test]
        fn lookup_is_total_and_never_a_prefix(name in "[a-z0-9.-]{0,30}") {
            let t = table();
            match t.lookup(&name, None) {
                Some((_, PriceSource::Exact)) => prop_assert!(t.by_model.contains_key(&name)),
                Some((_, PriceSource::Stripped(m))) => {
                    prop_assert!(!t.by_model.contains_key(&name));
                    prop_assert!(t.by_model.contains_key(&m));
                    let bare = strip_date_suffix(strip_effort_suffix(strip_date_suffix(&name)));
                    prop_assert!(m == strip_date_suffix(&name) || m == bare, "{} from {}", m, name);
                }
                Some((_, PriceSource::Alias(a, m))) => {
                    prop_assert_eq!(t.aliases.get(&a), Some(&m));
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
