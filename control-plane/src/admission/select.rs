//! Account selection rules (responses-flow.md §3.5), as pure functions over a snapshot:
//! which accounts may serve a request, in which order the load-aware pass tries them,
//! and which one the request waits for when all are busy.

use std::collections::BTreeMap;

use tollgate_shared::domain::{AccountStatus, Platform};

use super::slots::Usage;
use crate::model::Account;

/// Why an account cannot serve this request (the first rule it fails, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unusable {
    Inactive,
    Unschedulable,
    ModelUnsupported,
    Excluded,
    RateLimited,
    Overloaded,
    TempUnschedulable,
}

impl Unusable {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Inactive => "disabled or in error",
            Self::Unschedulable => "unschedulable",
            Self::ModelUnsupported => "without the model",
            Self::Excluded => "already failed for this request",
            Self::RateLimited => "rate-limited",
            Self::Overloaded => "overloaded",
            Self::TempUnschedulable => "temporarily unschedulable",
        }
    }
}

/// An account with a model mapping supports exactly its keys; without one, every model.
pub fn supports_model(a: &Account, model: &str) -> bool {
    a.model_mapping.is_empty() || a.model_mapping.contains_key(model)
}

fn until_passed(until_ms: Option<i64>, now_ms: i64) -> bool {
    until_ms.is_none_or(|t| t <= now_ms)
}

/// `None` when the account may serve `model` now. An OAuth account whose access token
/// has expired is still usable: the token is refreshed, not the account retired.
pub fn unusable(a: &Account, model: &str, excluded: &[i64], now_ms: i64) -> Option<Unusable> {
    if a.status != AccountStatus::Active || a.platform != Platform::OpenAi {
        Some(Unusable::Inactive)
    } else if !a.schedulable {
        Some(Unusable::Unschedulable)
    } else if !supports_model(a, model) {
        Some(Unusable::ModelUnsupported)
    } else if excluded.contains(&a.id) {
        Some(Unusable::Excluded)
    } else if !until_passed(a.rate_limited_until_ms, now_ms) {
        Some(Unusable::RateLimited)
    } else if !until_passed(a.overloaded_until_ms, now_ms) {
        Some(Unusable::Overloaded)
    } else if !until_passed(a.temp_unschedulable_until_ms, now_ms) {
        Some(Unusable::TempUnschedulable)
    } else {
        None
    }
}

/// The reason appended to "No available accounts" (e.g. ": all accounts are rate-limited").
pub fn no_account_reason(reasons: &[Unusable], model: &str, group_id: Option<i64>) -> String {
    let Some(first) = reasons.first().copied() else {
        return match group_id {
            Some(_) => ": the group has no accounts".to_owned(),
            None => ": no accounts are configured".to_owned(),
        };
    };
    if reasons.iter().all(|r| *r == first) {
        return match first {
            Unusable::ModelUnsupported => format!(": no account supports model {model}"),
            Unusable::Inactive => ": all accounts are disabled or in error".to_owned(),
            Unusable::Excluded => ": all accounts failed for this request".to_owned(),
            other => format!(": all accounts are {}", other.describe()),
        };
    }
    let mut counts: BTreeMap<Unusable, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(*r).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(r, n)| format!("{n} {}", r.describe()))
        .collect();
    format!(": no usable account ({})", parts.join(", "))
}

/// The account's priority for this request: its per-group priority when the key has a
/// group (falling back to the account's own), else the account's own.
pub fn priority_for(a: &Account, group_id: Option<i64>) -> i32 {
    group_id
        .and_then(|g| a.groups.iter().find(|m| m.group_id == g))
        .map_or(a.priority, |m| m.priority)
}

/// ⌊(in use + waiting) × 100 / concurrency⌋; 0 for unlimited concurrency (≤ 0).
pub fn load_percent(usage: Usage, concurrency: i32) -> u32 {
    let Ok(c) = u64::try_from(concurrency) else {
        return 0;
    };
    if c == 0 {
        return 0;
    }
    let busy = u64::from(usage.in_use) + u64::from(usage.waiting);
    u32::try_from(busy * 100 / c).unwrap_or(u32::MAX)
}

/// A usable account as the ordering sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub account_id: i64,
    pub priority: i32,
    pub load: u32,
    /// Unix ms; `None` = never used, which sorts first.
    pub last_used_ms: Option<i64>,
}

impl Candidate {
    fn lru(&self) -> i64 {
        self.last_used_ms.unwrap_or(i64::MIN)
    }

    /// The load-aware order: priority, then load, then least recently used (the id
    /// last, only to make ties deterministic).
    pub fn load_key(&self) -> (i32, u32, i64, i64) {
        (self.priority, self.load, self.lru(), self.account_id)
    }

    /// The order for waiting when everything is busy: priority, then LRU.
    pub fn wait_key(&self) -> (i32, i64, i64) {
        (self.priority, self.lru(), self.account_id)
    }
}

/// Candidates under 100 % load, best first.
pub fn load_aware_order(cands: &[Candidate]) -> Vec<Candidate> {
    let mut v: Vec<Candidate> = cands.iter().copied().filter(|c| c.load < 100).collect();
    v.sort_by_key(Candidate::load_key);
    v
}

/// The first candidate (in load-aware order) whose slot `try_take` obtains.
pub fn pick_free<T>(
    cands: &[Candidate],
    mut try_take: impl FnMut(&Candidate) -> Option<T>,
) -> Option<(Candidate, T)> {
    load_aware_order(cands)
        .into_iter()
        .find_map(|c| try_take(&c).map(|t| (c, t)))
}

/// The candidate to wait for when none has a free slot.
pub fn wait_target(cands: &[Candidate]) -> Option<Candidate> {
    cands.iter().copied().min_by_key(Candidate::wait_key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tollgate_shared::Multiplier;
    use tollgate_shared::domain::AccountKind;

    use super::*;
    use crate::model::{AccountGroup, Credential};

    const NOW: i64 = 1_700_000_000_000;

    fn account(id: i64) -> Account {
        Account {
            id,
            name: format!("a{id}"),
            platform: Platform::OpenAi,
            kind: AccountKind::ApiKey,
            base_url: String::new(),
            credential: Credential::ApiKey {
                api_key: "sk-test".into(),
            },
            concurrency: 3,
            priority: 50,
            status: AccountStatus::Active,
            error_message: String::new(),
            schedulable: true,
            model_mapping: BTreeMap::new(),
            proxy_url: String::new(),
            user_agent: String::new(),
            rate_limited_until_ms: None,
            overloaded_until_ms: None,
            temp_unschedulable_until_ms: None,
            temp_unschedulable_reason: String::new(),
            expires_at_ms: None,
            chatgpt_account_id: String::new(),
            codex_usage: BTreeMap::new(),
            cost_multiplier: Multiplier::ONE,
            notes: String::new(),
            groups: Vec::new(),
            last_used_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn cand(id: i64, priority: i32, load: u32, last: Option<i64>) -> Candidate {
        Candidate {
            account_id: id,
            priority,
            load,
            last_used_ms: last,
        }
    }

    #[test]
    fn usability_rules() {
        let a = account(1);
        assert_eq!(unusable(&a, "gpt-5", &[], NOW), None);
        let mut b = a.clone();
        b.status = AccountStatus::Error;
        assert_eq!(unusable(&b, "gpt-5", &[], NOW), Some(Unusable::Inactive));
        let mut b = a.clone();
        b.schedulable = false;
        assert_eq!(
            unusable(&b, "gpt-5", &[], NOW),
            Some(Unusable::Unschedulable)
        );
        assert_eq!(unusable(&a, "gpt-5", &[1], NOW), Some(Unusable::Excluded));
        let mut b = a.clone();
        b.rate_limited_until_ms = Some(NOW + 1);
        assert_eq!(unusable(&b, "gpt-5", &[], NOW), Some(Unusable::RateLimited));
        b.rate_limited_until_ms = Some(NOW);
        assert_eq!(
            unusable(&b, "gpt-5", &[], NOW),
            None,
            "a passed cool-down is over"
        );
        let mut b = a.clone();
        b.overloaded_until_ms = Some(NOW + 1);
        assert_eq!(unusable(&b, "gpt-5", &[], NOW), Some(Unusable::Overloaded));
        let mut b = a.clone();
        b.temp_unschedulable_until_ms = Some(NOW + 1);
        assert_eq!(
            unusable(&b, "gpt-5", &[], NOW),
            Some(Unusable::TempUnschedulable)
        );
        // An expired OAuth token does not retire the account.
        let mut b = a.clone();
        b.expires_at_ms = Some(NOW - 1);
        assert_eq!(unusable(&b, "gpt-5", &[], NOW), None);
    }

    #[test]
    fn model_support() {
        let mut a = account(1);
        assert!(supports_model(&a, "anything"));
        a.model_mapping.insert("gpt-5".into(), "gpt-5-2025".into());
        assert!(supports_model(&a, "gpt-5"));
        assert!(!supports_model(&a, "gpt-4o"));
        assert_eq!(
            unusable(&a, "gpt-4o", &[], NOW),
            Some(Unusable::ModelUnsupported)
        );
    }

    #[test]
    fn group_priority_wins_over_own() {
        let mut a = account(1);
        a.priority = 10;
        a.groups = vec![AccountGroup {
            group_id: 7,
            priority: 90,
        }];
        assert_eq!(priority_for(&a, Some(7)), 90);
        assert_eq!(priority_for(&a, Some(8)), 10);
        assert_eq!(priority_for(&a, None), 10);
    }

    #[test]
    fn load_formula() {
        let u = |in_use, waiting| Usage { in_use, waiting };
        assert_eq!(load_percent(u(0, 0), 3), 0);
        assert_eq!(load_percent(u(1, 0), 3), 33);
        assert_eq!(load_percent(u(2, 0), 3), 66);
        assert_eq!(load_percent(u(3, 0), 3), 100);
        assert_eq!(load_percent(u(2, 2), 3), 133);
        assert_eq!(load_percent(u(50, 9), 0), 0);
        assert_eq!(load_percent(u(50, 9), -1), 0);
    }

    #[test]
    fn ordering_priority_then_load_then_lru() {
        let cands = [
            cand(1, 50, 0, None),
            cand(2, 10, 66, Some(5)),
            cand(3, 10, 33, Some(9)),
            cand(4, 10, 33, Some(1)),
            cand(5, 10, 33, None),
            cand(6, 0, 100, None),
        ];
        let order: Vec<i64> = load_aware_order(&cands)
            .iter()
            .map(|c| c.account_id)
            .collect();
        // 6 is full (100 %); 5 never used comes before 4 and 3.
        assert_eq!(order, vec![5, 4, 3, 2, 1]);
        // Busy ones are skipped.
        let picked = pick_free(&cands, |c| (c.account_id != 5).then_some(()));
        assert_eq!(picked.map(|(c, ())| c.account_id), Some(4));
        // Waiting ignores load: priority then LRU.
        assert_eq!(wait_target(&cands).map(|c| c.account_id), Some(6));
        let rest = &cands[..5];
        assert_eq!(wait_target(rest).map(|c| c.account_id), Some(5));
    }

    #[test]
    fn reasons() {
        assert_eq!(
            no_account_reason(&[], "m", None),
            ": no accounts are configured"
        );
        assert_eq!(
            no_account_reason(&[Unusable::ModelUnsupported; 2], "gpt-x", Some(1)),
            ": no account supports model gpt-x"
        );
        assert_eq!(
            no_account_reason(&[Unusable::RateLimited], "m", None),
            ": all accounts are rate-limited"
        );
        assert_eq!(
            no_account_reason(&[Unusable::RateLimited, Unusable::Inactive], "m", None),
            ": no usable account (1 disabled or in error, 1 rate-limited)"
        );
    }

    #[derive(Debug, Clone)]
    struct Gen {
        status: u8,
        schedulable: bool,
        maps_model: Option<bool>,
        excluded: bool,
        rate_limited: Option<i64>,
        overloaded: Option<i64>,
        priority: i32,
        concurrency: i32,
        in_use: u32,
        waiting: u32,
        last_used: Option<i64>,
    }

    fn gen_account() -> impl Strategy<Value = Gen> {
        (
            (0u8..4, any::<bool>(), proptest::option::of(any::<bool>())),
            (
                any::<bool>(),
                proptest::option::of(-5i64..5),
                proptest::option::of(-5i64..5),
            ),
            (0i32..4, -1i32..4, 0u32..5, 0u32..3),
            proptest::option::of(0i64..4),
        )
            .prop_map(|((st, sch, mm), (ex, rl, ov), (p, c, u, w), lu)| Gen {
                status: st,
                schedulable: sch,
                maps_model: mm,
                excluded: ex,
                rate_limited: rl,
                overloaded: ov,
                priority: p,
                concurrency: c,
                in_use: u,
                waiting: w,
                last_used: lu,
            })
    }

    proptest! {
        #[test]
        fn selection_picks_the_minimum_usable_candidate(gens in proptest::collection::vec(gen_account(), 0..12)) {
            let model = "gpt-5";
            let mut accounts = Vec::new();
            let mut usage = std::collections::HashMap::new();
            let mut excluded = Vec::new();
            for (i, g) in gens.iter().enumerate() {
                let id = i64::try_from(i).unwrap() + 1;
                let mut a = account(id);
                a.status = if g.status == 0 { AccountStatus::Disabled } else { AccountStatus::Active };
                a.schedulable = g.schedulable;
                match g.maps_model {
                    Some(true) => { a.model_mapping.insert(model.into(), "x".into()); }
                    Some(false) => { a.model_mapping.insert("other".into(), "x".into()); }
                    None => {}
                }
                if g.excluded { excluded.push(id); }
                a.rate_limited_until_ms = g.rate_limited.map(|d| NOW + d);
                a.overloaded_until_ms = g.overloaded.map(|d| NOW + d);
                a.priority = g.priority;
                a.concurrency = g.concurrency;
                usage.insert(id, Usage { in_use: g.in_use, waiting: g.waiting });
                accounts.push((a, g.last_used));
            }
            let cands: Vec<Candidate> = accounts
                .iter()
                .filter(|(a, _)| unusable(a, model, &excluded, NOW).is_none())
                .map(|(a, lu)| Candidate {
                    account_id: a.id,
                    priority: priority_for(a, None),
                    load: load_percent(usage[&a.id], a.concurrency),
                    last_used_ms: *lu,
                })
                .collect();
            let conc = |id: i64| accounts.iter().find(|(a, _)| a.id == id).map(|(a, _)| a.concurrency).unwrap();
            // The slot rule of SlotTable::try_acquire.
            let free = |c: &Candidate| {
                let u = usage[&c.account_id];
                let limit = super::super::slots::Limit::from_concurrency(conc(c.account_id));
                let room = match limit {
                    super::super::slots::Limit::Unlimited => true,
                    super::super::slots::Limit::Max(n) => u.in_use < n,
                };
                u.waiting == 0 && room
            };
            let picked = pick_free(&cands, |c| free(c).then_some(()));
            let eligible: Vec<&Candidate> = cands.iter().filter(|c| c.load < 100 && free(c)).collect();
            match picked {
                None => prop_assert!(eligible.is_empty()),
                Some((c, ())) => {
                    let (a, _) = accounts.iter().find(|(a, _)| a.id == c.account_id).unwrap();
                    prop_assert_eq!(unusable(a, model, &excluded, NOW), None);
                    prop_assert!(c.load < 100);
                    for e in &eligible {
                        prop_assert!(c.load_key() <= e.load_key());
                    }
                }
            }
            if let Some(w) = wait_target(&cands) {
                for c in &cands {
                    prop_assert!(w.wait_key() <= c.wait_key());
                }
            }
        }
    }
}
