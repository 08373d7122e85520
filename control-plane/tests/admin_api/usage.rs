//! Prices and usage queries.

use tollgate_control_plane::model::UsageRecord;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;
use tollgate_shared::proto::admin::v1 as pb;
use tonic::Code;

use crate::admin_support::{Harness, assert_code};
use crate::helpers::{DAY_MS, new_key, new_user};
use tollgate_tests::Backend;

pub(crate) async fn prices_and_usage_queries(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();

    // Prices: seeded defaults, upsert, get, delete.
    let defaults = c
        .list_prices(pb::ListPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        defaults.prices.iter().any(|p| p.model == "gpt-5"),
        "{defaults:?}"
    );
    let set = c
        .set_price(pb::SetPriceRequest {
            price: Some(pb::Price {
                model: "my-model".into(),
                input_per_mtok_nanos: 1_250_000_000,
                output_per_mtok_nanos: 10_000_000_000,
                cached_input_per_mtok_nanos: 125_000_000,
                updated_at_ms: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(set.updated_at_ms > 0);
    let got = c
        .get_price(pb::GetPriceRequest {
            model: "my-model".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, set);
    c.delete_price(pb::DeletePriceRequest {
        model: "my-model".into(),
    })
    .await
    .unwrap();
    assert_code(
        c.get_price(pb::GetPriceRequest {
            model: "my-model".into(),
        })
        .await,
        Code::NotFound,
        "my-model",
    );

    // Usage, written the way billing does, read through the API.
    let user = new_user(&mut c, "usage@example.com").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    let day0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    for (i, (at, model, cost)) in [
        (day0 + 1_000, "gpt-5", 100),
        (day0 + 2_000, "gpt-5-mini", 20),
        (day0 + DAY_MS + 5, "gpt-5", 300),
    ]
    .into_iter()
    .enumerate()
    {
        let rec = usage_record(&format!("req-{i}"), key.id, user.id, model, cost, at);
        assert!(h.store.insert_usage(&rec).await.unwrap());
    }
    let q = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                key_id: key.id,
                ..Default::default()
            }),
            page: Some(pb::PageRequest {
                limit: 2,
                page_token: String::new(),
            }),
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.records.len(), 2);
    assert!(!q.next_page_token.is_empty());
    let totals = q.totals.unwrap();
    assert_eq!(
        (
            totals.requests,
            totals.total_cost_nanos,
            totals.input_tokens
        ),
        (3, 420, 30)
    );
    let rest = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                key_id: key.id,
                ..Default::default()
            }),
            page: Some(pb::PageRequest {
                limit: 2,
                page_token: q.next_page_token,
            }),
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.records[0].request_id, "req-2");
    assert_eq!(rest.records[0].rate_multiplier, "1");

    // Newest first (the CLI's order), paged the same way.
    let newest = |page_token: String| pb::QueryUsageRequest {
        filter: Some(pb::UsageFilter {
            key_id: key.id,
            ..Default::default()
        }),
        page: Some(pb::PageRequest {
            limit: 2,
            page_token,
        }),
        newest_first: true,
    };
    let first = c
        .query_usage(newest(String::new()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = first
        .records
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["req-2", "req-1"]);
    assert_eq!(first.totals.unwrap().requests, 3);
    let second = c
        .query_usage(newest(first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = second
        .records
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["req-0"]);
    assert!(second.next_page_token.is_empty());

    let by_model = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                model: "gpt-5".into(),
                ..Default::default()
            }),
            page: None,
            newest_first: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_model.totals.unwrap().total_cost_nanos, 400);

    let series = c
        .usage_series(pb::UsageSeriesRequest {
            filter: Some(pb::UsageFilter {
                user_id: user.id,
                from_ms: Some(day0),
                to_ms: Some(day0 + 2 * DAY_MS),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let days: Vec<_> = series
        .days
        .iter()
        .map(|d| (d.day.as_str(), d.totals.unwrap().total_cost_nanos))
        .collect();
    assert_eq!(days, [("2026-01-01", 120), ("2026-01-02", 300)]);
    assert_eq!(series.totals.unwrap().requests, 3);

    // GetKey and ListKeys carry the key's usage totals.
    let k = c
        .get_key(pb::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    let u = k.usage.unwrap();
    assert_eq!(
        (u.requests, u.total_cost_nanos, u.actual_cost_nanos),
        (3, 420, 420)
    );
    let listed = c
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys[0].usage.unwrap().requests, 3);

    h.stop().await;
}

fn usage_record(
    request_id: &str,
    key_id: i64,
    user_id: i64,
    model: &str,
    cost: i64,
    at: i64,
) -> UsageRecord {
    UsageRecord {
        request_id: request_id.into(),
        key_id,
        user_id,
        group_id: None,
        subscription_id: None,
        account_id: 1,
        model: model.into(),
        upstream_model: model.into(),
        input_tokens: 10,
        output_tokens: 5,
        cached_tokens: 0,
        reasoning_tokens: 0,
        input_cost_nanos: cost,
        output_cost_nanos: 0,
        cached_cost_nanos: 0,
        total_cost_nanos: cost,
        actual_cost_nanos: cost,
        rate_multiplier: Multiplier::ONE,
        account_cost_multiplier: Multiplier::ONE,
        billing_mode: BillingMode::Balance,
        stream: false,
        duration_ms: 100,
        first_token_ms: None,
        user_agent: String::new(),
        client_ip: String::new(),
        reasoning_effort: String::new(),
        estimated: false,
        recovered: false,
        created_at_ms: at,
        client_request_id: String::new(),
        upstream_request_id: String::new(),
    }
}
