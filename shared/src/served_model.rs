//! Which model the upstream is asked for: the account's model mapping, then (subscription
//! accounts) the Codex normalisation. Shared because both planes must agree: the data
//! plane sends this name upstream, the control plane prices it (billing.md "Prices": the
//! price is that of the model the upstream is asked for).

use std::collections::BTreeMap;

/// Codex model families the subscription backend accepts.
pub const CODEX_MODELS: &[&str] = &[
    "gpt-5",
    "gpt-5-codex",
    "gpt-5-codex-mini",
    "gpt-5.1",
    "gpt-5.1-codex",
    "gpt-5.1-codex-max",
    "gpt-5.1-codex-mini",
    "gpt-5.2",
    "gpt-5.2-codex",
    "codex-mini-latest",
];

/// Reasoning-effort suffixes clients append to a model name (`gpt-5.1-codex-high`).
pub const EFFORT_SUFFIXES: &[&str] = &["-minimal", "-none", "-low", "-medium", "-high", "-xhigh"];

/// The model subscription accounts serve for names outside the Codex family, unless the
/// data plane is configured otherwise (`TOLLGATE_DEFAULT_CODEX_MODEL`).
pub const DEFAULT_CODEX_MODEL: &str = "gpt-5.1-codex";

/// Strips a `-YYYYMMDD` / `-YYYY-MM-DD` date suffix.
pub fn strip_date_suffix(model: &str) -> &str {
    let b = model.as_bytes();
    let is_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if b.len() > 9 && b[b.len() - 9] == b'-' && is_digits(&b[b.len() - 8..]) {
        return &model[..model.len() - 9];
    }
    if b.len() > 11
        && b[b.len() - 11] == b'-'
        && b[b.len() - 6] == b'-'
        && b[b.len() - 3] == b'-'
        && is_digits(&b[b.len() - 10..b.len() - 6])
        && is_digits(&b[b.len() - 5..b.len() - 3])
        && is_digits(&b[b.len() - 2..])
    {
        return &model[..model.len() - 11];
    }
    model
}

/// `gpt-5.1-codex-high` → `gpt-5.1-codex`; unknown names → the configured default.
pub fn normalize_codex_model(model: &str, default: &str) -> String {
    let mut m = strip_date_suffix(model.trim()).to_ascii_lowercase();
    if let Some(s) = EFFORT_SUFFIXES.iter().find(|s| m.ends_with(*s)) {
        m.truncate(m.len() - s.len());
    }
    if CODEX_MODELS.contains(&m.as_str()) {
        m
    } else {
        default.to_owned()
    }
}

/// The name sent upstream for `requested` on an account with this mapping; `codex` for
/// subscription (OAuth) accounts, with the data plane's default Codex model.
pub fn served_model(
    requested: &str,
    mapping: &BTreeMap<String, String>,
    codex: Option<&str>,
) -> String {
    let mapped = mapping.get(requested).map_or(requested, String::as_str);
    match codex {
        Some(default) => normalize_codex_model(mapped, default),
        None => mapped.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_then_normalisation() {
        let mapping = BTreeMap::from([("fast".to_owned(), "gpt-5-mini".to_owned())]);
        assert_eq!(served_model("fast", &mapping, None), "gpt-5-mini");
        assert_eq!(served_model("gpt-4.1", &mapping, None), "gpt-4.1");
        // gpt-5-mini is no Codex model: the subscription default serves it.
        assert_eq!(
            served_model("fast", &mapping, Some(DEFAULT_CODEX_MODEL)),
            "gpt-5.1-codex"
        );
        assert_eq!(
            served_model("foo", &mapping, Some("gpt-5.1-codex-mini")),
            "gpt-5.1-codex-mini"
        );
        assert_eq!(
            served_model("GPT-5.1-Codex-High-2025-11-13", &mapping, Some("x")),
            "gpt-5.1-codex"
        );
    }

    #[test]
    fn date_suffixes() {
        assert_eq!(strip_date_suffix("gpt-5-20250807"), "gpt-5");
        assert_eq!(strip_date_suffix("gpt-5.1-2025-11-13"), "gpt-5.1");
        assert_eq!(strip_date_suffix("gpt-5"), "gpt-5");
    }
}
