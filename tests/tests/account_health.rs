//! Account health through a real data plane (accounts.md, "Outcomes and account health"):
//! the fake upstream answers 429 / 401 / 402 / 403 / 400 / 529 / 503, the data plane
//! reports the outcome, and the control plane's account state is read back through the
//! Admin API. Each test also checks what the state does to scheduling where it matters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script};
use tollgate_tests::fixture::{Gateway, Options};

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

// ---------------------------------------------------------------------------------------
// Helpers

fn body() -> Value {
    json!({"model": "gpt-5.1", "input": "hi", "stream": false})
}

/// A user with a key on a fresh group (no accounts yet): (group, key secret).
async fn user_and_group(gw: &Gateway) -> (i64, String) {
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    let (_, key) = gw.key(user, Some(group)).await;
    (group, key)
}

/// POSTs one request and returns its status (the body is drained).
async fn send(gw: &Gateway, key: &str) -> u16 {
    let r = gw.post(0, key, body()).await;
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

async fn get_account(gw: &Gateway, id: i64) -> admin::Account {
    gw.admin
        .clone()
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner()
}

/// Polls the account until `ready` holds (outcomes are reported asynchronously).
async fn wait_account(
    gw: &Gateway,
    id: i64,
    what: &str,
    ready: impl Fn(&admin::Account) -> bool,
) -> admin::Account {
    eventually(what, Duration::from_secs(10), || async {
        ready(&get_account(gw, id).await)
    })
    .await;
    get_account(gw, id).await
}

async fn clear_rate_limit(gw: &Gateway, id: i64) -> admin::Account {
    gw.admin
        .clone()
        .clear_account_rate_limit(admin::AccountIdRequest { id })
        .await
        .unwrap()
        .into_inner()
}

async fn clear_error(gw: &Gateway, id: i64) -> admin::Account {
    gw.admin
        .clone()
        .clear_account_error(admin::AccountIdRequest { id })
        .await
        .unwrap()
        .into_inner()
}

/// `at` is `offset` after a moment in `[before, after]`, give or take a second (resets
/// given as unix seconds are truncated).
#[track_caller]
fn assert_about(at: Option<i64>, offset: i64, before: i64, after: i64, what: &str) {
    let at = at.unwrap_or_else(|| panic!("{what}: not set"));
    let (lo, hi) = (before + offset - SEC, after + offset + SEC);
    assert!(
        (lo..=hi).contains(&at),
        "{what}: {at} is {:+} ms from now + {offset} ms (allowed {lo}..={hi})",
        at - (before + offset)
    );
}

/// Sends one request answered by `script` on the only account `id` (bearer `bearer`),
/// waits for the rate limit it causes, checks it is `offset` from now and that the
/// account did not go to `error`, then clears it for the next case.
async fn check_429(gw: &Gateway, key: &str, id: i64, bearer: &str, script: Script, offset: i64) {
    let what = format!("{script:?}");
    assert_eq!(
        get_account(gw, id).await.rate_limited_until_ms,
        None,
        "cleared"
    );
    gw.up.push_for(bearer, script);
    let before = now_ms();
    assert_eq!(send(gw, key).await, 429, "{what}");
    let a = wait_account(gw, id, "the rate limit is recorded", |a| {
        a.rate_limited_until_ms.is_some()
    })
    .await;
    assert_about(a.rate_limited_until_ms, offset, before, now_ms(), &what);
    assert_eq!(a.status, "active", "a 429 never errors the account: {what}");
    assert_eq!(a.error_message, "", "{what}");
    clear_rate_limit(gw, id).await;
}

/// Sends one request answered by `script` on the only account and waits until it is in
/// `error`; returns its error message.
async fn check_error(gw: &Gateway, key: &str, id: i64, bearer: &str, script: Script) -> String {
    gw.up.push_for(bearer, script);
    send(gw, key).await;
    let a = wait_account(gw, id, "the account goes to error", |a| a.status == "error").await;
    assert_eq!(a.rate_limited_until_ms, None);
    a.error_message
}

// ---------------------------------------------------------------------------------------
// 429: when the rate limit ends

#[tokio::test]
async fn rate_limit_reset_from_the_codex_usage_headers() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.oauth_account("at-codex", group, 1).await;
    let check = |script, offset| check_429(&gw, &key, id, "at-codex", script, offset);

    // (a) the 7-day window is exhausted, the 5-hour one is not: the 7-day reset wins,
    // although the 5-hour window resets much sooner.
    check(
        Script::rate_limited()
            .codex_primary(40.0, 3600, 300)
            .codex_secondary(100.0, 3 * 86_400, 10_080),
        3 * DAY,
    )
    .await;
    // (b) the 5-hour window is exhausted: its reset wins, although the 7-day one is later.
    check(
        Script::rate_limited()
            .codex_primary(100.0, 2 * 3600, 300)
            .codex_secondary(70.0, 5 * 86_400, 10_080),
        2 * HOUR,
    )
    .await;
    // Both exhausted: usable again only when both have reset.
    check(
        Script::rate_limited()
            .codex_primary(100.0, 2 * 3600, 300)
            .codex_secondary(100.0, 3 * 86_400, 10_080),
        3 * DAY,
    )
    .await;
    // (c) neither is exhausted: the largest reset known, whichever window it is.
    check(
        Script::rate_limited()
            .codex_primary(90.0, 1800, 300)
            .codex_secondary(95.0, 86_400, 10_080),
        DAY,
    )
    .await;
    check(
        Script::rate_limited()
            .codex_primary(60.0, 4 * 3600, 300)
            .codex_secondary(99.0, 3600, 10_080),
        4 * HOUR,
    )
    .await;
    // The headers beat the body and Retry-After.
    check(
        Script::rate_limited()
            .codex_primary(100.0, 5400, 300)
            .resets_in_seconds(60)
            .retry_after(30),
        90 * MIN,
    )
    .await;
}

#[tokio::test]
async fn rate_limit_reset_from_the_body_then_retry_after_then_five_minutes() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.api_key_account("sk-429", group, 1, 5).await;
    let check = |script, offset| check_429(&gw, &key, id, "sk-429", script, offset);
    let unix_now = || u64::try_from(now_ms() / SEC).unwrap();

    // The Codex backend's usage_limit_reached body (resets_at and resets_in_seconds).
    check(Script::usage_limit_reached(7200), 2 * HOUR).await;
    // `error.resets_at` alone (unix seconds).
    check(
        Script::rate_limited().resets_at(unix_now() + 3 * 3600),
        3 * HOUR,
    )
    .await;
    // `error.resets_in_seconds` alone.
    check(Script::rate_limited().resets_in_seconds(5400), 90 * MIN).await;
    // The body beats Retry-After.
    check(
        Script::rate_limited()
            .resets_in_seconds(1200)
            .retry_after(30),
        20 * MIN,
    )
    .await;
    // Retry-After alone.
    check(Script::rate_limited().retry_after(900), 15 * MIN).await;
    // Nothing at all: 5 minutes.
    check(Script::rate_limited(), 5 * MIN).await;
}

// ---------------------------------------------------------------------------------------
// 401 / 402 / 403 / disabled organization: the account goes to `error`

#[tokio::test]
async fn auth_payment_forbidden_and_disabled_organization_put_the_account_in_error() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.api_key_account("sk-dead", group, 1, 5).await;

    let cases = [
        (
            Script::error(401).message("Incorrect API key provided: sk-dead."),
            "Authentication failed (401): Incorrect API key provided: sk-dead.",
        ),
        (
            Script::error(402),
            "Payment required (402): Payment required: your workspace has been deactivated.",
        ),
        (
            Script::error(403),
            "Access forbidden (403): Country, region, or territory not supported",
        ),
    ];
    for (script, expected) in cases {
        let message = check_error(&gw, &key, id, "sk-dead", script).await;
        assert_eq!(message, expected);
        let a = clear_error(&gw, id).await;
        assert_eq!(
            (a.status.as_str(), a.error_message.as_str()),
            ("active", "")
        );
    }

    let message = check_error(&gw, &key, id, "sk-dead", Script::organization_disabled()).await;
    assert!(
        message.contains("This organization has been disabled."),
        "{message}"
    );
    clear_error(&gw, id).await;

    // An ordinary 400 is the client's fault: passed through, the account stays healthy.
    gw.up.push_for(
        "sk-dead",
        Script::bad_request("Unsupported parameter: 'foo'."),
    );
    assert_eq!(send(&gw, &key).await, 400);
    assert_eq!(send(&gw, &key).await, 200, "the account still serves");
    let a = get_account(&gw, id).await;
    assert_eq!(
        (a.status.as_str(), a.error_message.as_str()),
        ("active", "")
    );
}

// ---------------------------------------------------------------------------------------
// 529 and operator rules

#[tokio::test]
async fn overload_cools_down_for_the_configured_time() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| c.overload_cooldown_ms = 4 * 60_000),
        ..Options::default()
    })
    .await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.api_key_account("sk-529", group, 1, 5).await;
    gw.up.push_for("sk-529", Script::overloaded());
    let before = now_ms();
    send(&gw, &key).await;
    let a = wait_account(&gw, id, "the overload is recorded", |a| {
        a.overloaded_until_ms.is_some()
    })
    .await;
    assert_about(a.overloaded_until_ms, 4 * MIN, before, now_ms(), "529");
    assert_eq!(a.status, "active");
    assert_eq!(a.rate_limited_until_ms, None);
    assert_eq!(a.temp_unschedulable_until_ms, None);
}

#[tokio::test]
async fn an_operator_rule_turns_a_matching_503_into_temporary_unschedulability() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| {
            c.unschedulable_rules = r#"[{"status":503,"keywords":["CAPACITY"],"minutes":7}]"#
                .parse()
                .unwrap();
        }),
        ..Options::default()
    })
    .await;
    let (group, key) = user_and_group(&gw).await;
    let a = gw.api_key_account("sk-a", group, 1, 5).await;
    gw.api_key_account("sk-b", group, 2, 5).await;

    // A 503 without the keyword is only counted: A keeps serving.
    gw.up.push_for(
        "sk-a",
        Script::error(503).message("The engine is currently overloaded."),
    );
    assert_eq!(send(&gw, &key).await, 200, "failed over to B");
    assert_eq!(gw.up.count_for("sk-b"), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 2, "A is still first choice");
    assert_eq!(get_account(&gw, a).await.temp_unschedulable_until_ms, None);

    // With the keyword (any case, message or body): A is left out for 7 minutes.
    gw.up.push_for(
        "sk-a",
        Script::error(503).message("Model is at Capacity, try again later"),
    );
    let before = now_ms();
    assert_eq!(send(&gw, &key).await, 200, "failed over to B");
    let acct = wait_account(&gw, a, "the rule applies", |a| {
        a.temp_unschedulable_until_ms.is_some()
    })
    .await;
    assert_about(
        acct.temp_unschedulable_until_ms,
        7 * MIN,
        before,
        now_ms(),
        "rule",
    );
    assert_eq!(acct.temp_unschedulable_reason, "rule: 503 capacity");
    assert_eq!(acct.status, "active");
    let (a_before, b_before) = (gw.up.count_for("sk-a"), gw.up.count_for("sk-b"));
    for _ in 0..3 {
        assert_eq!(send(&gw, &key).await, 200);
    }
    assert_eq!(gw.up.count_for("sk-a"), a_before, "A gets no traffic");
    assert_eq!(gw.up.count_for("sk-b"), b_before + 3);

    // The operator clears it: A is first choice again.
    let acct = clear_rate_limit(&gw, a).await;
    assert_eq!(acct.temp_unschedulable_until_ms, None);
    assert_eq!(acct.temp_unschedulable_reason, "");
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), a_before + 1);
}

#[tokio::test]
async fn a_status_zero_rule_covers_connect_errors() {
    let gw = Gateway::start_with(Options {
        control_plane: Box::new(|c| {
            c.unschedulable_rules = r#"[{"status":0,"minutes":3}]"#.parse().unwrap();
        }),
        ..Options::default()
    })
    .await;
    let (group, key) = user_and_group(&gw).await;
    let dead = gw
        .account(admin::CreateAccountRequest {
            name: "dead".into(),
            credential: Some(admin::create_account_request::Credential::ApiKey(
                admin::ApiKeyCredential {
                    api_key: "sk-dead".into(),
                },
            )),
            base_url: tollgate_tests::fake_upstream::refused_url().await,
            priority: 1,
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority: 1,
            }],
            ..Default::default()
        })
        .await;
    gw.api_key_account("sk-alive", group, 2, 5).await;
    let before = now_ms();
    assert_eq!(send(&gw, &key).await, 200);
    let a = wait_account(&gw, dead, "the rule applies", |a| {
        a.temp_unschedulable_until_ms.is_some()
    })
    .await;
    assert_about(
        a.temp_unschedulable_until_ms,
        3 * MIN,
        before,
        now_ms(),
        "connect error",
    );
    assert_eq!(a.temp_unschedulable_reason, "rule: connect error");
}

// ---------------------------------------------------------------------------------------
// Cool-downs only extend; a cooled-down account gets no traffic

#[tokio::test]
async fn a_later_shorter_reset_does_not_shorten_the_rate_limit() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.api_key_account("sk-a", group, 1, 5).await;
    // Two requests on the account at once: the first is held at the upstream and will
    // answer a short 429 after the second's long 429 has been applied.
    let gate = Gate::new();
    gw.up.push_for(
        "sk-a",
        Script::rate_limited()
            .retry_after(60)
            // Marks the report: the snapshot is written after the rate limit.
            .codex_primary(50.0, 60, 300)
            .hold(&gate),
    );
    gw.up
        .push_for("sk-a", Script::rate_limited().retry_after(3600));
    let mut held = tokio::task::JoinSet::new();
    {
        let (http, url, key) = (gw.http.clone(), gw.responses_url(0), key.clone());
        held.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body())
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        });
    }
    gate.wait_for_waiting(1).await;
    let before = now_ms();
    assert_eq!(send(&gw, &key).await, 429);
    let a = wait_account(&gw, id, "the long rate limit", |a| {
        a.rate_limited_until_ms.is_some()
    })
    .await;
    assert_about(a.rate_limited_until_ms, HOUR, before, now_ms(), "long 429");
    let long = a.rate_limited_until_ms;

    gate.open();
    assert_eq!(held.join_next().await.unwrap().unwrap(), 429);
    let a = wait_account(&gw, id, "the short 429's report", |a| {
        a.codex_usage.get("x-codex-primary-used-percent") == Some(&"50".to_owned())
    })
    .await;
    assert_eq!(
        a.rate_limited_until_ms, long,
        "the shorter reset did not shorten it"
    );
}

#[tokio::test]
async fn a_rate_limited_account_gets_no_traffic_until_its_time_passes() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let a = gw.api_key_account("sk-a", group, 1, 5).await;
    gw.api_key_account("sk-b", group, 2, 5).await;

    gw.up
        .push_for("sk-a", Script::rate_limited().retry_after(2));
    assert_eq!(send(&gw, &key).await, 200, "failed over to B");
    let until = wait_account(&gw, a, "the rate limit", |a| {
        a.rate_limited_until_ms.is_some()
    })
    .await
    .rate_limited_until_ms
    .unwrap();
    let mut sent = 0;
    while now_ms() < until - 300 {
        assert_eq!(send(&gw, &key).await, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent >= 3, "only {sent} requests during the cool-down");
    assert_eq!(
        gw.up.count_for("sk-a"),
        1,
        "A gets nothing while cooling down"
    );
    assert_eq!(gw.up.count_for("sk-b"), 1 + sent);

    // Its time passes: A (priority 1) is first choice again.
    let wait = u64::try_from(until - now_ms() + 100).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 2);
}

#[tokio::test]
async fn operators_clear_a_rate_limit_and_an_error() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let a = gw.api_key_account("sk-a", group, 1, 5).await;
    gw.api_key_account("sk-b", group, 2, 5).await;

    // Rate-limited for an hour: B serves until the operator clears it.
    gw.up
        .push_for("sk-a", Script::rate_limited().retry_after(3600));
    assert_eq!(send(&gw, &key).await, 200);
    wait_account(&gw, a, "the rate limit", |a| {
        a.rate_limited_until_ms.is_some()
    })
    .await;
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 1);
    let acct = clear_rate_limit(&gw, a).await;
    assert_eq!(acct.rate_limited_until_ms, None);
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 2, "A serves again after the clear");

    // In error after a 401: B serves until the operator clears it.
    gw.up.push_for("sk-a", Script::error(401));
    assert_eq!(send(&gw, &key).await, 200);
    wait_account(&gw, a, "the error", |a| a.status == "error").await;
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 3);
    let acct = clear_error(&gw, a).await;
    assert_eq!(acct.status, "active");
    assert_eq!(send(&gw, &key).await, 200);
    assert_eq!(gw.up.count_for("sk-a"), 4, "A serves again after the clear");
}

// ---------------------------------------------------------------------------------------
// The usage snapshot of subscription accounts

#[tokio::test]
async fn a_successful_response_keeps_the_latest_codex_usage_snapshot() {
    let gw = Gateway::start(1).await;
    let (group, key) = user_and_group(&gw).await;
    let id = gw.oauth_account("at-usage", group, 1).await;

    gw.up.push_for(
        "at-usage",
        Script::success()
            .codex_primary(12.5, 3000, 300)
            .codex_secondary(3.0, 500_000, 10_080),
    );
    let before = now_ms();
    assert_eq!(send(&gw, &key).await, 200);
    let a = wait_account(&gw, id, "the snapshot", |a| !a.codex_usage.is_empty()).await;
    let u = &a.codex_usage;
    assert_eq!(u["x-codex-primary-used-percent"], "12.5");
    assert_eq!(u["x-codex-secondary-window-minutes"], "10080");
    assert_eq!(u["five_hour_used_percent"], "12.5");
    assert_eq!(u["seven_day_used_percent"], "3");
    let reset = |k: &str| u[k].parse::<i64>().ok();
    assert_about(
        reset("five_hour_reset_at_ms"),
        3000 * SEC,
        before,
        now_ms(),
        "5h",
    );
    assert_about(
        reset("seven_day_reset_at_ms"),
        500_000 * SEC,
        before,
        now_ms(),
        "7d",
    );
    assert_eq!(a.status, "active");
    assert_eq!(a.rate_limited_until_ms, None);

    // The next response replaces it.
    gw.up.push_for(
        "at-usage",
        Script::success()
            .codex_primary(47.0, 2000, 300)
            .codex_secondary(4.0, 499_000, 10_080),
    );
    assert_eq!(send(&gw, &key).await, 200);
    let a = wait_account(&gw, id, "the newer snapshot", |a| {
        a.codex_usage.get("five_hour_used_percent") == Some(&"47".to_owned())
    })
    .await;
    assert_eq!(a.codex_usage["x-codex-primary-used-percent"], "47");
    assert_eq!(a.codex_usage["seven_day_used_percent"], "4");
}
