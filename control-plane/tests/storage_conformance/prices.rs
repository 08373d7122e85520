//! Prices: seeded defaults, upsert, get and delete.

use tollgate_control_plane::model::Price;
use tollgate_control_plane::storage::Store;
use tollgate_shared::now_ms;

use crate::fixtures::{assert_invalid, assert_not_found};

pub(crate) async fn case_prices_seeded_defaults(store: &Store) {
    let prices = store.list_prices().await.unwrap();
    let table: Vec<(&str, i64, i64, i64)> = prices
        .iter()
        .map(|p| {
            (
                p.model.as_str(),
                p.input_per_mtok_nanos,
                p.output_per_mtok_nanos,
                p.cached_input_per_mtok_nanos,
            )
        })
        .collect();
    let mut want = vec![
        ("gpt-5", 1_250_000_000, 10_000_000_000, 125_000_000),
        ("gpt-5-mini", 250_000_000, 2_000_000_000, 25_000_000),
        ("gpt-5.1", 1_250_000_000, 10_000_000_000, 125_000_000),
        ("gpt-5.1-codex", 1_250_000_000, 10_000_000_000, 125_000_000),
        (
            "gpt-5.1-codex-max",
            1_250_000_000,
            10_000_000_000,
            125_000_000,
        ),
        ("gpt-5.1-codex-mini", 250_000_000, 2_000_000_000, 25_000_000),
        ("gpt-5.2", 1_750_000_000, 14_000_000_000, 175_000_000),
    ];
    want.sort_by(|a, b| a.0.cmp(b.0));
    // The spec's defaults (0002) are there, and the full table (0003) prices the
    // variants as themselves.
    for w in &want {
        assert!(table.contains(w), "{w:?}");
    }
    for w in [
        ("gpt-5-pro", 15_000_000_000, 120_000_000_000, 15_000_000_000),
        ("gpt-5-nano", 50_000_000, 400_000_000, 5_000_000),
        ("gpt-4.1-mini", 400_000_000, 1_600_000_000, 100_000_000),
        (
            "codex-mini-latest",
            1_500_000_000,
            6_000_000_000,
            375_000_000,
        ),
    ] {
        assert!(table.contains(&w), "{w:?}");
    }
    assert_eq!(table.len(), 44);
    let mut sorted = table.clone();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(table, sorted, "ordered by model");
    let aliases = store.list_price_aliases().await.unwrap();
    let aliases: Vec<(&str, &str)> = aliases
        .iter()
        .map(|a| (a.alias.as_str(), a.model.as_str()))
        .collect();
    assert_eq!(
        aliases,
        vec![
            ("chatgpt-4o-latest", "gpt-4o-2024-05-13"),
            ("gpt-5-codex-mini", "gpt-5.1-codex-mini")
        ]
    );
}

pub(crate) async fn case_prices_upsert_get_delete(store: &Store) {
    let before = now_ms();
    let p = store
        .upsert_price(Price {
            model: "o3".into(),
            input_per_mtok_nanos: 2_000_000_000,
            output_per_mtok_nanos: 8_000_000_000,
            cached_input_per_mtok_nanos: 500_000_000,
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    assert!(p.updated_at_ms >= before);
    assert_eq!(store.get_price("o3").await.unwrap(), Some(p.clone()));
    let q = store
        .upsert_price(Price {
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 2,
            cached_input_per_mtok_nanos: 0,
            ..p.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            q.input_per_mtok_nanos,
            q.output_per_mtok_nanos,
            q.cached_input_per_mtok_nanos
        ),
        (1, 2, 0)
    );
    assert_eq!(store.get_price("o3").await.unwrap(), Some(q));
    // o3 is in the shipped table: replaced, not added.
    assert_eq!(store.list_prices().await.unwrap().len(), 44);
    // Lookup is exact: no fallback to a family here.
    assert_eq!(store.get_price("o3-2025-01-01").await.unwrap(), None);

    // Overriding a seeded default.
    let g = store
        .upsert_price(Price {
            model: "gpt-5".into(),
            input_per_mtok_nanos: 1,
            output_per_mtok_nanos: 1,
            cached_input_per_mtok_nanos: 1,
            updated_at_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(store.get_price("gpt-5").await.unwrap(), Some(g));

    store.delete_price("o3").await.unwrap();
    assert_eq!(store.get_price("o3").await.unwrap(), None);
    assert_not_found(store.delete_price("o3").await, "price for model o3");
    assert_invalid(
        store
            .upsert_price(Price {
                model: "neg".into(),
                input_per_mtok_nanos: -1,
                output_per_mtok_nanos: 0,
                cached_input_per_mtok_nanos: 0,
                updated_at_ms: 0,
            })
            .await,
        "input_per_mtok_nanos",
    );
    assert_eq!(store.get_price("neg").await.unwrap(), None);
}
