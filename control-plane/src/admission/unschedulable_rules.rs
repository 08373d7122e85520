//! Operator rules for outcomes that otherwise only count (accounts.md, "Outcomes and
//! account health": other 5xx, stream idle timeout, connect errors): a status plus body
//! keywords make the account temporarily unschedulable for N minutes.
//!
//! Configured as `TOLLGATE_UNSCHEDULABLE_RULES`, a JSON array:
//!
//! ```text
//! [{"status": 503, "keywords": ["capacity", "overloaded"], "minutes": 5},
//!  {"status": 0, "minutes": 2}]
//! ```
//!
//! - `status`: an HTTP status 500–599 other than 529 (which has its own cool-down), or
//!   0 for a stream idle timeout or a failed connection.
//! - `keywords`: matched case-insensitively against the reported message and body; any
//!   one of them matching is enough; none (or an empty list) matches every such outcome.
//! - `minutes`: how long the account is left out (1..=10080).
//!
//! Rules are tried in order; the first match applies. Like the other cool-downs,
//! `temp_unschedulable_until` only ever moves later (the reason goes with it).

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::outcome_policy::{Outcome, OutcomeKind};
use crate::error::Result;
use crate::storage::Store;

/// The environment variable (named in every error).
pub const ENV: &str = "TOLLGATE_UNSCHEDULABLE_RULES";

const MAX_RULES: usize = 100;
const MAX_KEYWORDS: usize = 32;
const MAX_KEYWORD_LEN: usize = 200;
/// One week.
const MAX_MINUTES: u32 = 7 * 24 * 60;

/// One rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnschedulableRule {
    pub status: u16,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub minutes: u32,
}

/// The configured rules, in order. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnschedulableRules(pub Vec<UnschedulableRule>);

/// What applying a rule does to the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub until_ms: i64,
    /// e.g. "rule: 503 capacity".
    pub reason: String,
}

impl FromStr for UnschedulableRules {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let rules: Vec<UnschedulableRule> = serde_json::from_str(s).map_err(|e| {
            format!("{ENV} must be a JSON array of {{\"status\", \"keywords\", \"minutes\"}}: {e}")
        })?;
        let rules = Self(
            rules
                .into_iter()
                .map(|mut r| {
                    r.keywords = r.keywords.iter().map(|k| k.trim().to_lowercase()).collect();
                    r
                })
                .collect(),
        );
        rules.validate()?;
        Ok(rules)
    }
}

impl UnschedulableRules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks every rule; the error names the variable and the rule (1-based).
    pub fn validate(&self) -> Result<(), String> {
        if self.0.len() > MAX_RULES {
            return Err(format!("{ENV}: at most {MAX_RULES} rules"));
        }
        for (i, r) in self.0.iter().enumerate() {
            let n = i + 1;
            let status_ok = r.status == 0 || ((500..=599).contains(&r.status) && r.status != 529);
            if !status_ok {
                return Err(format!(
                    "{ENV}: rule {n}: status {} is not 0 (stream timeout / connect error) \
                     or a 5xx other than 529",
                    r.status
                ));
            }
            if !(1..=MAX_MINUTES).contains(&r.minutes) {
                return Err(format!(
                    "{ENV}: rule {n}: minutes must be 1..={MAX_MINUTES}"
                ));
            }
            if r.keywords.len() > MAX_KEYWORDS {
                return Err(format!("{ENV}: rule {n}: at most {MAX_KEYWORDS} keywords"));
            }
            if let Some(k) = r
                .keywords
                .iter()
                .find(|k| k.trim().is_empty() || k.len() > MAX_KEYWORD_LEN)
            {
                return Err(format!(
                    "{ENV}: rule {n}: keyword {k:?} must be 1..={MAX_KEYWORD_LEN} bytes and not blank"
                ));
            }
        }
        Ok(())
    }

    /// The first rule matching `o`, as the change it makes at `now_ms`.
    pub fn matching(&self, o: &Outcome, now_ms: i64) -> Option<Applied> {
        if self.0.is_empty() {
            return None;
        }
        let (status, label) = match o.kind {
            OutcomeKind::HttpStatus => (o.status, o.status.to_string()),
            OutcomeKind::StreamTimeout => (0, "stream timeout".to_owned()),
            OutcomeKind::ConnectError => (0, "connect error".to_owned()),
            OutcomeKind::Success => return None,
        };
        let message = o.message.to_lowercase();
        let body = o.body.to_lowercase();
        self.0
            .iter()
            .filter(|r| r.status == status)
            .find_map(|r| {
                let matched = if r.keywords.is_empty() {
                    Some(None)
                } else {
                    r.keywords
                        .iter()
                        .find(|k| {
                            let k = k.trim().to_lowercase();
                            message.contains(&k) || body.contains(&k)
                        })
                        .map(|k| Some(k.trim()))
                };
                matched.map(|keyword| (r, keyword))
            })
            .map(|(r, keyword)| {
                let minutes = Duration::from_secs(u64::from(r.minutes) * 60);
                let add = i64::try_from(minutes.as_millis()).unwrap_or(i64::MAX);
                Applied {
                    until_ms: now_ms.saturating_add(add),
                    reason: match keyword {
                        Some(k) => format!("rule: {label} {k}"),
                        None => format!("rule: {label}"),
                    },
                }
            })
    }
}

/// Applies the first matching rule to the account: extends its temporary
/// unschedulability. Returns whether a live account was updated.
pub async fn apply(
    store: &Store,
    rules: &UnschedulableRules,
    o: &Outcome,
    now_ms: i64,
) -> Result<bool> {
    let Some(applied) = rules.matching(o, now_ms) else {
        return Ok(false);
    };
    tracing::info!(
        account_id = o.account_id,
        until_ms = applied.until_ms,
        reason = applied.reason,
        "account temporarily unschedulable"
    );
    store
        .extend_account_temp_unschedulable(o.account_id, applied.until_ms, &applied.reason)
        .await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn rules(json: &str) -> UnschedulableRules {
        json.parse().unwrap()
    }

    fn http(status: u16, message: &str, body: &str) -> Outcome {
        Outcome {
            account_id: 7,
            kind: OutcomeKind::HttpStatus,
            status,
            message: message.into(),
            headers: HashMap::new(),
            body: body.into(),
        }
    }

    fn timeout(kind: OutcomeKind) -> Outcome {
        Outcome {
            kind,
            status: 0,
            ..http(0, "stream idle timeout", "")
        }
    }

    #[test]
    fn parses_and_normalises() {
        let r = rules(r#"[{"status":503,"keywords":[" Capacity ","OVERLOADED"],"minutes":5}]"#);
        assert_eq!(
            r.0,
            vec![UnschedulableRule {
                status: 503,
                keywords: vec!["capacity".into(), "overloaded".into()],
                minutes: 5,
            }]
        );
        // Keywords may be left out; blank means no rules.
        assert_eq!(
            rules(r#"[{"status":0,"minutes":1}]"#).0[0].keywords.len(),
            0
        );
        assert!(rules("").is_empty());
        assert!(rules("  []  ").is_empty());
    }

    #[test]
    fn invalid_rules_name_the_variable() {
        for bad in [
            "{}",
            "not json",
            r#"[{"status":503,"minutes":5,"keyword":["x"]}]"#,
            r#"[{"status":503}]"#,
            r#"[{"status":429,"minutes":5}]"#,
            r#"[{"status":529,"minutes":5}]"#,
            r#"[{"status":404,"minutes":5}]"#,
            r#"[{"status":503,"minutes":0}]"#,
            r#"[{"status":503,"minutes":10081}]"#,
            r#"[{"status":503,"minutes":-1}]"#,
            r#"[{"status":503,"keywords":["  "],"minutes":5}]"#,
        ] {
            let e = bad.parse::<UnschedulableRules>().unwrap_err();
            assert!(e.starts_with(ENV), "{bad}: {e}");
        }
        let e = r#"[{"status":503,"minutes":5},{"status":503,"minutes":0}]"#
            .parse::<UnschedulableRules>()
            .unwrap_err();
        assert!(e.contains("rule 2"), "{e}");
        // Rules built in code are checked the same way.
        let r = UnschedulableRules(vec![UnschedulableRule {
            status: 200,
            keywords: vec![],
            minutes: 1,
        }]);
        assert!(r.validate().unwrap_err().contains("status 200"));
    }

    #[test]
    fn config_flag_and_start_check_name_the_variable() {
        let c = crate::config::parse_flags(&[
            "cp",
            "--unschedulable-rules",
            r#"[{"status":503,"keywords":["capacity"],"minutes":5}]"#,
        ])
        .unwrap();
        assert_eq!(c.unschedulable_rules.0[0].minutes, 5);
        let e = crate::config::parse_flags(&["cp", "--unschedulable-rules", "[{}]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENV), "{e}");
        // A config built in code is checked at start, before anything is created.
        let dir = std::env::temp_dir().join(format!("tg-rules-{}", uuid::Uuid::new_v4()));
        let mut c = crate::Config::for_data_dir(&dir);
        c.unschedulable_rules = UnschedulableRules(vec![UnschedulableRule {
            status: 503,
            keywords: vec![],
            minutes: 0,
        }]);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains(ENV), "{e}");
        assert!(!dir.exists());
    }

    #[test]
    fn keywords_match_message_or_body_case_insensitively() {
        let r = rules(r#"[{"status":503,"keywords":["capacity","overloaded"],"minutes":5}]"#);
        let hit = r.matching(&http(503, "Over CAPACITY right now", ""), NOW);
        assert_eq!(
            hit,
            Some(Applied {
                until_ms: NOW + 5 * MIN,
                reason: "rule: 503 capacity".into(),
            })
        );
        let hit = r.matching(&http(503, "", r#"{"error":{"message":"Overloaded"}}"#), NOW);
        assert_eq!(hit.unwrap().reason, "rule: 503 overloaded");
        // No keyword, or another status: nothing.
        assert_eq!(r.matching(&http(503, "bad gateway", "nope"), NOW), None);
        assert_eq!(r.matching(&http(502, "capacity", ""), NOW), None);
    }

    #[test]
    fn empty_keywords_match_any_and_first_rule_wins() {
        let r = rules(
            r#"[{"status":502,"keywords":["upstream connect"],"minutes":30},
                {"status":502,"minutes":2},
                {"status":502,"minutes":60}]"#,
        );
        let hit = r.matching(&http(502, "Bad gateway.", ""), NOW).unwrap();
        assert_eq!(hit.until_ms, NOW + 2 * MIN);
        assert_eq!(hit.reason, "rule: 502");
        let hit = r
            .matching(&http(502, "upstream connect error", ""), NOW)
            .unwrap();
        assert_eq!(hit.until_ms, NOW + 30 * MIN);
        assert_eq!(hit.reason, "rule: 502 upstream connect");
    }

    #[test]
    fn status_zero_is_timeout_or_connect_error() {
        let r = rules(r#"[{"status":0,"minutes":3}]"#);
        let hit = r
            .matching(&timeout(OutcomeKind::StreamTimeout), NOW)
            .unwrap();
        assert_eq!(hit.until_ms, NOW + 3 * MIN);
        assert_eq!(hit.reason, "rule: stream timeout");
        let hit = r
            .matching(&timeout(OutcomeKind::ConnectError), NOW)
            .unwrap();
        assert_eq!(hit.reason, "rule: connect error");
        // A status-0 rule never matches an HTTP answer, nor a success.
        assert_eq!(r.matching(&http(500, "", ""), NOW), None);
        assert_eq!(r.matching(&timeout(OutcomeKind::Success), NOW), None);
    }

    #[test]
    fn keywords_built_in_code_still_match_case_insensitively() {
        let r = UnschedulableRules(vec![UnschedulableRule {
            status: 500,
            keywords: vec!["Server Error".into()],
            minutes: 1,
        }]);
        assert!(r.validate().is_ok());
        let hit = r.matching(&http(500, "internal SERVER ERROR", ""), NOW);
        assert_eq!(hit.unwrap().reason, "rule: 500 Server Error");
    }

    #[tokio::test]
    async fn applying_extends_only_and_keeps_the_reason_with_the_time() {
        use crate::model::{Credential, NewAccount};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("rules.db").display());
        let secrets =
            crate::crypto::SecretBox::from_base64(&crate::crypto::SecretBox::generate_key_b64())
                .unwrap();
        let store = Store::connect(&url, secrets).await.unwrap();
        let id = store
            .create_account(NewAccount {
                name: "a".into(),
                platform: tollgate_shared::domain::Platform::OpenAi,
                base_url: String::new(),
                credential: Credential::ApiKey {
                    api_key: "k".into(),
                },
                concurrency: 1,
                priority: 1,
                model_mapping: Default::default(),
                proxy_url: String::new(),
                user_agent: String::new(),
                expires_at_ms: None,
                chatgpt_account_id: String::new(),
                cost_multiplier: tollgate_shared::Multiplier::ONE,
                notes: String::new(),
                groups: vec![],
            })
            .await
            .unwrap()
            .id;
        let r = rules(
            r#"[{"status":503,"keywords":["capacity"],"minutes":10},
                {"status":502,"minutes":1}]"#,
        );
        let mut o = http(503, "no capacity", "");
        o.account_id = id;
        // No match: nothing written.
        assert!(!apply(&store, &r, &http(504, "", ""), NOW).await.unwrap());
        assert!(apply(&store, &r, &o, NOW).await.unwrap());
        let a = store.get_account(id).await.unwrap();
        assert_eq!(a.temp_unschedulable_until_ms, Some(NOW + 10 * MIN));
        assert_eq!(a.temp_unschedulable_reason, "rule: 503 capacity");
        // A shorter rule later does not shorten it, nor replace the reason.
        let mut short = http(502, "", "");
        short.account_id = id;
        apply(&store, &r, &short, NOW + MIN).await.unwrap();
        let a = store.get_account(id).await.unwrap();
        assert_eq!(a.temp_unschedulable_until_ms, Some(NOW + 10 * MIN));
        assert_eq!(a.temp_unschedulable_reason, "rule: 503 capacity");
        // A later one moves both.
        apply(&store, &r, &short, NOW + 20 * MIN).await.unwrap();
        let a = store.get_account(id).await.unwrap();
        assert_eq!(a.temp_unschedulable_until_ms, Some(NOW + 21 * MIN));
        assert_eq!(a.temp_unschedulable_reason, "rule: 502");
        // A deleted account is not touched.
        store.delete_account(id).await.unwrap();
        assert!(!apply(&store, &r, &o, NOW + 60 * MIN).await.unwrap());
    }
}
