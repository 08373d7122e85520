//! What a reported upstream outcome does to its account (accounts.md, "Outcomes and
//! account health"), as pure functions: what a 401/402/403/429/529/5xx does to an
//! account, and when a rate limit resets. Applying the decision (storage, counters,
//! token refresh) is `report_outcome.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What kind of outcome the data plane reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    HttpStatus,
    ConnectError,
    StreamTimeout,
    Success,
}

/// One reported upstream outcome (converted from the wire at the service edge).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub account_id: i64,
    pub kind: OutcomeKind,
    pub status: u16,
    /// Upstream error message (already extracted, truncated). Never shown to clients.
    pub message: String,
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    /// Raw body prefix.
    pub body: String,
}

/// Cool-down lengths.
#[derive(Debug, Clone, Copy)]
pub struct Cooldowns {
    /// A 429 with no reset information.
    pub rate_limit_default: Duration,
    /// A 529.
    pub overload_cooldown: Duration,
}

impl Default for Cooldowns {
    fn default() -> Self {
        Self {
            rate_limit_default: Duration::from_secs(5 * 60),
            overload_cooldown: Duration::from_secs(10 * 60),
        }
    }
}

/// What the outcome does to the account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// Status `error` with this message.
    Error(String),
    RateLimitedUntil(i64),
    OverloadedUntil(i64),
    /// Counted only (other 5xx, timeouts, connect errors); no state change.
    Counted(Counted),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    ServerError,
    StreamTimeout,
    ConnectError,
}

/// The change, plus the latest `x-codex-*` usage snapshot when the response carried one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub change: AccountChange,
    pub codex_usage: Option<BTreeMap<String, String>>,
    /// A 401: a subscription account gets a forced token refresh first and is retired
    /// only if that fails (`Admission::report_outcome`, `tokens.rs`).
    pub wants_token_refresh: bool,
}

/// Longest message kept on the account (operators read it; it may be verbose).
const MAX_MESSAGE: usize = 500;

fn detail(o: &Outcome) -> String {
    let text = if o.message.trim().is_empty() {
        o.body.trim()
    } else {
        o.message.trim()
    };
    truncate(text, MAX_MESSAGE)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn decide(o: &Outcome, now_ms: i64, settings: &Cooldowns) -> Decision {
    let codex_usage = codex_snapshot(&o.headers, now_ms);
    let mut wants_token_refresh = false;
    let change = match o.kind {
        OutcomeKind::Success => AccountChange::None,
        OutcomeKind::ConnectError => AccountChange::Counted(Counted::ConnectError),
        OutcomeKind::StreamTimeout => AccountChange::Counted(Counted::StreamTimeout),
        OutcomeKind::HttpStatus => match o.status {
            401 => {
                wants_token_refresh = true;
                AccountChange::Error(format!("Authentication failed (401): {}", detail(o)))
            }
            402 => AccountChange::Error(format!("Payment required (402): {}", detail(o))),
            403 => AccountChange::Error(format!("Access forbidden (403): {}", detail(o))),
            400 if organization_disabled(o) => {
                AccountChange::Error(format!("Organization disabled (400): {}", detail(o)))
            }
            429 => AccountChange::RateLimitedUntil(rate_limit_reset(
                &o.headers,
                &o.body,
                now_ms,
                settings.rate_limit_default,
            )),
            529 => AccountChange::OverloadedUntil(
                now_ms.saturating_add(ms(settings.overload_cooldown)),
            ),
            500..=599 => AccountChange::Counted(Counted::ServerError),
            _ => AccountChange::None,
        },
    };
    Decision {
        change,
        codex_usage,
        wants_token_refresh,
    }
}

fn organization_disabled(o: &Outcome) -> bool {
    const NEEDLE: &str = "organization has been disabled";
    o.message.to_ascii_lowercase().contains(NEEDLE) || o.body.to_ascii_lowercase().contains(NEEDLE)
}

/// One `x-codex-{primary,secondary}-*` window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Window {
    used_percent: Option<f64>,
    reset_after_secs: Option<f64>,
    window_minutes: Option<f64>,
}

impl Window {
    fn parse(headers: &HashMap<String, String>, which: &str) -> Option<Self> {
        let get = |name: &str| {
            headers
                .get(&format!("x-codex-{which}-{name}"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        let w = Self {
            used_percent: get("used-percent"),
            reset_after_secs: get("reset-after-seconds").filter(|v| *v >= 0.0),
            window_minutes: get("window-minutes"),
        };
        (w != Self::default()).then_some(w)
    }

    fn exhausted(&self) -> bool {
        self.used_percent.is_some_and(|p| p >= 100.0)
    }

    fn reset_at(&self, now_ms: i64) -> Option<i64> {
        self.reset_after_secs.map(|s| {
            // Whole milliseconds, rounded up: never end a cool-down early.
            #[allow(clippy::cast_possible_truncation)]
            let add = (s * 1000.0).ceil().min(i64::MAX as f64) as i64;
            now_ms.saturating_add(add)
        })
    }
}

/// The 5-hour and 7-day windows: the one ≤ 360 minutes is the 5-hour one. Without window
/// sizes, primary is taken as the 5-hour window (Codex's usual order).
fn classify(
    primary: Option<Window>,
    secondary: Option<Window>,
) -> (Option<Window>, Option<Window>) {
    let short = |w: &Option<Window>| w.and_then(|w| w.window_minutes).map(|m| m <= 360.0);
    match (short(&primary), short(&secondary)) {
        (Some(false), _) | (None, Some(true)) => (secondary, primary),
        _ => (primary, secondary),
    }
}

/// Reset time from the Codex headers: an exhausted window's reset wins (both exhausted:
/// the later); otherwise the largest reset known.
fn codex_reset(headers: &HashMap<String, String>, now_ms: i64) -> Option<i64> {
    let windows: Vec<Window> = [
        Window::parse(headers, "primary"),
        Window::parse(headers, "secondary"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let exhausted = windows
        .iter()
        .filter(|w| w.exhausted())
        .filter_map(|w| w.reset_at(now_ms))
        .max();
    exhausted.or_else(|| windows.iter().filter_map(|w| w.reset_at(now_ms)).max())
}

/// When a 429'd account may be used again: the Codex headers, else the body's
/// `error.resets_at` (unix seconds) / `error.resets_in_seconds`, else `Retry-After`
/// (seconds), else `default` from now. Only times in the future count.
pub fn rate_limit_reset(
    headers: &HashMap<String, String>,
    body: &str,
    now_ms: i64,
    default: Duration,
) -> i64 {
    let future = |t: i64| (t > now_ms).then_some(t);
    codex_reset(headers, now_ms)
        .and_then(future)
        .or_else(|| body_reset(body, now_ms).and_then(future))
        .or_else(|| {
            headers
                .get("retry-after")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|s| *s > 0)
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000)))
        })
        .unwrap_or_else(|| now_ms.saturating_add(ms(default)))
}

/// `error.resets_at` (unix seconds) or `error.resets_in_seconds` from the body. The body
/// may be a truncated prefix, so a failed JSON parse falls back to a plain scan.
fn body_reset(body: &str, now_ms: i64) -> Option<i64> {
    let (at, in_secs) = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => {
            let err = v.get("error").unwrap_or(&v);
            (
                err.get("resets_at").and_then(json_number),
                err.get("resets_in_seconds").and_then(json_number),
            )
        }
        Err(_) => (
            scan_number(body, "resets_at"),
            scan_number(body, "resets_in_seconds"),
        ),
    };
    at.filter(|s| *s > 0)
        .map(|s| s.saturating_mul(1000))
        .or_else(|| {
            in_secs
                .filter(|s| *s > 0)
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000)))
        })
}

fn json_number(v: &serde_json::Value) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)]
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.ceil() as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The integer after `"name":` in possibly truncated JSON text.
fn scan_number(text: &str, name: &str) -> Option<i64> {
    let pat = format!("\"{name}\"");
    let rest = &text[text.find(&pat)? + pat.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The `x-codex-*` usage headers as the snapshot stored on the account: the raw headers,
/// plus normalised `five_hour_*` / `seven_day_*` entries and `updated_at_ms`.
pub fn codex_snapshot(
    headers: &HashMap<String, String>,
    now_ms: i64,
) -> Option<BTreeMap<String, String>> {
    let mut snap: BTreeMap<String, String> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-codex-"))
        .take(32)
        .map(|(k, v)| (k.clone(), truncate(v.trim(), 200)))
        .collect();
    if snap.is_empty() {
        return None;
    }
    let (five, seven) = classify(
        Window::parse(headers, "primary"),
        Window::parse(headers, "secondary"),
    );
    for (prefix, w) in [("five_hour", five), ("seven_day", seven)] {
        let Some(w) = w else { continue };
        if let Some(p) = w.used_percent {
            snap.insert(format!("{prefix}_used_percent"), p.to_string());
        }
        if let Some(t) = w.reset_at(now_ms) {
            snap.insert(format!("{prefix}_reset_at_ms"), t.to_string());
        }
    }
    snap.insert("updated_at_ms".into(), now_ms.to_string());
    Some(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;
    const DEFAULT: Duration = Duration::from_secs(300);

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn codex(p_used: &str, p_reset: &str, s_used: &str, s_reset: &str) -> HashMap<String, String> {
        headers(&[
            ("x-codex-primary-used-percent", p_used),
            ("x-codex-primary-reset-after-seconds", p_reset),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-secondary-used-percent", s_used),
            ("x-codex-secondary-reset-after-seconds", s_reset),
            ("x-codex-secondary-window-minutes", "10080"),
        ])
    }

    fn outcome(status: u16, message: &str, h: HashMap<String, String>, body: &str) -> Outcome {
        Outcome {
            account_id: 1,
            kind: OutcomeKind::HttpStatus,
            status,
            message: message.into(),
            headers: h,
            body: body.into(),
        }
    }

    fn reset(h: &HashMap<String, String>, body: &str) -> i64 {
        rate_limit_reset(h, body, NOW, DEFAULT)
    }

    #[test]
    fn exhausted_seven_day_window_wins() {
        // 5-hour window at 40 % resets in 1 h; 7-day window exhausted resets in 3 days.
        let h = codex("40", "3600", "100", "259200");
        assert_eq!(reset(&h, ""), NOW + 259_200_000);
        // Same when the 7-day window resets sooner than the (non-exhausted) 5-hour one.
        let h = codex("40", "7200", "100.0", "60");
        assert_eq!(reset(&h, ""), NOW + 60_000);
    }

    #[test]
    fn exhausted_five_hour_window() {
        let h = codex("100", "1800", "70", "500000");
        assert_eq!(reset(&h, ""), NOW + 1_800_000);
        // Both exhausted: the later reset.
        let h = codex("100", "1800", "100", "500000");
        assert_eq!(reset(&h, ""), NOW + 500_000_000);
    }

    #[test]
    fn neither_exhausted_takes_the_largest_reset() {
        let h = codex("90", "1800", "95", "7200");
        assert_eq!(reset(&h, ""), NOW + 7_200_000);
        let h = codex("90", "9000", "95", "7200");
        assert_eq!(reset(&h, ""), NOW + 9_000_000);
        // Only one window known.
        let h = headers(&[("x-codex-primary-reset-after-seconds", "42")]);
        assert_eq!(reset(&h, ""), NOW + 42_000);
    }

    #[test]
    fn swapped_windows_are_classified_by_size() {
        let h = headers(&[
            ("x-codex-primary-used-percent", "100"),
            ("x-codex-primary-reset-after-seconds", "600"),
            ("x-codex-primary-window-minutes", "10080"),
            ("x-codex-secondary-used-percent", "5"),
            ("x-codex-secondary-reset-after-seconds", "100"),
            ("x-codex-secondary-window-minutes", "300"),
        ]);
        let snap = codex_snapshot(&h, NOW).unwrap();
        assert_eq!(snap["seven_day_used_percent"], "100");
        assert_eq!(snap["five_hour_used_percent"], "5");
        assert_eq!(snap["five_hour_reset_at_ms"], (NOW + 100_000).to_string());
        assert_eq!(reset(&h, ""), NOW + 600_000);
    }

    #[test]
    fn body_then_retry_after_then_default() {
        let none = HashMap::new();
        let at = NOW / 1000 + 3600;
        let body = format!(r#"{{"error":{{"type":"usage_limit_reached","resets_at":{at}}}}}"#);
        assert_eq!(reset(&none, &body), at * 1000);
        let body = r#"{"error":{"resets_in_seconds":120}}"#;
        assert_eq!(reset(&none, body), NOW + 120_000);
        // A truncated body still yields its reset.
        let body = format!(r#"{{"error":{{"message":"limit","resets_at": {at}, "pla"#);
        assert_eq!(reset(&none, &body), at * 1000);
        // Retry-After (seconds) when the body has nothing.
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(
            reset(&h, r#"{"error":{"message":"slow down"}}"#),
            NOW + 30_000
        );
        // The body beats Retry-After.
        assert_eq!(
            reset(&h, r#"{"error":{"resets_in_seconds":5}}"#),
            NOW + 5_000
        );
        // Nothing at all: 5 minutes.
        assert_eq!(reset(&none, "not json"), NOW + 5 * MIN);
        // A reset in the past is ignored.
        let body = r#"{"error":{"resets_at":1}}"#;
        assert_eq!(reset(&none, body), NOW + 5 * MIN);
    }

    #[test]
    fn codex_headers_beat_the_body() {
        let h = codex("100", "10", "1", "1");
        assert_eq!(
            reset(&h, r#"{"error":{"resets_in_seconds":999}}"#),
            NOW + 10_000
        );
    }

    #[test]
    fn status_rules() {
        let s = Cooldowns::default();
        let d = |o: Outcome| decide(&o, NOW, &s).change;
        assert_eq!(
            d(outcome(401, "invalid token", HashMap::new(), "")),
            AccountChange::Error("Authentication failed (401): invalid token".into())
        );
        assert!(decide(&outcome(401, "", HashMap::new(), ""), NOW, &s).wants_token_refresh);
        assert_eq!(
            d(outcome(402, "pay", HashMap::new(), "")),
            AccountChange::Error("Payment required (402): pay".into())
        );
        assert_eq!(
            d(outcome(403, "", HashMap::new(), "forbidden body")),
            AccountChange::Error("Access forbidden (403): forbidden body".into())
        );
        assert!(matches!(
            d(outcome(
                400,
                "This organization has been disabled.",
                HashMap::new(),
                ""
            )),
            AccountChange::Error(_)
        ));
        assert_eq!(
            d(outcome(400, "bad request", HashMap::new(), "")),
            AccountChange::None
        );
        assert_eq!(
            d(outcome(429, "", HashMap::new(), "")),
            AccountChange::RateLimitedUntil(NOW + 5 * MIN)
        );
        assert_eq!(
            d(outcome(529, "", HashMap::new(), "")),
            AccountChange::OverloadedUntil(NOW + 10 * MIN)
        );
        assert_eq!(
            d(outcome(502, "", HashMap::new(), "")),
            AccountChange::Counted(Counted::ServerError)
        );
        let mut o = outcome(0, "", HashMap::new(), "");
        o.kind = OutcomeKind::StreamTimeout;
        assert_eq!(d(o), AccountChange::Counted(Counted::StreamTimeout));
    }

    #[test]
    fn success_keeps_the_codex_snapshot() {
        let mut o = outcome(200, "", codex("12", "100", "3", "1000"), "");
        o.kind = OutcomeKind::Success;
        o.headers
            .insert("content-type".into(), "text/event-stream".into());
        let dec = decide(&o, NOW, &Cooldowns::default());
        assert_eq!(dec.change, AccountChange::None);
        let snap = dec.codex_usage.unwrap();
        assert_eq!(snap["x-codex-primary-used-percent"], "12");
        assert_eq!(snap["five_hour_used_percent"], "12");
        assert_eq!(snap["seven_day_reset_at_ms"], (NOW + 1_000_000).to_string());
        assert!(!snap.contains_key("content-type"));
        let mut plain = outcome(200, "", HashMap::new(), "");
        plain.kind = OutcomeKind::Success;
        assert_eq!(decide(&plain, NOW, &Cooldowns::default()).codex_usage, None);
    }

    #[test]
    fn long_messages_are_truncated() {
        let long = "é".repeat(600);
        let AccountChange::Error(m) = decide(
            &outcome(402, &long, HashMap::new(), ""),
            NOW,
            &Cooldowns::default(),
        )
        .change
        else {
            panic!("expected an error change");
        };
        assert!(m.len() < 600);
    }
}
