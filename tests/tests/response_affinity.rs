//! Response-id affinity through real HTTP: a response belongs to the account (upstream
//! organisation) that created it — the fake upstream refuses another credential's ids
//! with OpenAI's 404 — so a conversation chained by `previous_response_id`, and the
//! retrieve / delete / cancel / input_items calls, must reach that account from any data
//! plane, and only for the user who created it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually_some;
use tollgate_tests::fake_upstream::Operation;
use tollgate_tests::fixture::Gateway;
use tollgate_tests::sse::parse_sse;

const BEARERS: [&str; 3] = ["up-a", "up-b", "up-c"];

/// A user, a group of three equal API-key accounts and a key: without affinity, the
/// least-recently-used rule spreads consecutive requests over all three.
async fn three_accounts(gw: &Gateway) -> (i64, Vec<i64>, String) {
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    let mut accounts = Vec::new();
    for b in BEARERS {
        accounts.push(gw.api_key_account(b, group, 10, 5).await);
    }
    let (_, key) = gw.key(user, Some(group)).await;
    (group, accounts, key)
}

/// One turn; returns the new response id and the account (bearer) that served it.
async fn turn(
    gw: &Gateway,
    dp: usize,
    key: &str,
    previous: Option<&str>,
    stream: bool,
) -> (String, String) {
    let mut body = json!({"model": "gpt-5.1", "input": "hi", "stream": stream});
    if let Some(p) = previous {
        body["previous_response_id"] = json!(p);
    }
    let r = gw.post(dp, key, body).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let id = if stream {
        let events = parse_sse(&text);
        assert_eq!(
            events.last().unwrap().name(),
            "response.completed",
            "{text}"
        );
        events[0].json()["response"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    } else {
        serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let bearer = gw.up.last().unwrap().bearer.unwrap();
    (id, bearer)
}

async fn call(
    gw: &Gateway,
    dp: usize,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> (u16, Value) {
    let r = gw
        .http
        .request(method, format!("{}{path}", gw.dp(dp).proxy_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(r.headers().contains_key("x-request-id"));
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn usage_count(gw: &Gateway) -> usize {
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
        .len()
}

#[tokio::test]
async fn a_chained_conversation_stays_on_the_account_that_created_it() {
    let gw = Gateway::start(2).await;
    let (_, _, key) = three_accounts(&gw).await;

    // Unchained requests do spread over the accounts (so staying put below is affinity,
    // not chance).
    let mut spread = HashSet::new();
    for _ in 0..3 {
        spread.insert(turn(&gw, 0, &key, None, false).await.1);
    }
    assert_eq!(spread.len(), 3, "{spread:?}");

    for first_stream in [false, true] {
        let (mut id, owner) = turn(&gw, 0, &key, None, first_stream).await;
        // Turns alternate data planes and JSON / SSE; each continues the previous one.
        for i in 0..6 {
            let (next, bearer) = turn(&gw, i % 2, &key, Some(&id), i % 3 == 0).await;
            assert_eq!(bearer, owner, "turn {i} left the account that created {id}");
            assert_eq!(
                gw.up.last().unwrap().body_json["previous_response_id"],
                json!(id)
            );
            id = next;
        }
    }
}

#[tokio::test]
async fn retrieve_input_items_cancel_and_delete_reach_the_owner_unbilled() {
    let gw = Gateway::start(2).await;
    let (_, _, key) = three_accounts(&gw).await;
    let (id, owner) = turn(&gw, 0, &key, None, false).await;
    eventually_some(
        "the turn's usage record",
        Duration::from_secs(10),
        || async { (usage_count(&gw).await == 1).then_some(()) },
    )
    .await;

    let path = format!("/v1/responses/{id}");
    let (s, body) = call(&gw, 1, reqwest::Method::GET, &path, &key).await;
    assert_eq!((s, body["id"].as_str()), (200, Some(id.as_str())), "{body}");
    let (s, body) = call(
        &gw,
        0,
        reqwest::Method::GET,
        &format!("{path}/input_items"),
        &key,
    )
    .await;
    assert_eq!((s, body["object"].as_str()), (200, Some("list")), "{body}");
    assert_eq!(body["data"][0]["content"][0]["text"], "hi");
    let (s, body) = call(
        &gw,
        1,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        &key,
    )
    .await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (s, body) = call(&gw, 0, reqwest::Method::DELETE, &path, &key).await;
    assert_eq!((s, body["deleted"].as_bool()), (200, Some(true)), "{body}");
    // Deleted upstream: the owner's own 404 passes through.
    let (s, _) = call(&gw, 1, reqwest::Method::GET, &path, &key).await;
    assert_eq!(s, 404);

    let ops = gw.up.operations();
    assert_eq!(
        ops.iter().map(|(op, _)| *op).collect::<Vec<_>>(),
        [
            Operation::Retrieve,
            Operation::InputItems,
            Operation::Cancel,
            Operation::Delete,
            Operation::Retrieve
        ]
    );
    for (op, rec) in &ops {
        assert_eq!(rec.bearer.as_deref(), Some(owner.as_str()), "{op:?}");
        assert_eq!(rec.path.split('/').nth(3), Some(id.as_str()));
    }

    // Never billed: the next billed request's record is the only one after the first.
    turn(&gw, 0, &key, None, false).await;
    eventually_some(
        "the second usage record",
        Duration::from_secs(10),
        || async { (usage_count(&gw).await >= 2).then_some(()) },
    )
    .await;
    assert_eq!(usage_count(&gw).await, 2);
}

#[tokio::test]
async fn another_users_key_cannot_reach_the_response() {
    let gw = Gateway::start(1).await;
    let (group, _, key) = three_accounts(&gw).await;
    let (id, _) = turn(&gw, 0, &key, None, false).await;
    let stranger = gw.user(5, 10).await;
    let (_, other_key) = gw.key(stranger, Some(group)).await;
    let upstream_calls = gw.up.count();

    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/responses/{id}")),
        (
            reqwest::Method::GET,
            format!("/v1/responses/{id}/input_items"),
        ),
        (reqwest::Method::POST, format!("/v1/responses/{id}/cancel")),
        (reqwest::Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let (s, body) = call(&gw, 0, method.clone(), &path, &other_key).await;
        assert_eq!(s, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "response_not_found");
    }
    let r = gw
        .post(
            0,
            &other_key,
            json!({"model": "gpt-5.1", "input": "hi", "previous_response_id": id}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "response_not_found");
    // Refused at the gateway: the upstream never saw the stranger's calls.
    assert!(gw.up.operations().is_empty());
    assert_eq!(gw.up.count(), upstream_calls);

    // An id the gateway never saw cannot be retrieved either.
    let (s, body) = call(
        &gw,
        0,
        reqwest::Method::GET,
        "/v1/responses/resp_unknown",
        &key,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("response_not_found"))
    );
}

#[tokio::test]
async fn a_gone_owner_is_a_clear_error_not_a_random_upstream_404() {
    let gw = Gateway::start(1).await;
    let (_, accounts, key) = three_accounts(&gw).await;
    let (id, owner) = turn(&gw, 0, &key, None, false).await;
    let owner_id = accounts[BEARERS.iter().position(|b| *b == owner).unwrap()];
    gw.admin
        .clone()
        .delete_account(admin::DeleteAccountRequest { id: owner_id })
        .await
        .unwrap();
    let upstream_calls = gw.up.count();
    let r = gw
        .post(
            0,
            &key,
            json!({"model": "gpt-5.1", "input": "again", "previous_response_id": id}),
        )
        .await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "response_account_unavailable",
        "{body}"
    );
    assert_eq!(gw.up.count(), upstream_calls, "no other account was tried");
    let (s, body) = call(
        &gw,
        0,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        &key,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("response_account_unavailable"))
    );
}
