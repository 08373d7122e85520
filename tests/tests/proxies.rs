//! Per-account outbound proxies (accounts.md, "Outbound proxies") through a real data
//! plane and real proxies: an HTTP forward proxy with Basic credentials and a SOCKS5
//! server (`socks5` resolving locally, `socks5h` sending names), streaming and not; wrong
//! credentials and dead proxies fail over / 502 without leaking the password and without
//! going direct; two accounts never share a connection, not even through the same proxy;
//! the Admin API never shows a proxy password, and a changed proxy applies to the next
//! request. The last tests check the fake proxies themselves (CONNECT, SOCKS5 address
//! types and refusals).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::fake_proxy::{HttpProxy, Socks5Proxy, SocksTarget};
use tollgate_tests::fake_upstream::Script;
use tollgate_tests::fixture::Gateway;
use tollgate_tests::sse::parse_sse;

/// A password with characters that must be percent-encoded in a URL.
const HTTP_PASS: &str = "p@ss:w/rd%42";

/// An API-key account with its own priority in `group`, reaching `base_url` via `proxy_url`.
async fn add_account(
    gw: &Gateway,
    secret: &str,
    group: i64,
    priority: i32,
    base_url: &str,
    proxy_url: &str,
) -> i64 {
    gw.account(admin::CreateAccountRequest {
        name: format!("acct-{secret}"),
        credential: Some(admin::create_account_request::Credential::ApiKey(
            admin::ApiKeyCredential {
                api_key: secret.into(),
            },
        )),
        base_url: base_url.into(),
        concurrency: Some(5),
        priority,
        proxy_url: proxy_url.into(),
        groups: vec![admin::AccountGroup {
            group_id: group,
            priority,
        }],
        ..Default::default()
    })
    .await
}

/// A group of its own holding one account that goes through `proxy_url`, and a key for it.
async fn account_via(gw: &Gateway, secret: &str, base_url: &str, proxy_url: &str) -> (i64, String) {
    let user = gw.user(10, 10).await;
    let group = gw.group("1").await;
    let account = add_account(gw, secret, group, 10, base_url, proxy_url).await;
    let (_, key) = gw.key(user, Some(group)).await;
    (account, key)
}

/// A non-streaming request that must succeed.
async fn ok_json(gw: &Gateway, key: &str) -> Value {
    let r = gw
        .post(0, key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    v
}

/// A streaming request that must succeed; returns the event names and the text.
async fn ok_stream(gw: &Gateway, key: &str) -> (Vec<String>, String) {
    let r = gw
        .post(
            0,
            key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&r.text().await.unwrap());
    let names: Vec<String> = events.iter().map(|e| e.name().to_owned()).collect();
    assert_eq!(names.first().map(String::as_str), Some("response.created"));
    assert_eq!(
        names.last().map(String::as_str),
        Some("response.completed"),
        "{names:?}"
    );
    let text = events
        .iter()
        .filter(|e| e.name() == "response.output_text.delta")
        .map(|e| e.json()["delta"].as_str().unwrap().to_owned())
        .collect();
    (names, text)
}

/// The first SSE event arrives long before the end of a slow stream: nothing on the way
/// buffers it.
async fn first_event_is_not_buffered(gw: &Gateway, key: &str, bearer: &str) {
    gw.up.push_for(
        bearer,
        Script::success()
            .text(["a", "b", "c", "d"])
            .event_delay(Duration::from_millis(200)),
    );
    let started = Instant::now();
    let mut r = gw
        .post(
            0,
            key,
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    let mut all = first.to_vec();
    while let Some(c) = r.chunk().await.unwrap() {
        all.extend_from_slice(&c);
    }
    let total = started.elapsed();
    assert!(
        String::from_utf8_lossy(&all).contains("response.completed"),
        "the stream did not finish"
    );
    // 12 events 200 ms apart: ≥ 2.2 s from the first to the last.
    assert!(
        total.saturating_sub(first_at) >= Duration::from_millis(1500),
        "first event after {first_at:?} of {total:?}: buffered on the way"
    );
}

/// A request that must fail with 502 and whose answer must not contain `secret`.
async fn fails_without_leaking(gw: &Gateway, key: &str, secret: &str) {
    for stream in [false, true] {
        let r = gw
            .post(
                0,
                key,
                json!({"model": "gpt-5.1", "input": "hi", "stream": stream}),
            )
            .await;
        let status = r.status();
        let headers = format!("{:?}", r.headers());
        let body = r.text().await.unwrap();
        assert_eq!(status, 502, "stream={stream}: {body}");
        assert!(
            !body.contains(secret) && !headers.contains(secret),
            "the proxy password reached the client: {headers} {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["type"], "upstream_error", "{v}");
    }
}

#[tokio::test]
async fn http_proxy_carries_the_account_traffic_with_its_credentials() {
    let gw = Gateway::start(1).await;
    let proxy = HttpProxy::with_credentials("proxy-user", HTTP_PASS).await;
    let (_, key) = account_via(
        &gw,
        "sk-http",
        &gw.up.base_url(),
        &proxy.url_with("proxy-user", HTTP_PASS),
    )
    .await;

    ok_json(&gw, &key).await;
    let (_, text) = ok_stream(&gw, &key).await;
    assert!(!text.is_empty());
    first_event_is_not_buffered(&gw, &key, "sk-http").await;

    let seen = proxy.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for r in &seen {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, gw.up.responses_url(), "absolute-form target");
        assert_eq!(
            r.credentials,
            Some(("proxy-user".to_owned(), HTTP_PASS.to_owned())),
            "percent-decoded credentials"
        );
        assert!(r.authorized);
        assert_eq!(r.status, 200);
        assert_eq!(r.bearers, ["sk-http"]);
    }
    assert_eq!(gw.up.count_for("sk-http"), 3);
    assert_eq!(gw.up.count(), 3, "nothing went direct");
    // The upstream never sees the proxy's credentials.
    for got in gw.up.received() {
        assert!(got.header("proxy-authorization").is_none());
    }
    // The account's pooled connection to the proxy is reused.
    assert!(proxy.connections() < 3, "{seen:?}");
}

#[tokio::test]
async fn socks5_and_socks5h_carry_the_account_traffic() {
    let gw = Gateway::start(1).await;
    let socks = Socks5Proxy::with_credentials("socks-user", "s0cks-pass").await;
    let port = gw.up.addr().port();
    // socks5: the data plane resolves the name and sends an address.
    let (_, key5) = account_via(
        &gw,
        "sk-socks5",
        &format!("http://127.0.0.1:{port}"),
        &socks.url_with("socks5", "socks-user", "s0cks-pass"),
    )
    .await;
    // socks5h: the name goes to the proxy.
    let (_, key5h) = account_via(
        &gw,
        "sk-socks5h",
        &format!("http://localhost:{port}"),
        &socks.url_with("socks5h", "socks-user", "s0cks-pass"),
    )
    .await;

    for key in [&key5, &key5h] {
        ok_json(&gw, key).await;
        let (names, text) = ok_stream(&gw, key).await;
        assert!(names.len() > 4 && !text.is_empty(), "{names:?}");
    }
    first_event_is_not_buffered(&gw, &key5h, "sk-socks5h").await;

    assert_eq!(gw.up.count_for("sk-socks5"), 2);
    assert_eq!(gw.up.count_for("sk-socks5h"), 3);
    let tunnels = socks.tunnels();
    assert_eq!(
        tunnels.len() as u64,
        socks.connections(),
        "all authenticated"
    );
    for t in &tunnels {
        assert_eq!(t.username.as_deref(), Some("socks-user"));
        let bearers: BTreeSet<&str> = t.bearers.iter().map(String::as_str).collect();
        assert_eq!(bearers.len(), 1, "one account per connection: {t:?}");
        match bearers.first().copied() {
            Some("sk-socks5") => assert_eq!(
                t.target,
                Some(SocksTarget::Ip(SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    port
                ))))
            ),
            Some("sk-socks5h") => {
                assert_eq!(
                    t.target,
                    Some(SocksTarget::Domain("localhost".into(), port))
                )
            }
            other => panic!("unexpected traffic {other:?} in {t:?}"),
        }
    }
    let mut bearers = socks.bearers();
    bearers.sort();
    assert_eq!(
        bearers,
        [
            "sk-socks5",
            "sk-socks5",
            "sk-socks5h",
            "sk-socks5h",
            "sk-socks5h"
        ],
        "every request went through the tunnel"
    );
}

#[tokio::test]
async fn wrong_proxy_password_fails_over_and_is_never_shown() {
    let gw = Gateway::start(1).await;
    let proxy = HttpProxy::with_credentials("proxy-user", "right-pass").await;
    let socks = Socks5Proxy::with_credentials("socks-user", "right-pass").await;
    let bad_http = proxy.url_with("proxy-user", "wrong-http-secret");
    let bad_socks = socks.url_with("socks5h", "socks-user", "wrong-socks-secret");

    // A group whose first account has the wrong proxy password: the next one answers.
    let user = gw.user(10, 10).await;
    let group = gw.group("1").await;
    add_account(&gw, "sk-bad-http", group, 1, &gw.up.base_url(), &bad_http).await;
    add_account(&gw, "sk-bad-socks", group, 2, &gw.up.base_url(), &bad_socks).await;
    add_account(&gw, "sk-good", group, 3, &gw.up.base_url(), "").await;
    let (_, key) = gw.key(user, Some(group)).await;
    ok_json(&gw, &key).await;
    ok_stream(&gw, &key).await;
    assert_eq!(gw.up.count_for("sk-good"), 2);
    assert_eq!(gw.up.count(), 2, "the failed accounts never went direct");
    let rejected = proxy.rejected();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(proxy.forwarded().is_empty());
    for r in &rejected {
        assert_eq!(
            r.credentials,
            Some(("proxy-user".into(), "wrong-http-secret".into()))
        );
        assert_eq!(r.status, 407);
    }
    let sessions = socks.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s.username.as_deref(), Some("socks-user"));
        assert!(!s.authenticated && s.target.is_none(), "{s:?}");
    }

    // Alone in their groups, they answer 502 and show no password.
    let (_, key_http) = account_via(&gw, "sk-alone-http", &gw.up.base_url(), &bad_http).await;
    fails_without_leaking(&gw, &key_http, "wrong-http-secret").await;
    let (_, key_socks) = account_via(&gw, "sk-alone-socks", &gw.up.base_url(), &bad_socks).await;
    fails_without_leaking(&gw, &key_socks, "wrong-socks-secret").await;
    assert_eq!(gw.up.count(), 2, "nothing went direct");
}

#[tokio::test]
async fn a_dead_proxy_is_never_bypassed() {
    let gw = Gateway::start(1).await;
    let proxy = HttpProxy::with_credentials("u", "dead-http-secret").await;
    let socks = Socks5Proxy::with_credentials("u", "dead-socks-secret").await;
    let (_, key_http) = account_via(
        &gw,
        "sk-dead-http",
        &gw.up.base_url(),
        &proxy.url_with("u", "dead-http-secret"),
    )
    .await;
    let (_, key_socks) = account_via(
        &gw,
        "sk-dead-socks",
        &gw.up.base_url(),
        &socks.url_with("socks5", "u", "dead-socks-secret"),
    )
    .await;
    ok_json(&gw, &key_http).await;
    ok_json(&gw, &key_socks).await;
    assert_eq!(gw.up.count(), 2);

    proxy.shutdown().await;
    socks.shutdown().await;
    fails_without_leaking(&gw, &key_http, "dead-http-secret").await;
    fails_without_leaking(&gw, &key_socks, "dead-socks-secret").await;
    assert_eq!(gw.up.count(), 2, "no request went direct");
}

#[tokio::test]
async fn accounts_never_share_a_connection() {
    let gw = Gateway::start(1).await;
    let http_a = HttpProxy::with_credentials("a", "pa").await;
    let socks_b = Socks5Proxy::with_credentials("b", "pb").await;
    // One proxy, one URL, two accounts.
    let shared = HttpProxy::with_credentials("cd", "pcd").await;
    let base = gw.up.base_url();
    let (_, key_a) = account_via(&gw, "sk-a", &base, &http_a.url_with("a", "pa")).await;
    let (_, key_b) = account_via(&gw, "sk-b", &base, &socks_b.url_with("socks5", "b", "pb")).await;
    let shared_url = shared.url_with("cd", "pcd");
    let (_, key_c) = account_via(&gw, "sk-c", &base, &shared_url).await;
    let (_, key_d) = account_via(&gw, "sk-d", &base, &shared_url).await;

    // Sequential rounds (connections go back to the pools) and a concurrent one.
    for _ in 0..3 {
        for key in [&key_a, &key_b, &key_c, &key_d] {
            ok_json(&gw, key).await;
        }
    }
    futures::future::join_all(
        [
            &key_a, &key_b, &key_c, &key_d, &key_a, &key_b, &key_c, &key_d,
        ]
        .into_iter()
        .map(|k| ok_stream(&gw, k)),
    )
    .await;

    for b in ["sk-a", "sk-b", "sk-c", "sk-d"] {
        assert_eq!(gw.up.count_for(b), 5, "{b}");
    }
    assert_eq!(gw.up.count(), 20);
    // Each proxy only ever carried its own accounts' traffic, and all of it.
    assert_eq!(http_a.bearers(), vec!["sk-a"; 5]);
    assert!(http_a.rejected().is_empty());
    assert_eq!(socks_b.bearers(), vec!["sk-b"; 5]);
    assert!(socks_b.sessions().iter().all(|s| s.tunnelled()
        && s.username.as_deref() == Some("b")
        && s.bearers.iter().all(|t| t == "sk-b")));
    let mut cd = shared.bearers();
    cd.sort();
    assert_eq!(cd, [vec!["sk-c"; 5], vec!["sk-d"; 5]].concat());
    // Through the same proxy URL, the two accounts use disjoint connections.
    let (conns_c, conns_d) = (shared.connections_of("sk-c"), shared.connections_of("sk-d"));
    assert!(!conns_c.is_empty() && !conns_d.is_empty());
    assert!(
        conns_c.is_disjoint(&conns_d),
        "accounts shared a proxy connection: {conns_c:?} {conns_d:?}"
    );
    for r in shared.requests() {
        assert_eq!(r.bearers.len(), 1, "{r:?}");
    }
}

#[tokio::test]
async fn admin_never_shows_the_proxy_password_and_changes_apply_to_the_next_request() {
    let gw = Gateway::start(1).await;
    let proxy = HttpProxy::with_credentials("proxy-user", "hunter2-secret").await;
    let socks = Socks5Proxy::with_credentials("socks-user", "socks-secret").await;
    let mut admin = gw.admin.clone();

    let created = admin
        .create_account(admin::CreateAccountRequest {
            name: "proxied".into(),
            credential: Some(admin::create_account_request::Credential::ApiKey(
                admin::ApiKeyCredential {
                    api_key: "sk-move".into(),
                },
            )),
            base_url: gw.up.base_url(),
            proxy_url: proxy.url_with("proxy-user", "hunter2-secret"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = created.id;
    assert_eq!(created.proxy_url, proxy.url());
    let got = admin
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.proxy_url, proxy.url(), "credentials stripped");
    let listed = admin
        .list_accounts(admin::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let dump = format!("{created:?} {got:?} {listed:?}");
    assert!(!dump.contains("hunter2-secret"), "{dump}");

    let user = gw.user(10, 10).await;
    let group = gw.group("1").await;
    admin
        .set_account_groups(admin::SetAccountGroupsRequest {
            account_id: id,
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority: 10,
            }],
        })
        .await
        .unwrap();
    let (_, key) = gw.key(user, Some(group)).await;

    // 1. Through the HTTP proxy.
    ok_json(&gw, &key).await;
    assert_eq!(proxy.count(), 1);

    // 2. Moved to the SOCKS5 server: the next request goes there.
    let updated = admin
        .update_account(admin::UpdateAccountRequest {
            id,
            proxy_url: Some(socks.url_with("socks5h", "socks-user", "socks-secret")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.proxy_url, socks.url("socks5h"));
    assert!(!format!("{updated:?}").contains("socks-secret"));
    ok_stream(&gw, &key).await;
    assert_eq!(proxy.count(), 1, "the old proxy is no longer used");
    assert_eq!(socks.bearers(), ["sk-move"]);

    // 3. Proxy removed: direct.
    admin
        .update_account(admin::UpdateAccountRequest {
            id,
            proxy_url: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = admin
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.proxy_url, "");
    ok_json(&gw, &key).await;
    assert_eq!((proxy.count(), socks.bearers().len()), (1, 1));
    assert_eq!(gw.up.count_for("sk-move"), 3);

    // 4. Back to the HTTP proxy with rotated credentials: the new ones are sent.
    let rotated = HttpProxy::with_credentials("proxy-user", "rotated-secret").await;
    admin
        .update_account(admin::UpdateAccountRequest {
            id,
            proxy_url: Some(rotated.url_with("proxy-user", "rotated-secret")),
            ..Default::default()
        })
        .await
        .unwrap();
    ok_json(&gw, &key).await;
    assert_eq!(
        rotated.forwarded()[0].credentials,
        Some(("proxy-user".into(), "rotated-secret".into()))
    );
    assert_eq!(gw.up.count_for("sk-move"), 4);
    let got = admin
        .get_account(admin::GetAccountRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.proxy_url, rotated.url());
}

// ---------------------------------------------------------------------------------------
// The fake proxies themselves

/// Reads an HTTP/1 head (up to the blank line) byte by byte.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

fn raw_post(host: &str, bearer: &str) -> Vec<u8> {
    let body = json!({"model": "gpt-5.1", "input": "hi"}).to_string();
    format!(
        "POST /v1/responses HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn fake_http_proxy_tunnels_connect_and_demands_credentials() {
    let up = tollgate_tests::fake_upstream::FakeUpstream::start().await;
    let proxy = HttpProxy::with_credentials("u", "p").await;
    let target = up.addr().to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode("u:p");

    // Without credentials: 407.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authenticate: basic")
    );
    drop(s);

    // With them: a tunnel to the target, speaking plain HTTP inside.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(
        format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(&raw_post(&target, "sk-tunnel")).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"object\":\"response\""), "{answer}");
    assert_eq!(up.count_for("sk-tunnel"), 1);

    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 2);
    assert!(!reqs[0].authorized && reqs[0].credentials.is_none());
    assert_eq!(reqs[1].method, "CONNECT");
    assert_eq!(reqs[1].target, target);
    assert_eq!(reqs[1].credentials, Some(("u".into(), "p".into())));
    assert_eq!(reqs[1].bearers, ["sk-tunnel"]);
    assert_eq!(proxy.connections(), 2);

    // Absolute-form through the proxy with reqwest (which never CONNECTs for http://).
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url_with("u", "p")).unwrap())
        .build()
        .unwrap();
    let r = client
        .post(up.responses_url())
        .bearer_auth("sk-absolute")
        .json(&json!({"model": "gpt-5.1", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = proxy.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.target.as_str(), last.status),
        ("POST", up.responses_url().as_str(), 200)
    );
    let got = up.last().unwrap();
    assert_eq!(got.bearer.as_deref(), Some("sk-absolute"));
    assert!(got.header("proxy-authorization").is_none());
}

/// A SOCKS5 client handshake by hand: returns the stream and the reply code (or the
/// failed authentication status as `0x100 | status`).
async fn socks_connect(
    proxy: SocketAddr,
    creds: Option<(&str, &str)>,
    cmd: u8,
    address: &[u8],
    port: u16,
) -> (TcpStream, u16) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let method = if creds.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method]).await.unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await.unwrap();
    assert_eq!(sel, [5, method]);
    if let Some((u, p)) = creds {
        let mut m = vec![1, u.len() as u8];
        m.extend_from_slice(u.as_bytes());
        m.push(p.len() as u8);
        m.extend_from_slice(p.as_bytes());
        s.write_all(&m).await.unwrap();
        let mut st = [0u8; 2];
        s.read_exact(&mut st).await.unwrap();
        if st[1] != 0 {
            return (s, 0x100 | u16::from(st[1]));
        }
    }
    let mut req = vec![5, cmd, 0];
    req.extend_from_slice(address);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("bound address type {other}"),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await.unwrap();
    (s, u16::from(head[1]))
}

/// An echo server on `addr` serving any number of connections on `tasks`.
async fn echo(addr: &str, tasks: &TaskTracker) -> Option<SocketAddr> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let local = listener.local_addr().unwrap();
    let inner = tasks.clone();
    tasks.spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            inner.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Some(local)
}

async fn ping(s: &mut TcpStream) {
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn fake_socks_server_speaks_every_address_type_and_refuses_properly() {
    let tasks = TaskTracker::new();
    let socks = Socks5Proxy::with_credentials("user", "pw").await;
    let creds = Some(("user", "pw"));
    let v4 = echo("127.0.0.1:0", &tasks).await.unwrap();

    // IPv4.
    let (mut s, reply) = socks_connect(socks.addr(), creds, 1, &[1, 127, 0, 0, 1], v4.port()).await;
    assert_eq!(reply, 0);
    ping(&mut s).await;

    // Domain name, resolved by the server.
    let mut name = vec![3, 9];
    name.extend_from_slice(b"localhost");
    let (mut s, reply) = socks_connect(socks.addr(), creds, 1, &name, v4.port()).await;
    assert_eq!(reply, 0);
    ping(&mut s).await;

    // IPv6 (when the host has ::1).
    if let Some(v6) = echo("[::1]:0", &tasks).await {
        let mut a = vec![4];
        a.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        let (mut s, reply) = socks_connect(socks.addr(), creds, 1, &a, v6.port()).await;
        assert_eq!(reply, 0);
        ping(&mut s).await;
        assert!(
            socks
                .sessions()
                .iter()
                .any(|x| x.target == Some(SocksTarget::Ip(v6)))
        );
    }

    // Refusals: wrong password, BIND, a closed port, no acceptable method.
    let (_, reply) = socks_connect(
        socks.addr(),
        Some(("user", "nope")),
        1,
        &[1, 127, 0, 0, 1],
        v4.port(),
    )
    .await;
    assert_eq!(reply, 0x101);
    let (_, reply) = socks_connect(socks.addr(), creds, 2, &[1, 127, 0, 0, 1], v4.port()).await;
    assert_eq!(reply, 7);
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (_, reply) = socks_connect(socks.addr(), creds, 1, &[1, 127, 0, 0, 1], closed.port()).await;
    assert_eq!(reply, 5);
    let mut s = TcpStream::connect(socks.addr()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await.unwrap();
    assert_eq!(
        sel,
        [5, 0xff],
        "no-auth refused when credentials are required"
    );

    let sessions = socks.sessions();
    assert_eq!(sessions[0].target, Some(SocksTarget::Ip(v4)));
    assert_eq!(sessions[0].username.as_deref(), Some("user"));
    assert_eq!(
        sessions[1].target,
        Some(SocksTarget::Domain("localhost".into(), v4.port()))
    );
    assert!(
        sessions
            .iter()
            .any(|x| x.username.as_deref() == Some("user") && !x.authenticated)
    );

    // Without credentials configured, "no authentication" is accepted.
    let open = Socks5Proxy::start().await;
    let (mut s, reply) = socks_connect(open.addr(), None, 1, &[1, 127, 0, 0, 1], v4.port()).await;
    assert_eq!(reply, 0);
    ping(&mut s).await;
    assert_eq!(open.tunnels()[0].username, None);
    tasks.close();
}
