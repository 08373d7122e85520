//! Usage records: idempotent insert, queries, totals, daily series and filters.

use std::collections::BTreeSet;

use tollgate_control_plane::model::{Page, UsageFilter, UsageRecord, UsageTotals};
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;

use crate::fixtures::{DAY_MS, page, usage};

pub(crate) async fn case_usage_insert_idempotent(store: &Store) {
    let r = usage("req-1", 1_700_000_000_000);
    assert!(store.insert_usage(&r).await.unwrap());
    let mut replay = r.clone();
    replay.actual_cost_nanos = 999_999_999;
    replay.input_tokens = 1;
    assert!(!store.insert_usage(&replay).await.unwrap());
    let (page, totals) = store
        .query_usage(&UsageFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(
        page.items,
        vec![r.clone()],
        "every field round-trips; replay ignored"
    );
    assert_eq!(page.next_after_id, None);
    assert_eq!(
        totals,
        UsageTotals {
            requests: 1,
            input_tokens: 1000,
            output_tokens: 200,
            cached_tokens: 100,
            total_cost_nanos: 3_137_500,
            actual_cost_nanos: 4_706_250,
        }
    );

    // Optional fields and flags round-trip both ways.
    let mut other = usage("req-2", 1_700_000_000_001);
    other.group_id = None;
    other.subscription_id = Some(9);
    other.first_token_ms = None;
    other.stream = false;
    other.estimated = true;
    other.billing_mode = BillingMode::Subscription;
    other.rate_multiplier = Multiplier::ZERO;
    assert!(store.insert_usage(&other).await.unwrap());
    let (page, _) = store
        .query_usage(&UsageFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(page.items, vec![r, other]);
}

pub(crate) async fn case_usage_query_pagination_and_totals(store: &Store) {
    let t0 = 1_700_000_000_000;
    let mut want = Vec::new();
    for i in 0..10_i64 {
        let mut r = usage(&format!("pg-{i}"), t0 + i);
        r.input_tokens = i;
        r.actual_cost_nanos = 100 + i;
        r.key_id = if i < 8 { 1 } else { 2 };
        store.insert_usage(&r).await.unwrap();
        want.push(r);
    }
    let filter = UsageFilter {
        key_id: Some(1),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (p, totals) = store.query_usage(&filter, page(after, 3)).await.unwrap();
        pages += 1;
        // Totals cover the whole filter on every page, not the page.
        assert_eq!(totals.requests, 8);
        assert_eq!(totals.input_tokens, (0..8).sum::<i64>());
        assert_eq!(
            totals.actual_cost_nanos,
            (0..8).map(|i| 100 + i).sum::<i64>()
        );
        assert_eq!(totals.output_tokens, 8 * 200);
        assert_eq!(totals.cached_tokens, 8 * 100);
        assert_eq!(totals.total_cost_nanos, 8 * 3_137_500);
        seen.extend(p.items);
        match p.next_after_id {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, want[..8].to_vec(), "no overlap, no gap, oldest first");
    assert_eq!(store.usage_totals(&filter).await.unwrap().requests, 8);
}

pub(crate) async fn case_usage_series_by_utc_day(store: &Store) {
    // 2024-03-09 23:59:59.999 UTC and 2024-03-10 00:00:00.000 UTC.
    let midnight = 1_710_028_800_000;
    let mut a = usage("d-1", midnight - 1);
    a.output_tokens = 1;
    let mut b = usage("d-2", midnight);
    b.output_tokens = 10;
    let mut c = usage("d-3", midnight + DAY_MS - 1);
    c.output_tokens = 100;
    for r in [&c, &a, &b] {
        store.insert_usage(r).await.unwrap();
    }
    let (days, totals) = store.usage_series(&UsageFilter::default()).await.unwrap();
    let summary: Vec<(&str, i64, i64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.totals.requests, d.totals.output_tokens))
        .collect();
    assert_eq!(summary, vec![("2024-03-09", 1, 1), ("2024-03-10", 2, 110)]);
    assert_eq!(days[1].totals.actual_cost_nanos, 2 * 4_706_250);
    assert_eq!(totals.requests, 3);
    assert_eq!(totals.output_tokens, 111);
    assert_eq!(
        totals,
        store.usage_totals(&UsageFilter::default()).await.unwrap()
    );

    let only_second = UsageFilter {
        from_ms: Some(midnight),
        ..Default::default()
    };
    let (days, totals) = store.usage_series(&only_second).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].day, "2024-03-10");
    assert_eq!(totals.requests, 2);

    let (days, totals) = store
        .usage_series(&UsageFilter {
            model: Some("nothing".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(days.is_empty());
    assert_eq!(totals, UsageTotals::default());
}

pub(crate) async fn case_usage_filters(store: &Store) {
    let t0 = 1_700_000_000_000;
    let mut recs = Vec::new();
    for i in 0..12_i64 {
        let mut r = usage(&format!("f-{i}"), t0 + i * 1000);
        r.key_id = 10 + i % 2;
        r.user_id = 20 + i % 3;
        r.account_id = 30 + i % 4;
        r.group_id = if i % 5 == 0 { None } else { Some(40 + i % 2) };
        r.model = if i % 3 == 0 { "gpt-5.1-codex" } else { "gpt-5" }.to_owned();
        store.insert_usage(&r).await.unwrap();
        recs.push(r);
    }
    let check = |name: &'static str, f: UsageFilter, pred: Box<dyn Fn(&UsageRecord) -> bool>| {
        let want: BTreeSet<String> = recs
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.request_id.clone())
            .collect();
        (name, f, want)
    };
    let cases = vec![
        check(
            "key",
            UsageFilter {
                key_id: Some(11),
                ..Default::default()
            },
            Box::new(|r| r.key_id == 11),
        ),
        check(
            "user",
            UsageFilter {
                user_id: Some(22),
                ..Default::default()
            },
            Box::new(|r| r.user_id == 22),
        ),
        check(
            "account",
            UsageFilter {
                account_id: Some(33),
                ..Default::default()
            },
            Box::new(|r| r.account_id == 33),
        ),
        check(
            "group",
            UsageFilter {
                group_id: Some(40),
                ..Default::default()
            },
            Box::new(|r| r.group_id == Some(40)),
        ),
        check(
            "model",
            UsageFilter {
                model: Some("gpt-5.1-codex".into()),
                ..Default::default()
            },
            Box::new(|r| r.model == "gpt-5.1-codex"),
        ),
        check(
            "time range [from, to)",
            UsageFilter {
                from_ms: Some(t0 + 3000),
                to_ms: Some(t0 + 7000),
                ..Default::default()
            },
            Box::new(move |r| r.created_at_ms >= t0 + 3000 && r.created_at_ms < t0 + 7000),
        ),
        check(
            "combined",
            UsageFilter {
                key_id: Some(10),
                user_id: Some(20),
                model: Some("gpt-5.1-codex".into()),
                from_ms: Some(t0),
                ..Default::default()
            },
            Box::new(|r| r.key_id == 10 && r.user_id == 20 && r.model == "gpt-5.1-codex"),
        ),
    ];
    for (name, filter, want) in cases {
        assert!(!want.is_empty(), "{name}: fixture selects nothing");
        assert!(
            want.len() < recs.len(),
            "{name}: fixture selects everything"
        );
        let (p, totals) = store.query_usage(&filter, page(0, 100)).await.unwrap();
        let got: BTreeSet<String> = p.items.into_iter().map(|r| r.request_id).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(totals.requests, want.len() as i64, "{name}");
        assert_eq!(
            store.usage_totals(&filter).await.unwrap().requests,
            want.len() as i64,
            "{name}"
        );
        let (days, series_totals) = store.usage_series(&filter).await.unwrap();
        assert_eq!(series_totals, totals, "{name}");
        assert_eq!(days.len(), 1, "{name}");
    }
}
