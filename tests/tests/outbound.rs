//! Outbound safety: the data plane refuses upstream connections to loopback / private /
//! link-local addresses — literal or behind a DNS name — unless private upstreams are
//! allowed, and never shows a client an upstream's non-JSON error body.

use serde_json::{Value, json};
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::{Gateway, Options};

/// A gateway whose control plane accepts private base URLs (it checks only the literal
/// host) and whose data plane enforces the rule, or not, at connection time.
async fn gateway(dp_allows_private: bool) -> Gateway {
    Gateway::start_with(Options {
        data_plane: if dp_allows_private {
            |c| c.flow.allow_private_upstreams = true
        } else {
            |c| c.flow.allow_private_upstreams = false
        },
        ..Options::default()
    })
    .await
}

/// An API-key account whose base URL names the fake upstream as `localhost`, a DNS
/// name that resolves to loopback; returns a client key for it.
async fn localhost_account(gw: &Gateway) -> String {
    let user = gw.user(5, 10).await;
    let group = gw.group("1").await;
    gw.account(admin::CreateAccountRequest {
        name: "acct-by-name".into(),
        credential: Some(admin::create_account_request::Credential::ApiKey(
            admin::ApiKeyCredential {
                api_key: "upstream-by-name".into(),
            },
        )),
        base_url: format!("http://localhost:{}", gw.up.addr().port()),
        concurrency: Some(5),
        priority: 10,
        groups: vec![admin::AccountGroup {
            group_id: group,
            priority: 10,
        }],
        ..Default::default()
    })
    .await;
    gw.key(user, Some(group)).await.1
}

fn body() -> Value {
    json!({"model": "gpt-5.1", "input": "hi"})
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_connection_time() {
    let gw = gateway(false).await;
    let key = localhost_account(&gw).await;
    let r = gw.post(0, &key, body()).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Upstream address refused"),
        "a clear refusal, got {message:?}"
    );
    assert_eq!(gw.up.count(), 0, "no request may reach the upstream");
}

#[tokio::test]
async fn a_literal_loopback_address_is_refused_too() {
    let gw = gateway(false).await;
    let b = gw.basic().await; // base_url http://127.0.0.1:<port>
    let r = gw.post(0, &b.key, body()).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Upstream address refused")
    );
    assert_eq!(gw.up.count(), 0);
}

#[tokio::test]
async fn allowing_private_upstreams_serves_the_same_account() {
    let gw = gateway(true).await;
    let key = localhost_account(&gw).await;
    let r = gw.post(0, &key, body()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(gw.up.count(), 1);
    assert_eq!(
        gw.up.last().unwrap().header("authorization"),
        Some("Bearer upstream-by-name")
    );
}

#[tokio::test]
async fn a_non_json_upstream_4xx_body_is_replaced_by_a_fixed_message() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let page = "<html><body>Bad Request: internal-lb-7 at 10.2.3.4 rejected</body></html>";
    gw.up.push(Script::raw(400, "text/html", [page]));
    let r = gw.post(0, &b.key, body()).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("internal-lb-7"),
        "upstream body leaked: {text}"
    );
    assert!(!text.contains("<html>"), "upstream body leaked: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["error"]["message"],
        "The upstream rejected the request without an error description"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // An OpenAI-shaped error still passes its own fields.
    gw.up.push(Script::bad_request("Invalid value for 'input'"));
    let v: Value = gw.post(0, &b.key, body()).await.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid value for 'input'");
}
