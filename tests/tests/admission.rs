//! Admission through real data planes: user concurrency across data planes, the wait
//! queue limit, slot timeout with SSE pings, the billing re-check after the wait, sticky
//! sessions, load-aware choice, failover and the mapping table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};
use tollgate_tests::sse::parse_sse;

fn body(stream: bool) -> Value {
    json!({"model": "gpt-5.1", "input": "hi", "stream": stream})
}

#[tokio::test]
async fn user_concurrency_is_enforced_across_data_planes() {
    let gw = Gateway::start(2).await;
    let user = gw.user(2, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    gw.up
        .set_default(Script::success().delay(Duration::from_millis(300)));

    let mut handles = tokio::task::JoinSet::new();
    for i in 0..6 {
        let http = gw.http.clone();
        let url = gw.responses_url(i % 2);
        let key = key.clone();
        handles.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body(i % 3 == 0))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        });
    }
    let statuses: Vec<u16> = handles.join_all().await;
    assert_eq!(statuses, vec![200; 6], "all six complete");
    assert_eq!(gw.up.count(), 6);
    assert!(
        gw.up.max_in_flight() <= 2,
        "at most 2 upstream requests at once, saw {}",
        gw.up.max_in_flight()
    );
    assert_eq!(
        gw.up.max_in_flight(),
        2,
        "and the two slots were used in parallel"
    );
}

#[tokio::test]
async fn wait_queue_overflow_is_refused() {
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let gate = Gate::new();
    gw.up.set_default(Script::success().hold(&gate));

    // max(1, 1) + 20 = 21 may be waiting or running.
    let mut handles = tokio::task::JoinSet::new();
    for _ in 0..21 {
        let http = gw.http.clone();
        let url = gw.responses_url(0);
        let key = key.clone();
        handles.spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&body(false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    gw.up.wait_for_in_flight(1).await;
    // Let the other 20 reach the control plane's queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = gw.post(0, &key, body(false)).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "Too many pending requests, please retry later"
    );
    gate.open();
    let statuses = handles.join_all().await;
    assert_eq!(statuses, vec![200; 21]);
}

#[tokio::test]
async fn slot_timeout_pings_streaming_clients_then_errors_as_event() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| c.user_wait_timeout_ms = 6_500),
        data_plane: |c| c.flow.ping_interval_secs = 5,
        ..Default::default()
    })
    .await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    let first = gw.spawn_post(0, &key, body(false));
    gw.up.wait_for_in_flight(1).await;

    let r = gw.post(0, &key, body(true)).await;
    assert_eq!(r.status(), 200, "the first ping commits 200");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let sse = parse_sse(&text);
    assert!(!sse.comments.is_empty(), "pinged while waiting: {text:?}");
    let last = sse.last().unwrap();
    let data = last.json();
    assert_eq!(last.name(), "error");
    assert_eq!(data["error"]["type"], "rate_limit_error");
    assert_eq!(
        data["error"]["message"],
        "Concurrency limit exceeded for user, please retry later"
    );

    // A non-streaming request times out with a plain 429.
    let r = gw.post(0, &key, body(false)).await;
    assert_eq!(r.status(), 429);
    gate.open();
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn billing_is_rechecked_after_the_wait() {
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    let first = gw.spawn_post(0, &key, body(false));
    gw.up.wait_for_in_flight(1).await;
    let http = gw.http.clone();
    let (url, k) = (gw.responses_url(0), key.clone());
    #[allow(clippy::disallowed_methods)]
    let second = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(k)
            .json(&body(false))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.admin
        .clone()
        .adjust_balance(admin::AdjustBalanceRequest {
            user_id: user,
            op: admin::BalanceOp::Set as i32,
            amount_nanos: 0,
            reason: "spent elsewhere".into(),
            allow_negative: false,
        })
        .await
        .unwrap();
    gate.open();
    assert_eq!(first.await.unwrap(), 200);
    let (status, v) = second.await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(v["error"]["type"], "billing_error");
    assert_eq!(v["error"]["message"], "insufficient balance");
    assert_eq!(gw.up.count(), 1);
}

#[tokio::test]
async fn sticky_sessions_bind_and_move_when_the_account_becomes_unusable() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("acct-a", group, 10, 5).await;
    gw.api_key_account("acct-b", group, 10, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let send = |session: &'static str| {
        gw.http
            .post(gw.responses_url(0))
            .bearer_auth(&key)
            .header("session_id", session)
            .json(&body(false))
            .send()
    };
    assert_eq!(send("thread-1").await.unwrap().status(), 200);
    let first = gw.up.last().unwrap().bearer.unwrap();
    for _ in 0..4 {
        assert_eq!(send("thread-1").await.unwrap().status(), 200);
        assert_eq!(
            gw.up.last().unwrap().bearer.unwrap(),
            first,
            "bound to one account"
        );
    }
    // That account is rate-limited: the request fails over and the session rebinds.
    gw.up
        .push_for(&first, Script::rate_limited().retry_after(600));
    assert_eq!(send("thread-1").await.unwrap().status(), 200);
    let second = gw.up.last().unwrap().bearer.unwrap();
    assert_ne!(second, first);
    for _ in 0..3 {
        assert_eq!(send("thread-1").await.unwrap().status(), 200);
        assert_eq!(gw.up.last().unwrap().bearer.unwrap(), second);
    }
    assert_eq!(
        gw.up.count_for(&first),
        6,
        "the rate-limited account got nothing more"
    );
}

#[tokio::test]
async fn selection_prefers_priority_then_load() {
    let gw = Gateway::start(1).await;
    let user = gw.user(10, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("low-prio", group, 20, 1).await;
    gw.api_key_account("best", group, 1, 1).await;
    gw.api_key_account("second", group, 5, 1).await;
    let (_, key) = gw.key(user, Some(group)).await;
    assert_eq!(gw.post(0, &key, body(false)).await.status(), 200);
    assert_eq!(
        gw.up.last().unwrap().bearer.as_deref(),
        Some("best"),
        "lowest priority value first"
    );

    // Hold "best" busy (concurrency 1): the next request takes "second".
    let gate = Gate::new();
    gw.up.push_for("best", Script::success().hold(&gate));
    let held = gw.spawn_post(0, &key, body(false));
    gw.up.wait_for_in_flight(1).await;
    assert_eq!(gw.post(0, &key, body(false)).await.status(), 200);
    assert_eq!(gw.up.last().unwrap().bearer.as_deref(), Some("second"));
    gate.open();
    assert_eq!(held.await.unwrap(), 200);
}

#[tokio::test]
async fn failover_to_the_next_account_is_invisible_to_the_client() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("first", group, 1, 5).await;
    gw.api_key_account("second", group, 2, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    for script in [
        Script::error(500),
        Script::error(502),
        Script::overloaded(),
        Script::close_before_response(),
    ] {
        gw.up.clear_scripts();
        gw.up.push_for("first", script);
        let r = gw.post(0, &key, body(true)).await;
        assert_eq!(r.status(), 200);
        let events = parse_sse(&r.text().await.unwrap());
        assert_eq!(events.last().unwrap().name(), "response.completed");
        assert_eq!(gw.up.last().unwrap().bearer.as_deref(), Some("second"));
        // The overload cool-down parks "first"; clear it for the next case.
        let accounts = gw
            .admin
            .clone()
            .list_accounts(admin::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        for a in accounts.accounts {
            gw.admin
                .clone()
                .clear_account_rate_limit(admin::AccountIdRequest { id: a.id })
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn connection_refused_fails_over() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    let refused = tollgate_tests::fake_upstream::refused_url().await;
    gw.account(admin::CreateAccountRequest {
        name: "dead".into(),
        credential: Some(admin::create_account_request::Credential::ApiKey(
            admin::ApiKeyCredential {
                api_key: "dead".into(),
            },
        )),
        base_url: refused,
        priority: 1,
        groups: vec![admin::AccountGroup {
            group_id: group,
            priority: 1,
        }],
        ..Default::default()
    })
    .await;
    gw.api_key_account("alive", group, 2, 5).await;
    let (_, key) = gw.key(user, Some(group)).await;
    assert_eq!(gw.post(0, &key, body(false)).await.status(), 200);
    assert_eq!(gw.up.last().unwrap().bearer.as_deref(), Some("alive"));
}

#[tokio::test]
async fn mapping_table_when_switches_run_out() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    for i in 0..5 {
        gw.api_key_account(&format!("acct-{i}"), group, i, 5).await;
    }
    let (_, key) = gw.key(user, Some(group)).await;
    let cases = [
        (
            401,
            502,
            "upstream_error",
            "Upstream authentication failed, please contact administrator",
        ),
        (
            403,
            502,
            "upstream_error",
            "Upstream access forbidden, please contact administrator",
        ),
        (
            429,
            429,
            "rate_limit_error",
            "Upstream rate limit exceeded, please retry later",
        ),
        (
            529,
            503,
            "upstream_error",
            "Upstream service overloaded, please retry later",
        ),
        (
            503,
            502,
            "upstream_error",
            "Upstream service temporarily unavailable",
        ),
        (402, 502, "upstream_error", "Upstream request failed"),
    ];
    for (upstream, status, ty, message) in cases {
        // Clear every account's health so each case starts with all five usable.
        let accounts = gw
            .admin
            .clone()
            .list_accounts(admin::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        for a in &accounts.accounts {
            gw.admin
                .clone()
                .clear_account_error(admin::AccountIdRequest { id: a.id })
                .await
                .unwrap();
            gw.admin
                .clone()
                .clear_account_rate_limit(admin::AccountIdRequest { id: a.id })
                .await
                .unwrap();
        }
        gw.up.clear_scripts();
        gw.up.set_default(Script::error(upstream));
        let before = gw.up.count();
        let r = gw.post(0, &key, body(false)).await;
        assert_eq!(r.status().as_u16(), status, "upstream {upstream}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], ty, "upstream {upstream}");
        assert_eq!(v["error"]["message"], message, "upstream {upstream}");
        assert_eq!(
            gw.up.count() - before,
            4,
            "first try + 3 switches (upstream {upstream})"
        );
    }
}

#[tokio::test]
async fn no_account_at_all_is_503() {
    let gw = Gateway::start(1).await;
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    let (_, key) = gw.key(user, Some(group)).await;
    let r = gw.post(0, &key, body(false)).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("No available accounts"),
        "{v}"
    );
    eventually(
        "nothing reached the upstream",
        Duration::from_millis(10),
        || async { gw.up.count() == 0 },
    )
    .await;
}

#[tokio::test]
async fn clients_leaving_while_queued_leak_no_slot() {
    let gw = Gateway::start(1).await;
    let user = gw.user(1, 10).await;
    let group = gw.group("1").await;
    gw.api_key_account("upstream-a", group, 10, 10).await;
    let (_, key) = gw.key(user, Some(group)).await;
    let gate = Gate::new();
    gw.up.push(Script::success().hold(&gate));
    let first = gw.spawn_post(0, &key, body(false));
    gw.up.wait_for_in_flight(1).await;

    // Five clients queue behind it and give up (client-side timeout) at staggered times,
    // one of them right as the slot frees.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..5u64 {
        let http = gw.http.clone();
        let (url, k) = (gw.responses_url(0), key.clone());
        set.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(k)
                .json(&body(i % 2 == 0))
                .timeout(Duration::from_millis(200 + 100 * i))
                .send()
                .await;
            match r {
                Ok(r) => r.bytes().await.is_err(),
                Err(e) => e.is_timeout(),
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    gate.open();
    assert_eq!(first.await.unwrap(), 200);
    let _ = set.join_all().await;
    // Every abandoned wait gave its place back and no grant leaked: the user's single
    // slot serves the next requests at once.
    for _ in 0..3 {
        let r = gw
            .http
            .post(gw.responses_url(0))
            .bearer_auth(&key)
            .json(&body(false))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
