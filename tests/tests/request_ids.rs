//! Request ids through real HTTP: every response — JSON, SSE, a refusal before
//! admission, an unknown route — carries the gateway's `x-request-id`, which is the
//! usage record's id; the client's own `x-request-id` is stored beside it and the
//! upstream's is returned as `upstream-request-id` and stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually_some;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::Gateway;

async fn record(gw: &Gateway, request_id: &str) -> admin::UsageRecord {
    eventually_some("the usage record", Duration::from_secs(10), || async {
        gw.admin
            .clone()
            .query_usage(admin::QueryUsageRequest {
                filter: None,
                page: Some(admin::PageRequest {
                    limit: 1000,
                    page_token: String::new(),
                }),
                newest_first: false,
            })
            .await
            .unwrap()
            .into_inner()
            .records
            .into_iter()
            .find(|r| r.request_id == request_id)
    })
    .await
}

fn gateway_id(r: &reqwest::Response) -> String {
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("not a UUID: {id}"));
    id
}

#[tokio::test]
async fn every_response_carries_the_usage_records_id() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;

    // JSON, with a client id and an upstream id.
    gw.up
        .push(Script::success().header("x-request-id", "req_up_json"));
    let r = gw
        .http
        .post(gw.responses_url(0))
        .bearer_auth(&b.key)
        .header("x-request-id", "client-trace-1")
        .json(&json!({"model": "gpt-5.1", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = gateway_id(&r);
    assert_eq!(r.headers()["upstream-request-id"], "req_up_json");
    let rec = record(&gw, &id).await;
    assert_eq!(rec.client_request_id, "client-trace-1");
    assert_eq!(rec.upstream_request_id, "req_up_json");

    // SSE, with a client id that needs sanitising (a control character, too long).
    gw.up
        .push(Script::success().header("x-request-id", "req_up_sse"));
    let long = format!("trace\t{}", "x".repeat(300));
    let r = gw
        .http
        .post(gw.responses_url(0))
        .bearer_auth(&b.key)
        .header("x-request-id", long)
        .json(&json!({"model": "gpt-5.1", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = gateway_id(&r);
    assert_eq!(r.headers()["upstream-request-id"], "req_up_sse");
    r.text().await.unwrap();
    let rec = record(&gw, &id).await;
    assert_eq!(rec.client_request_id, format!("trace{}", "x".repeat(123)));
    assert_eq!(rec.upstream_request_id, "req_up_sse");

    // Ids are per request, never reused.
    let r2 = gw
        .post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_ne!(gateway_id(&r2), id);
    assert!(
        record(&gw, &gateway_id(&r2))
            .await
            .client_request_id
            .is_empty()
    );
}

#[tokio::test]
async fn refusals_before_admission_and_upstream_errors_carry_it_too() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let url = gw.responses_url(0);

    let r = gw
        .http
        .post(&url)
        .bearer_auth("sk-not-a-key")
        .json(&json!({"model": "gpt-5.1", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    gateway_id(&r);

    let r = gw.http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    gateway_id(&r);

    let r = gw
        .http
        .get(format!("{}/v1/nothing-here", gw.dp(0).proxy_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    gateway_id(&r);

    let r = gw
        .http
        .post(&url)
        .bearer_auth(&b.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    gateway_id(&r);

    // An upstream 4xx passed through: still the gateway's id, and the upstream's beside it.
    gw.up
        .push(Script::error(400).header("x-request-id", "req_up_400"));
    let r = gw
        .post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 400);
    gateway_id(&r);
}
