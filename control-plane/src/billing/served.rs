//! Which model name a request is priced by (billing.md "Prices"; ARCHITECTURE.md
//! "Price what is served").
//!
//! The rule: **the model the upstream was asked for** — after the serving account's
//! model mapping and, on subscription accounts, the Codex normalisation — **unless the
//! requested name is an operator alias**: a key of that account's model mapping that
//! has its own exact price. Everything else a client can choose (any name, a cheap
//! priced name that a subscription account normalises to an expensive model, a long
//! name that shares a priced prefix) prices the model actually served, so a client
//! cannot pick its price; only an operator can, through their mapping and price rows.
//!
//! Admit applies the same rule to the account it selected before any upstream call
//! (`model_not_priced`), and `ReportUsage` to the record's `upstream_model`.

use std::collections::BTreeMap;

use super::cost::Rates;
use super::price_lookup::{PriceSource, PriceTable};

/// The name whose price applies. `mapping` is the serving account's model mapping.
pub fn priced_name<'a>(
    requested: &'a str,
    served: &'a str,
    mapping: &BTreeMap<String, String>,
    table: &PriceTable,
) -> &'a str {
    let served = if served.is_empty() { requested } else { served };
    if requested != served && mapping.contains_key(requested) && table.has_exact(requested) {
        requested
    } else {
        served
    }
}

/// Whether the alias branch of [`priced_name`] could apply; when false, the serving
/// account's mapping need not be read.
pub fn may_be_alias(requested: &str, served: &str, table: &PriceTable) -> bool {
    !served.is_empty() && requested != served && table.has_exact(requested)
}

/// The price of a request: [`priced_name`], then the lookup chain and the fallback.
/// `None`: no price (Admit refuses, `ReportUsage` dead-letters).
pub fn price_of(
    requested: &str,
    served: &str,
    mapping: &BTreeMap<String, String>,
    table: &PriceTable,
    fallback: Option<Rates>,
) -> Option<(String, Rates, PriceSource)> {
    let name = priced_name(requested, served, mapping, table);
    table
        .lookup(name, fallback)
        .map(|(rates, source)| (name.to_owned(), rates, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Price;

    fn table() -> PriceTable {
        let p = |model: &str, input: i64| Price {
            model: model.into(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: input,
            cached_input_per_mtok_nanos: input,
            updated_at_ms: 0,
        };
        PriceTable::new(&[
            p("gpt-4.1-nano", 1),
            p("gpt-5.1-codex", 100),
            p("team-fast", 7),
        ])
    }

    fn input(requested: &str, served: &str, mapping: &[(&str, &str)]) -> Option<i64> {
        let mapping = mapping
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        price_of(requested, served, &mapping, &table(), None)
            .map(|(_, r, _)| r.input_per_mtok_nanos)
    }

    #[test]
    fn the_served_model_is_priced() {
        // A subscription account serves an unknown name as gpt-5.1-codex.
        assert_eq!(input("foo", "gpt-5.1-codex", &[]), Some(100));
        // A cheap priced name normalised to an expensive model: the expensive one.
        assert_eq!(input("gpt-4.1-nano", "gpt-5.1-codex", &[]), Some(100));
        // Same name both sides.
        assert_eq!(input("gpt-4.1-nano", "gpt-4.1-nano", &[]), Some(1));
        // No served name reported (older data plane): the requested one.
        assert_eq!(input("gpt-4.1-nano", "", &[]), Some(1));
        // Served model unpriced: nothing, whatever the requested name costs.
        assert_eq!(input("gpt-4.1-nano", "o9", &[]), None);
    }

    #[test]
    fn an_operator_alias_with_its_own_price_wins() {
        let m = [("team-fast", "gpt-5.1-codex")];
        assert_eq!(input("team-fast", "gpt-5.1-codex", &m), Some(7));
        // Mapped but not priced itself: the served model.
        let m = [("other", "gpt-5.1-codex")];
        assert_eq!(input("other", "gpt-5.1-codex", &m), Some(100));
        // Priced but not mapped by this account: the served model.
        assert_eq!(input("team-fast", "gpt-5.1-codex", &[]), Some(100));
    }
}
