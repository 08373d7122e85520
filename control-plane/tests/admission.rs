//! Admission end to end: a real control plane on `127.0.0.1:0`, real `Session` streams
//! opened with the generated `GatewayClient`, then Admit / Release / ReportOutcome. Data
//! is seeded through `Store` on the same database with the control plane's key; a row an
//! Admit has read is changed through the Admin API, since the control plane caches what
//! Admit reads and drops it on its own writes (`admission/snapshot.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tollgate_control_plane::Config;
use tollgate_control_plane::model::{
    AccountGroup, Credential, NewAccount, NewApiKey, NewGroup, NewUser,
};
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{GroupKind, Platform, UserRole};
use tollgate_shared::proto::admin::v1 as admin_pb;
use tollgate_shared::proto::admin::v1::admin_client::AdminClient;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

use tollgate_tests::cluster::ADMIN_TOKEN;
use tollgate_tests::{Backend, eventually_some, on_both_backends};

const FAKE_CODEX: &str = "http://127.0.0.1:9/backend-api/codex/responses";
const GRACE_MS: u64 = 1_000;

on_both_backends!(
    cached_state_follows_every_write,
    user_concurrency_queues_the_third_request,
    a_dropped_session_frees_its_leases_after_the_grace,
    reattach_with_held_leases_counts_them_once,
    a_rate_limited_account_is_skipped,
    no_accounts_is_rejected_with_a_reason,
    a_recorded_response_pins_admission_to_its_account,
    records_in_one_call_are_judged_alone,
);

// ------------------------------------------------------------------ harness

/// A control plane from the test kit with this suite's settings (short lease grace, an
/// unreachable Codex URL), and a store on its database with its key.
struct ControlPlane {
    store: Store,
    cp: tollgate_tests::cluster::ControlPlane,
}

impl ControlPlane {
    async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let cp = tollgate_tests::cluster::ControlPlane::on(backend, |c| {
            c.lease_grace_ms = GRACE_MS;
            c.heartbeat_interval_ms = 200;
            c.codex_url = FAKE_CODEX.into();
            configure(c);
        })
        .await;
        let store = cp.store().await;
        Self { store, cp }
    }

    fn client(&self) -> GatewayClient<Channel> {
        self.cp.gateway()
    }

    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.cp.channel())
    }

    async fn stop(self) {
        self.store.close().await;
        self.cp.stop().await;
    }

    async fn user(&self, concurrency: i32) -> i64 {
        self.store
            .create_user(NewUser {
                email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                name: "user".into(),
                role: UserRole::User,
                concurrency,
                notes: String::new(),
                initial_balance_nanos: 10_000_000_000,
            })
            .await
            .unwrap()
            .id
    }

    async fn group(&self) -> i64 {
        self.store
            .create_group(NewGroup {
                name: format!("g-{}", uuid::Uuid::new_v4().simple()),
                platform: Platform::OpenAi,
                rate_multiplier: Multiplier::ONE,
                kind: GroupKind::Standard,
                daily_limit_nanos: 0,
                weekly_limit_nanos: 0,
                monthly_limit_nanos: 0,
                exclusive: false,
                description: String::new(),
            })
            .await
            .unwrap()
            .id
    }

    async fn key(&self, user_id: i64, group_id: Option<i64>) -> i64 {
        let secret = format!("sk-{}", uuid::Uuid::new_v4().simple());
        self.store
            .create_key(NewApiKey {
                user_id,
                name: "key".into(),
                group_id,
                key_hash: hex::encode(Sha256::digest(secret.as_bytes())),
                key_hint: "sk-…".into(),
                ip_allow: Vec::new(),
                ip_deny: Vec::new(),
                quota_nanos: 0,
                expires_at_ms: None,
            })
            .await
            .unwrap()
            .id
    }

    async fn account(&self, name: &str, group: Option<(i64, i32)>, credential: Credential) -> i64 {
        self.store
            .create_account(NewAccount {
                name: name.into(),
                platform: Platform::OpenAi,
                base_url: String::new(),
                credential,
                concurrency: 10,
                priority: 50,
                model_mapping: BTreeMap::new(),
                proxy_url: String::new(),
                user_agent: String::new(),
                expires_at_ms: None,
                chatgpt_account_id: String::new(),
                cost_multiplier: Multiplier::ONE,
                notes: String::new(),
                groups: group
                    .map(|(group_id, priority)| vec![AccountGroup { group_id, priority }])
                    .unwrap_or_default(),
            })
            .await
            .unwrap()
            .id
    }
}

/// An Admin API request with the operator's token.
fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    req
}

fn api_key(k: &str) -> Credential {
    Credential::ApiKey { api_key: k.into() }
}

/// One data plane's session: heartbeats and the downward stream are driven by a task;
/// invalidations arrive on `invalidations`. Dropping it ends the stream (a killed pod).
struct DataPlane {
    session_id: String,
    adopted: Vec<String>,
    invalidations: mpsc::UnboundedReceiver<pb::Invalidate>,
    _driver: JoinSet<()>,
}

async fn attach(cp: &ControlPlane, held: Vec<pb::HeldLease>) -> DataPlane {
    let (tx, rx) = mpsc::channel::<pb::SessionUp>(16);
    tx.send(pb::SessionUp {
        msg: Some(pb::session_up::Msg::Attach(pb::Attach {
            data_plane_id: format!("dp-{}", uuid::Uuid::new_v4().simple()),
            held_leases: held,
            version: "test".into(),
        })),
    })
    .await
    .unwrap();
    let mut inbound = cp
        .client()
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let attached = match inbound.next().await {
        Some(Ok(pb::SessionDown {
            msg: Some(pb::session_down::Msg::Attached(a)),
        })) => a,
        other => panic!("expected Attached, got {other:?}"),
    };
    let (inv_tx, inv_rx) = mpsc::unbounded_channel();
    let mut driver = JoinSet::new();
    driver.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let hb = pb::SessionUp {
                        msg: Some(pb::session_up::Msg::Heartbeat(pb::Heartbeat { seq, in_flight: 0 })),
                    };
                    if tx.send(hb).await.is_err() {
                        break;
                    }
                }
                msg = inbound.next() => match msg {
                    Some(Ok(pb::SessionDown { msg: Some(pb::session_down::Msg::Invalidate(i)) })) => {
                        let _ = inv_tx.send(i);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    });
    DataPlane {
        session_id: attached.session_id,
        adopted: attached.adopted_lease_ids,
        invalidations: inv_rx,
        _driver: driver,
    }
}

fn admit_req(dp: &DataPlane, key_id: i64, model: &str) -> pb::AdmitRequest {
    pb::AdmitRequest {
        session_id: dp.session_id.clone(),
        request_id: uuid::Uuid::new_v4().to_string(),
        key_id,
        model: model.into(),
        stream: true,
        ..Default::default()
    }
}

async fn admit(cp: &ControlPlane, req: pb::AdmitRequest) -> pb::admit_response::Result {
    cp.client()
        .admit(req)
        .await
        .unwrap()
        .into_inner()
        .result
        .expect("Admit answered neither a lease nor a rejection")
}

fn lease(r: pb::admit_response::Result) -> pb::Lease {
    match r {
        pb::admit_response::Result::Lease(l) => l,
        pb::admit_response::Result::Rejection(r) => panic!("rejected: {r:?}"),
    }
}

fn rejection(r: pb::admit_response::Result) -> pb::Rejection {
    match r {
        pb::admit_response::Result::Rejection(r) => r,
        pb::admit_response::Result::Lease(l) => panic!("unexpected lease {}", l.lease_id),
    }
}

async fn release(cp: &ControlPlane, dp: &DataPlane, ids: &[&str]) {
    cp.client()
        .release(pb::ReleaseRequest {
            session_id: dp.session_id.clone(),
            lease_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

// ------------------------------------------------------------------ tests

/// Admit reads keys, users, groups, accounts and prices through an in-memory snapshot;
/// each write below must show on the very next Admit.
async fn cached_state_follows_every_write(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let user = cp.user(10).await;
    let group = cp.group().await;
    let key = cp.key(user, Some(group)).await;
    let account = cp.account("a", Some((group, 50)), api_key("sk-a")).await;
    let dp = attach(&cp, Vec::new()).await;
    let mut admin = cp.admin();
    let code = |r: pb::admit_response::Result| rejection(r).code;

    // Prices (unpriced models are refused by default): set and deleted through the
    // Admin API.
    assert_eq!(
        code(admit(&cp, admit_req(&dp, key, "mystery-9")).await),
        "model_not_priced"
    );
    let price = admin_pb::Price {
        model: "mystery-9".into(),
        input_per_mtok_nanos: 1_000_000_000,
        ..Default::default()
    };
    admin
        .set_price(authed(admin_pb::SetPriceRequest { price: Some(price) }))
        .await
        .unwrap();
    lease(admit(&cp, admit_req(&dp, key, "mystery-9")).await);
    admin
        .delete_price(authed(admin_pb::DeletePriceRequest {
            model: "mystery-9".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        code(admit(&cp, admit_req(&dp, key, "mystery-9")).await),
        "model_not_priced"
    );

    // Account health reported by a data plane.
    cp.client()
        .report_outcome(pb::ReportOutcomeRequest {
            account_id: account,
            request_id: "r-429".into(),
            status: 429,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(
        r.message,
        "No available accounts: all accounts are rate-limited"
    );
    admin
        .clear_account_rate_limit(authed(admin_pb::AccountIdRequest { id: account }))
        .await
        .unwrap();
    let l = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);

    // A charge that empties the balance: the next Admit is refused, with no wait and no
    // admin call in between.
    let spend = |request_id: &str| pb::UsageReport {
        request_id: request_id.into(),
        key_id: key,
        user_id: user,
        group_id: Some(group),
        account_id: account,
        model: "gpt-5".into(),
        upstream_model: "gpt-5".into(),
        // 10 USD at 10 USD per million output tokens.
        output_tokens: 1_000_000,
        started_at_ms: tollgate_shared::now_ms(),
        billing_mode: l.billing_mode.clone(),
        rate_multiplier: "1".into(),
        account_cost_multiplier: "1".into(),
        ..Default::default()
    };
    let acked = cp
        .client()
        .report_usage(pb::ReportUsageRequest {
            records: vec![spend("r-spend")],
        })
        .await
        .unwrap()
        .into_inner()
        .acked_request_ids;
    assert_eq!(acked, ["r-spend"]);
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(
        (r.code.as_str(), r.message.as_str()),
        ("billing_rejected", "insufficient balance")
    );
    admin
        .adjust_balance(authed(admin_pb::AdjustBalanceRequest {
            user_id: user,
            op: admin_pb::BalanceOp::Add as i32,
            amount_nanos: 1_000_000_000,
            reason: "top-up".into(),
            allow_negative: false,
        }))
        .await
        .unwrap();
    lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);

    // Key, user and group changes.
    admin
        .disable_key(authed(admin_pb::KeyIdRequest { id: key }))
        .await
        .unwrap();
    assert_eq!(
        code(admit(&cp, admit_req(&dp, key, "gpt-5")).await),
        "api_key_disabled"
    );
    admin
        .enable_key(authed(admin_pb::KeyIdRequest { id: key }))
        .await
        .unwrap();
    admin
        .update_user(authed(admin_pb::UpdateUserRequest {
            id: user,
            status: Some("disabled".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        code(admit(&cp, admit_req(&dp, key, "gpt-5")).await),
        "user_inactive"
    );
    admin
        .update_user(authed(admin_pb::UpdateUserRequest {
            id: user,
            status: Some("active".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    admin
        .update_group(authed(admin_pb::UpdateGroupRequest {
            id: group,
            status: Some("disabled".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        code(admit(&cp, admit_req(&dp, key, "gpt-5")).await),
        "group_disabled"
    );
    admin
        .update_group(authed(admin_pb::UpdateGroupRequest {
            id: group,
            status: Some("active".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    // An account's groups.
    admin
        .set_account_groups(authed(admin_pb::SetAccountGroupsRequest {
            account_id: account,
            groups: Vec::new(),
        }))
        .await
        .unwrap();
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(
        r.message,
        "No available accounts: the group has no accounts"
    );
    cp.stop().await;
}

async fn user_concurrency_queues_the_third_request(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let user = cp.user(2).await;
    let key = cp.key(user, None).await;
    let api = cp.account("api", None, api_key("sk-upstream")).await;
    let dp = attach(&cp, Vec::new()).await;

    let first = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    let second = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    let account = first.account.clone().unwrap();
    assert_eq!(account.account_id, api);
    assert_eq!(account.kind, "api_key");
    assert_eq!(account.bearer, "sk-upstream");
    assert_eq!(account.upstream_url, "https://api.openai.com/v1/responses");
    assert_eq!(first.user_id, user);
    assert_eq!(first.billing_mode, "balance");
    assert_ne!(first.lease_id, second.lease_id);

    // The third waits in the control plane...
    let mut third = JoinSet::new();
    let req = admit_req(&dp, key, "gpt-5");
    let mut client = cp.client();
    third.spawn(async move { client.admit(req).await.unwrap().into_inner() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        third.try_join_next().is_none(),
        "the third request must wait"
    );

    // ...and gets the slot as soon as one is released.
    let t = Instant::now();
    release(&cp, &dp, &[&first.lease_id]).await;
    let got = tokio::time::timeout(Duration::from_secs(5), third.join_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    let third = lease(got.result.unwrap());

    // Releasing twice, or an unknown id, is harmless.
    release(&cp, &dp, &[&first.lease_id, "no-such-lease"]).await;
    release(&cp, &dp, &[&second.lease_id, &third.lease_id]).await;
    for _ in 0..2 {
        lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    }
    cp.stop().await;
}

async fn a_dropped_session_frees_its_leases_after_the_grace(backend: Backend) {
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cp = ControlPlane::start(backend, |c| {
        c.user_wait_timeout_ms = 5_000;
        c.metrics_listen = Some(metrics_addr);
    })
    .await;
    let user = cp.user(1).await;
    let key = cp.key(user, None).await;
    cp.account("api", None, api_key("sk-a")).await;

    let dp1 = attach(&cp, Vec::new()).await;
    let held = lease(admit(&cp, admit_req(&dp1, key, "gpt-5")).await);
    let dp2 = attach(&cp, Vec::new()).await;
    // dp1 dies with its lease.
    drop(dp1);
    let t = Instant::now();
    let next = lease(admit(&cp, admit_req(&dp2, key, "gpt-5")).await);
    let waited = t.elapsed();
    assert_ne!(next.lease_id, held.lease_id);
    assert!(
        waited >= Duration::from_millis(GRACE_MS * 8 / 10),
        "the lease was freed before the grace ran out ({waited:?})"
    );
    assert!(
        waited < Duration::from_millis(GRACE_MS + 1_500),
        "the lease outlived its session by too much ({waited:?})"
    );
    // The reaper's work shows in the metrics.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\ntollgate_cp_leases_reaped_total 1\n"),
        "{text}"
    );
    assert!(text.contains("\ntollgate_cp_leases_held 1\n"), "{text}");
    cp.stop().await;
}

async fn reattach_with_held_leases_counts_them_once(backend: Backend) {
    let cp = ControlPlane::start(backend, |c| c.user_wait_timeout_ms = 300).await;
    let user = cp.user(1).await;
    let key = cp.key(user, None).await;
    let api = cp.account("api", None, api_key("sk-a")).await;

    let dp = attach(&cp, Vec::new()).await;
    let l1 = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    // The data plane reconnects (new session) declaring its lease, plus one this
    // control plane never granted (as after a restart).
    drop(dp);
    let restored = uuid::Uuid::new_v4().to_string();
    let held = vec![
        pb::HeldLease {
            lease_id: l1.lease_id.clone(),
            user_id: user,
            account_id: api,
        },
        pb::HeldLease {
            lease_id: restored.clone(),
            user_id: user,
            account_id: api,
        },
    ];
    let dp = attach(&cp, held).await;
    let mut adopted = dp.adopted.clone();
    adopted.sort();
    let mut expected = vec![l1.lease_id.clone(), restored.clone()];
    expected.sort();
    assert_eq!(adopted, expected);

    // Past the old session's grace the leases are still held (they moved): time has to
    // pass for that to be shown, so this one waits a fixed time on purpose.
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 500)).await;
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(r.code, "user_concurrency_exceeded");
    assert_eq!(
        r.message,
        "Concurrency limit exceeded for user, please retry later"
    );

    // Each counted once: releasing one leaves one slot taken (limit 1, still full);
    // releasing the other frees the user at once.
    release(&cp, &dp, &[&l1.lease_id]).await;
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(r.code, "user_concurrency_exceeded");
    release(&cp, &dp, &[&restored]).await;
    let l3 = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    release(&cp, &dp, &[&l3.lease_id]).await;

    // A re-attach that does not declare a lease lets it go with the old session.
    let l4 = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    drop(dp);
    let dp = attach(&cp, Vec::new()).await;
    assert!(dp.adopted.is_empty());
    // Within the old session's grace (plus one queued Admit) the slot is free again.
    let l5 = eventually_some(
        "the undeclared lease let go after the grace",
        Duration::from_millis(GRACE_MS + 800),
        || async {
            match admit(&cp, admit_req(&dp, key, "gpt-5")).await {
                pb::admit_response::Result::Lease(l) => Some(l),
                pb::admit_response::Result::Rejection(_) => None,
            }
        },
    )
    .await;
    assert_ne!(l4.lease_id, l5.lease_id);
    cp.stop().await;
}

async fn a_rate_limited_account_is_skipped(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let group = cp.group().await;
    let user = cp.user(5).await;
    let key = cp.key(user, Some(group)).await;
    let preferred = cp
        .account("first", Some((group, 1)), api_key("sk-first"))
        .await;
    let oauth = Credential::OAuth {
        access_token: "at-second".into(),
        refresh_token: "rt".into(),
        id_token: String::new(),
    };
    let second = cp.account("second", Some((group, 2)), oauth).await;
    // An account outside the group is never chosen.
    cp.account("other", None, api_key("sk-other")).await;
    let mut dp = attach(&cp, Vec::new()).await;

    let l = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(l.account.unwrap().account_id, preferred);
    assert_eq!(l.group_id, Some(group));

    let mut client = cp.client();
    client
        .report_outcome(pb::ReportOutcomeRequest {
            account_id: preferred,
            request_id: "r1".into(),
            status: 429,
            kind: pb::report_outcome_request::Kind::HttpStatus as i32,
            message: "rate limited".into(),
            headers: [("retry-after".to_owned(), "120".to_owned())].into(),
            body: String::new(),
        })
        .await
        .unwrap();
    // Every data plane hears about it...
    let inv = tokio::time::timeout(Duration::from_secs(5), dp.invalidations.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inv.scope, pb::invalidate::Scope::Account as i32);
    assert_eq!(inv.ids, vec![preferred]);
    // ...the account row says so...
    let stored = cp.store.get_account(preferred).await.unwrap();
    let until = stored.rate_limited_until_ms.unwrap();
    let now = tollgate_shared::now_ms();
    assert!(until > now + 100_000 && until <= now + 120_000);
    // ...and the very next Admit skips it.
    let l = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    let account = l.account.unwrap();
    assert_eq!(account.account_id, second);
    assert_eq!(account.kind, "oauth");
    assert_eq!(account.bearer, "at-second");
    assert_eq!(account.upstream_url, FAKE_CODEX);

    // A shorter cool-down never shortens it.
    client
        .report_outcome(pb::ReportOutcomeRequest {
            account_id: preferred,
            status: 429,
            kind: pb::report_outcome_request::Kind::HttpStatus as i32,
            headers: [("retry-after".to_owned(), "5".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stored = cp.store.get_account(preferred).await.unwrap();
    assert_eq!(stored.rate_limited_until_ms, Some(until));

    // Both rate-limited: no account left, with the reason.
    client
        .report_outcome(pb::ReportOutcomeRequest {
            account_id: second,
            status: 429,
            kind: pb::report_outcome_request::Kind::HttpStatus as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(r.code, "no_available_accounts");
    assert_eq!(
        r.message,
        "No available accounts: all accounts are rate-limited"
    );

    // 401 puts an account in error.
    client
        .report_outcome(pb::ReportOutcomeRequest {
            account_id: second,
            status: 401,
            kind: pb::report_outcome_request::Kind::HttpStatus as i32,
            message: "token revoked".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stored = cp.store.get_account(second).await.unwrap();
    assert_eq!(stored.status.as_str(), "error");
    assert_eq!(
        stored.error_message,
        "Authentication failed (401): token revoked"
    );
    cp.stop().await;
}

async fn no_accounts_is_rejected_with_a_reason(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let user = cp.user(2).await;
    let key = cp.key(user, None).await;
    let dp = attach(&cp, Vec::new()).await;

    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(r.code, "no_available_accounts");
    assert!(
        r.message.starts_with("No available accounts"),
        "{}",
        r.message
    );

    // An account that maps other models only, created through the Admin API: the next
    // Admit sees it although the (empty) account list was cached.
    cp.admin()
        .create_account(authed(admin_pb::CreateAccountRequest {
            name: "mapped".into(),
            credential: Some(admin_pb::create_account_request::Credential::ApiKey(
                admin_pb::ApiKeyCredential {
                    api_key: "sk-m".into(),
                },
            )),
            model_mapping: [("gpt-4o".to_owned(), "gpt-4o".to_owned())].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-x")).await);
    assert_eq!(
        r.message,
        "No available accounts: no account supports model gpt-x"
    );
    let l = lease(admit(&cp, admit_req(&dp, key, "gpt-4o")).await);
    assert_eq!(l.account.unwrap().model_mapping["gpt-4o"], "gpt-4o");

    // The user slot taken by a rejected Admit was given back: two more fit (limit 2,
    // one lease held).
    lease(admit(&cp, admit_req(&dp, key, "gpt-4o")).await);
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_is_unavailable() {
    let cp = ControlPlane::start(Backend::Sqlite, |_| {}).await;
    let err = cp
        .client()
        .admit(pb::AdmitRequest {
            session_id: "nope".into(),
            key_id: 1,
            model: "gpt-5".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "unknown or detached session");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaks_nothing() {
    let cp = ControlPlane::start(Backend::Sqlite, |c| c.user_wait_timeout_ms = 10_000).await;
    let user = cp.user(1).await;
    let key = cp.key(user, None).await;
    cp.account("api", None, api_key("sk-a")).await;
    let dp = attach(&cp, Vec::new()).await;
    let held = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);

    // A caller gives up while queued (client-side deadline: the call is cancelled).
    let mut req = tonic::Request::new(admit_req(&dp, key, "gpt-5"));
    req.set_timeout(Duration::from_millis(200));
    let err = cp.client().admit(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The slot goes to the next caller at once, not to the vanished waiter.
    release(&cp, &dp, &[&held.lease_id]).await;
    let t = Instant::now();
    lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert!(t.elapsed() < Duration::from_millis(500));
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_readmission_reuses_the_user_slot() {
    let cp = ControlPlane::start(Backend::Sqlite, |c| c.user_wait_timeout_ms = 300).await;
    let user = cp.user(1).await;
    let key = cp.key(user, None).await;
    let a = cp.account("a", None, api_key("sk-a")).await;
    let b = cp.account("b", None, api_key("sk-b")).await;
    let dp = attach(&cp, Vec::new()).await;

    let first = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    let failed = first.account.unwrap().account_id;
    // The same request fails over: it keeps its user slot (limit 1) and excludes the
    // account that failed.
    let mut req = admit_req(&dp, key, "gpt-5");
    req.user_lease_id = first.lease_id.clone();
    req.excluded_account_ids = vec![failed];
    let second = lease(admit(&cp, req).await);
    let other = second.account.unwrap().account_id;
    assert_ne!(other, failed);
    assert!([a, b].contains(&other));

    // The failed attempt's lease goes; the user slot stays with the second one.
    release(&cp, &dp, &[&first.lease_id]).await;
    let r = rejection(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_eq!(r.code, "user_concurrency_exceeded");
    release(&cp, &dp, &[&second.lease_id]).await;
    lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_stay_on_their_account() {
    let cp = ControlPlane::start(Backend::Sqlite, |_| {}).await;
    let user = cp.user(10).await;
    let key = cp.key(user, None).await;
    cp.account("a", None, api_key("sk-a")).await;
    cp.account("b", None, api_key("sk-b")).await;
    let dp = attach(&cp, Vec::new()).await;

    let mut req = admit_req(&dp, key, "gpt-5");
    req.session_hash = "c0ffee".into();
    let first = lease(admit(&cp, req.clone()).await);
    let bound = first.account.unwrap().account_id;
    // Load-aware alone would now prefer the other (idle, never used) account.
    for _ in 0..3 {
        let mut r = req.clone();
        r.request_id = uuid::Uuid::new_v4().to_string();
        let l = lease(admit(&cp, r).await);
        assert_eq!(l.account.unwrap().account_id, bound);
    }
    // Without a session hash, load-aware picks the idle one.
    let l = lease(admit(&cp, admit_req(&dp, key, "gpt-5")).await);
    assert_ne!(l.account.unwrap().account_id, bound);
    cp.stop().await;
}

/// Response-id affinity at Admit: a recorded response pins its user's requests (and its
/// operations, unbilled and model-less) to the account that created it, survives a
/// control-plane restart (the table, not only the cache), and is not found for another
/// user; a replayed report never moves it.
async fn a_recorded_response_pins_admission_to_its_account(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let group = cp.group().await;
    let owner_user = cp.user(5).await;
    let other_user = cp.user(5).await;
    let key = cp.key(owner_user, Some(group)).await;
    let other_key = cp.key(other_user, Some(group)).await;
    let mut accounts = Vec::new();
    for name in ["a", "b", "c"] {
        accounts.push(
            cp.account(name, Some((group, 50)), api_key(&format!("sk-{name}")))
                .await,
        );
    }
    let owner = accounts[1];
    let record = |account_id: i64, user_id: i64| pb::RecordResponseRequest {
        response_id: "resp_pinned".into(),
        account_id,
        user_id,
        request_id: "r-created".into(),
    };
    let mut client = cp.client();
    client
        .record_response(record(owner, owner_user))
        .await
        .unwrap();
    // A replay (or a forged second report) never moves the response.
    client
        .record_response(record(accounts[2], other_user))
        .await
        .unwrap();
    let bad = client
        .record_response(pb::RecordResponseRequest {
            response_id: " ".into(),
            ..record(owner, owner_user)
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let continuing = |dp: &DataPlane, key_id: i64| pb::AdmitRequest {
        response_id: "resp_pinned".into(),
        ..admit_req(dp, key_id, "gpt-5")
    };
    let dp = attach(&cp, Vec::new()).await;
    for _ in 0..4 {
        let l = lease(admit(&cp, continuing(&dp, key)).await);
        assert_eq!(l.account.unwrap().account_id, owner);
        release(&cp, &dp, &[&l.lease_id]).await;
    }
    let operation = pb::AdmitRequest {
        response_operation: true,
        model: String::new(),
        ..continuing(&dp, key)
    };
    let l = lease(admit(&cp, operation.clone()).await);
    assert_eq!(l.account.unwrap().account_id, owner);
    release(&cp, &dp, &[&l.lease_id]).await;
    for req in [
        continuing(&dp, other_key),
        pb::AdmitRequest {
            response_id: "resp_never_seen".into(),
            ..operation.clone()
        },
    ] {
        assert_eq!(rejection(admit(&cp, req).await).code, "response_not_found");
    }
    // The owner already failed for this request: no other account may take it.
    let r = rejection(
        admit(
            &cp,
            pb::AdmitRequest {
                excluded_account_ids: vec![owner],
                ..continuing(&dp, key)
            },
        )
        .await,
    );
    assert_eq!(r.code, "response_account_unavailable");
    assert!(!r.message.contains(&owner.to_string()), "{}", r.message);
    drop(dp);

    let ControlPlane { store, cp: inner } = cp;
    let cp = ControlPlane {
        store,
        cp: inner.restart().await,
    };
    let dp = attach(&cp, Vec::new()).await;
    let l = lease(admit(&cp, continuing(&dp, key)).await);
    assert_eq!(l.account.unwrap().account_id, owner);
    release(&cp, &dp, &[&l.lease_id]).await;
    cp.stop().await;
}

/// RecordResponses (the data plane's batched call): each record is judged alone — an
/// invalid one is refused with its reason and costs the others nothing — a replay in
/// the same call keeps the first owner, and the records pin admission as
/// RecordResponse's do.
async fn records_in_one_call_are_judged_alone(backend: Backend) {
    let cp = ControlPlane::start(backend, |_| {}).await;
    let group = cp.group().await;
    let user = cp.user(5).await;
    let key = cp.key(user, Some(group)).await;
    let mut accounts = Vec::new();
    for name in ["a", "b", "c"] {
        accounts.push(
            cp.account(name, Some((group, 50)), api_key(&format!("sk-{name}")))
                .await,
        );
    }
    let record = |response_id: &str, account_id: i64| pb::RecordResponseRequest {
        response_id: response_id.into(),
        account_id,
        user_id: user,
        request_id: format!("r-{response_id}"),
    };
    let answer = cp
        .client()
        .record_responses(pb::RecordResponsesRequest {
            records: vec![
                record("resp_one", accounts[0]),
                record(" ", accounts[1]),
                record("resp_two", accounts[2]),
                record("resp_one", accounts[1]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.rejected.len(), 1, "{:?}", answer.rejected);
    let refused = &answer.rejected[0];
    assert_eq!(refused.request_id, "r- ");
    assert!(refused.reason.contains("response_id"), "{refused:?}");

    let dp = attach(&cp, Vec::new()).await;
    for (response_id, owner) in [("resp_one", accounts[0]), ("resp_two", accounts[2])] {
        let req = pb::AdmitRequest {
            response_id: response_id.into(),
            ..admit_req(&dp, key, "gpt-5")
        };
        let l = lease(admit(&cp, req).await);
        assert_eq!(l.account.unwrap().account_id, owner, "{response_id}");
        release(&cp, &dp, &[&l.lease_id]).await;
    }
    cp.stop().await;
}
