//! Import of the community price registry used by LiteLLM
//! (`model_prices_and_context_window.json`): per model, `input_cost_per_token`,
//! `output_cost_per_token` and `cache_read_input_token_cost` in USD per token.
//!
//! The numbers are converted from their literal JSON text (`1.25e-06`, `0.00000125`) to
//! nano-USD per million tokens (× 10^15) in exact decimal arithmetic — never through a
//! float. A value that is not a whole number of that unit is an error, as is a
//! negative one. Only entries of the chosen provider in `chat` or `responses` mode are
//! taken; an entry without a cached-input price gets its input price (no discount).

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A model's price as the Admin API carries it: nano-USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub model: String,
    pub input_per_mtok_nanos: i64,
    pub output_per_mtok_nanos: i64,
    pub cached_input_per_mtok_nanos: i64,
    pub updated_at_ms: i64,
}

/// USD per token → nano-USD per million tokens.
const SCALE: i64 = 1_000_000_000_000_000;

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    litellm_provider: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    input_cost_per_token: Option<Box<RawValue>>,
    #[serde(default)]
    output_cost_per_token: Option<Box<RawValue>>,
    #[serde(default)]
    cache_read_input_token_cost: Option<Box<RawValue>>,
}

/// One imported price, nano-USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub model: String,
    pub input_per_mtok_nanos: i64,
    pub output_per_mtok_nanos: i64,
    pub cached_input_per_mtok_nanos: i64,
}

/// USD per token as JSON number text → nano-USD per million tokens, exactly.
pub fn per_token_to_nanos_per_mtok(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.starts_with('"') {
        return Err(format!("{t} is a string, not a JSON number"));
    }
    let d = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t)
    } else {
        Decimal::from_str_exact(t)
    }
    .map_err(|e| format!("{t} is not a decimal number: {e}"))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{t} is negative"));
    }
    let scaled = d
        .checked_mul(Decimal::from(SCALE))
        .ok_or_else(|| format!("{t} is too large"))?;
    if !scaled.fract().is_zero() {
        return Err(format!(
            "{t} USD per token is not a whole number of nano-USD per million tokens"
        ));
    }
    i64::try_from(scaled.trunc()).map_err(|_| format!("{t} is too large"))
}

/// The registry's entries of `provider` in chat or responses mode, by model name.
pub fn parse(json: &str, provider: &str) -> Result<Vec<Imported>, String> {
    let all: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(json).map_err(|e| format!("not a price registry file: {e}"))?;
    let mut out = Vec::new();
    for (model, raw) in all {
        // Non-object entries (none today) and entries of other shapes are not prices.
        let Ok(entry) = serde_json::from_str::<Entry>(raw.get()) else {
            continue;
        };
        if entry.litellm_provider.as_deref() != Some(provider)
            || !matches!(entry.mode.as_deref(), Some("chat" | "responses"))
        {
            continue;
        }
        let (Some(input), Some(output)) =
            (&entry.input_cost_per_token, &entry.output_cost_per_token)
        else {
            continue;
        };
        let field = |name: &str, v: &RawValue| {
            per_token_to_nanos_per_mtok(v.get()).map_err(|e| format!("{model}: {name}: {e}"))
        };
        let input = field("input_cost_per_token", input)?;
        let output = field("output_cost_per_token", output)?;
        let cached = match &entry.cache_read_input_token_cost {
            Some(c) => field("cache_read_input_token_cost", c)?,
            None => input,
        };
        out.push(Imported {
            model,
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: output,
            cached_input_per_mtok_nanos: cached,
        });
    }
    Ok(out)
}

/// What an import changes: (imported, the current price if any) for every model whose
/// price is new or different.
pub fn changes<'a>(
    current: &[Price],
    imported: &'a [Imported],
) -> Vec<(&'a Imported, Option<Price>)> {
    let by_model: BTreeMap<&str, &Price> = current.iter().map(|p| (p.model.as_str(), p)).collect();
    imported
        .iter()
        .filter_map(|i| match by_model.get(i.model.as_str()) {
            Some(p)
                if p.input_per_mtok_nanos == i.input_per_mtok_nanos
                    && p.output_per_mtok_nanos == i.output_per_mtok_nanos
                    && p.cached_input_per_mtok_nanos == i.cached_input_per_mtok_nanos =>
            {
                None
            }
            Some(p) => Some((i, Some((*p).clone()))),
            None => Some((i, None)),
        })
        .collect()
}

impl FromStr for Imported {
    type Err = String;

    /// `model=input,output,cached` in USD per token (tests and one-off edits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (model, rest) = s
            .split_once('=')
            .ok_or("expected model=input,output,cached")?;
        let v: Vec<&str> = rest.split(',').collect();
        let [i, o, c] = v.as_slice() else {
            return Err("expected three prices".into());
        };
        Ok(Self {
            model: model.to_owned(),
            input_per_mtok_nanos: per_token_to_nanos_per_mtok(i)?,
            output_per_mtok_nanos: per_token_to_nanos_per_mtok(o)?,
            cached_input_per_mtok_nanos: per_token_to_nanos_per_mtok(c)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/litellm_prices_trimmed.json");

    #[test]
    fn decimal_text_converts_exactly() {
        for (text, want) in [
            ("1.25e-06", 1_250_000_000),
            ("0.00000125", 1_250_000_000),
            ("1.25E-6", 1_250_000_000),
            ("5e-09", 5_000_000),
            ("0.000168", 168_000_000_000),
            ("1.75e-07", 175_000_000),
            ("0.0", 0),
            ("0", 0),
            ("1e-15", 1),
        ] {
            assert_eq!(per_token_to_nanos_per_mtok(text), Ok(want), "{text}");
        }
        // 0.1 is not exact in binary floating point; here it is simply 10^14.
        assert_eq!(per_token_to_nanos_per_mtok("0.1"), Ok(100_000_000_000_000));
        for bad in ["1e-16", "1.5e-15", "-1e-06", "\"1e-06\"", "x", "1e30"] {
            assert!(per_token_to_nanos_per_mtok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_registry_file_imports_openai_chat_and_responses_models() {
        let got = parse(FIXTURE, "openai").unwrap();
        let find = |m: &str| got.iter().find(|i| i.model == m).cloned();
        // Variants are priced as themselves (never as gpt-5).
        assert_eq!(
            find("gpt-5-pro"),
            Some(Imported {
                model: "gpt-5-pro".into(),
                input_per_mtok_nanos: 15_000_000_000,
                output_per_mtok_nanos: 120_000_000_000,
                // No cached price in the file: no discount.
                cached_input_per_mtok_nanos: 15_000_000_000,
            })
        );
        assert_eq!(
            find("gpt-5-nano"),
            Some(Imported {
                model: "gpt-5-nano".into(),
                input_per_mtok_nanos: 50_000_000,
                output_per_mtok_nanos: 400_000_000,
                cached_input_per_mtok_nanos: 5_000_000,
            })
        );
        assert_eq!(
            find("gpt-5").unwrap().cached_input_per_mtok_nanos,
            125_000_000
        );
        assert!(find("gpt-4.1-2025-04-14").is_some());
        // Other providers, embeddings and the documentation entry are left out.
        for absent in ["azure/gpt-5", "text-embedding-3-small", "sample_spec"] {
            assert!(find(absent).is_none(), "{absent}");
        }
        let azure = parse(FIXTURE, "azure").unwrap();
        assert!(azure.iter().any(|i| i.model == "azure/gpt-5"));
    }

    #[test]
    fn changes_list_new_and_different_prices_only() {
        let imported: Vec<Imported> = [
            "a=1e-06,2e-06,1e-07",
            "b=1e-06,2e-06,1e-07",
            "c=1e-06,2e-06,1e-07",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let price = |model: &str, input: i64| Price {
            model: model.into(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: 2_000_000_000,
            cached_input_per_mtok_nanos: 100_000_000,
            updated_at_ms: 0,
        };
        let current = [price("a", 1_000_000_000), price("b", 7)];
        let ch = changes(&current, &imported);
        let models: Vec<(&str, Option<i64>)> = ch
            .iter()
            .map(|(i, old)| {
                (
                    i.model.as_str(),
                    old.as_ref().map(|p| p.input_per_mtok_nanos),
                )
            })
            .collect();
        assert_eq!(models, vec![("b", Some(7)), ("c", None)]);
    }
}

/// Property tests over arbitrary input (see data-plane `proxy/fuzz_tests.rs` for the
/// conventions: `PROPTEST_CASES` raises the case count).
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: a clear error or prices that are never negative.
        #[test]
        fn parse_never_panics(json in ".{0,200}", provider in "openai|.{0,8}") {
            if let Ok(prices) = parse(&json, &provider) {
                for p in prices {
                    prop_assert!(p.input_per_mtok_nanos >= 0 && p.output_per_mtok_nanos >= 0);
                }
            }
        }

        /// Registry-shaped files with hostile numbers.
        #[test]
        fn registry_entries_never_panic(
            input in "-?[0-9]{0,22}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,5})?",
            output in ".{0,24}",
            mode in "chat|responses|embedding|.{0,6}",
        ) {
            let json = format!(
                r#"{{"m": {{"litellm_provider": "openai", "mode": "{mode}",
                   "input_cost_per_token": {input}, "output_cost_per_token": {output}}}}}"#
            );
            let _ = parse(&json, "openai");
            let _ = per_token_to_nanos_per_mtok(&input);
            let _ = per_token_to_nanos_per_mtok(&output);
        }

        /// Exact: a price written as USD per token comes back as the same integer.
        #[test]
        fn per_token_prices_are_exact(nanos_per_mtok in 0i64..=i64::MAX / 2) {
            // nano-USD per million tokens = USD per token × 10^15.
            let whole = nanos_per_mtok / 1_000_000_000_000_000;
            let frac = nanos_per_mtok % 1_000_000_000_000_000;
            let text = format!("{whole}.{frac:015}");
            prop_assert_eq!(per_token_to_nanos_per_mtok(&text), Ok(nanos_per_mtok));
        }
    }
}
