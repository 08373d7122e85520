//! Both planes refuse the same cases with the same code and message. Each case is put
//! in place through the Admin API (or SQL for states the API does not set), then asked
//! of both planes: the data plane's authorization checks on its cached key info, through
//! real HTTP; and the control plane's Admit, through its real gRPC API on a session of our
//! own, as a data plane whose cache is stale would ask it. The client of a stale data
//! plane sees Admit's rejection, so the two must agree (responses-flow.md §1). The billing
//! re-check answers with its own code (§3.3), and the same message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_shared::ErrorCode;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_shared::proto::gateway::v1 as pb;
use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tollgate_shared::refusal::{Refusal, Window};
use tollgate_tests::fixture::Gateway;
use tonic::transport::Channel;

const MODEL: &str = "gpt-5.1";

/// A Gateway session of our own, so that the test can call Admit as a data plane does.
struct Session {
    client: GatewayClient<Channel>,
    id: String,
    _driver: JoinSet<()>,
}

impl Session {
    async fn open(cp_url: &str) -> Self {
        // As a data plane: with the data-plane certificate over mutual TLS.
        let pki = tollgate_tests::cluster::test_pki();
        let identity = (pki.data_plane_cert.as_str(), pki.data_plane_key.as_str());
        let mut client =
            GatewayClient::new(tollgate_tests::cluster::channel(cp_url, Some(identity)));
        let attach = pb::SessionUp {
            msg: Some(pb::session_up::Msg::Attach(pb::Attach {
                data_plane_id: format!("refusals-{}", uuid::Uuid::new_v4().simple()),
                held_leases: vec![],
                version: "test".into(),
            })),
        };
        let heartbeats = futures::stream::unfold(1u64, |seq| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let beat = pb::SessionUp {
                msg: Some(pb::session_up::Msg::Heartbeat(pb::Heartbeat {
                    seq,
                    in_flight: 0,
                })),
            };
            Some((beat, seq + 1))
        });
        let up = futures::stream::once(async move { attach }).chain(heartbeats);
        let mut down = client.session(up).await.unwrap().into_inner();
        let id = match down.next().await {
            Some(Ok(pb::SessionDown {
                msg: Some(pb::session_down::Msg::Attached(a)),
            })) => a.session_id,
            other => panic!("expected Attached, got {other:?}"),
        };
        // Keep reading (invalidations, acks) so the stream never backs up.
        let mut driver = JoinSet::new();
        driver.spawn(async move { while let Some(Ok(_)) = down.next().await {} });
        Self {
            client,
            id,
            _driver: driver,
        }
    }

    /// Admit for the key; a granted lease is released at once.
    async fn admit(&self, key_id: i64) -> Option<pb::Rejection> {
        let answer = self
            .client
            .clone()
            .admit(pb::AdmitRequest {
                session_id: self.id.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                key_id,
                model: MODEL.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .result
            .expect("Admit answered neither a lease nor a rejection");
        match answer {
            pb::admit_response::Result::Rejection(r) => Some(r),
            pb::admit_response::Result::Lease(l) => {
                self.client
                    .clone()
                    .release(pb::ReleaseRequest {
                        session_id: self.id.clone(),
                        lease_ids: vec![l.lease_id],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                None
            }
        }
    }
}

/// One user, group, account and key per case, so that cases do not disturb each other.
struct Setup {
    user: i64,
    group: i64,
    key_id: i64,
    key: String,
}

async fn setup(gw: &Gateway, subscription_limits: Option<[i64; 3]>) -> Setup {
    let user = gw.user(5, 10).await;
    let group = match subscription_limits {
        None => gw.group("1").await,
        Some([daily, weekly, monthly]) => {
            gw.admin
                .clone()
                .create_group(admin::CreateGroupRequest {
                    name: format!("sub-{}", uuid::Uuid::new_v4().simple()),
                    kind: "subscription".into(),
                    daily_limit_nanos: daily,
                    weekly_limit_nanos: weekly,
                    monthly_limit_nanos: monthly,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .id
        }
    };
    gw.api_key_account(&format!("up-{group}"), group, 10, 5)
        .await;
    let (key_id, key) = gw.key(user, Some(group)).await;
    Setup {
        user,
        group,
        key_id,
        key,
    }
}

async fn sql(gw: &Gateway, statement: &str, id: i64) {
    let db = sqlx::SqlitePool::connect(&gw.cp.database_url())
        .await
        .unwrap();
    sqlx::query(statement).bind(id).execute(&db).await.unwrap();
    db.close().await;
}

/// An Admin write that drops the key's cached entries in both planes after a change
/// made in SQL behind their backs.
async fn touch_key(gw: &Gateway, key_id: i64) {
    gw.admin
        .clone()
        .update_key(admin::UpdateKeyRequest {
            id: key_id,
            name: Some(format!("touched-{}", uuid::Uuid::new_v4().simple())),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn touch_user(gw: &Gateway, user: i64) {
    gw.admin
        .clone()
        .update_user(admin::UpdateUserRequest {
            id: user,
            notes: Some(format!("touched-{}", uuid::Uuid::new_v4().simple())),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// What the data plane answers over HTTP: (status, error object).
async fn through_data_plane(gw: &Gateway, key: &str) -> (u16, Value) {
    let r = gw
        .post(0, key, json!({"model": MODEL, "input": "hi"}))
        .await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].clone())
}

/// Both planes refuse with `want`: the data plane with its code, status, type and
/// message; Admit with the same code (the re-check's for billing refusals) and message.
async fn assert_both_refuse(gw: &Gateway, session: &Session, s: &Setup, case: &str, want: Refusal) {
    let (status, err) = through_data_plane(gw, &s.key).await;
    let code = want.code();
    assert_eq!(status, code.http_status().as_u16(), "{case}: {err}");
    assert_eq!(err["type"], code.error_type().as_str(), "{case}: {err}");
    assert_eq!(err["code"], code.client_code().unwrap(), "{case}: {err}");
    assert_eq!(err["message"], want.message(), "{case}: {err}");

    let r = session
        .admit(s.key_id)
        .await
        .unwrap_or_else(|| panic!("{case}: Admit granted a lease"));
    let admit_code = ErrorCode::from_name(&r.code).unwrap();
    let billing = matches!(
        want,
        Refusal::InsufficientBalance | Refusal::NoSubscription | Refusal::UsageLimit(_)
    );
    if billing {
        assert_eq!(admit_code, ErrorCode::BillingRejected, "{case}: {r:?}");
    } else {
        assert_eq!(admit_code, code, "{case}: {r:?}");
    }
    assert_eq!(err["message"], r.message.as_str(), "{case}: {r:?}");
}

#[tokio::test]
async fn both_planes_refuse_the_same_cases_alike() {
    let gw = Gateway::start(1).await;
    let session = Session::open(&gw.cp.url()).await;
    let mut admin = gw.admin.clone();

    // The baseline passes both.
    let s = setup(&gw, None).await;
    assert_eq!(through_data_plane(&gw, &s.key).await.0, 200);
    assert_eq!(session.admit(s.key_id).await, None);

    // Unknown key: a key the control plane never issued.
    let (status, err) = through_data_plane(&gw, "sk-not-a-key").await;
    let r = session.admit(i64::MAX).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(err["code"], "INVALID_API_KEY");
    assert_eq!(
        ErrorCode::from_name(&r.code),
        Some(ErrorCode::InvalidApiKey)
    );
    assert_eq!(err["message"], r.message.as_str());

    let s = setup(&gw, None).await;
    admin
        .disable_key(admin::KeyIdRequest { id: s.key_id })
        .await
        .unwrap();
    assert_both_refuse(&gw, &session, &s, "key disabled", Refusal::KeyDisabled).await;

    let s = setup(&gw, None).await;
    sql(
        &gw,
        "UPDATE api_keys SET status = 'quota_exhausted' WHERE id = $1",
        s.key_id,
    )
    .await;
    touch_key(&gw, s.key_id).await;
    assert_both_refuse(
        &gw,
        &session,
        &s,
        "quota_exhausted status",
        Refusal::KeyQuotaExhausted,
    )
    .await;

    let s = setup(&gw, None).await;
    sql(
        &gw,
        "UPDATE api_keys SET quota_nanos = 5, quota_used_nanos = 5 WHERE id = $1",
        s.key_id,
    )
    .await;
    touch_key(&gw, s.key_id).await;
    assert_both_refuse(
        &gw,
        &session,
        &s,
        "quota used up",
        Refusal::KeyQuotaExhausted,
    )
    .await;

    let s = setup(&gw, None).await;
    sql(
        &gw,
        "UPDATE api_keys SET status = 'expired' WHERE id = $1",
        s.key_id,
    )
    .await;
    touch_key(&gw, s.key_id).await;
    assert_both_refuse(&gw, &session, &s, "expired status", Refusal::KeyExpired).await;

    let s = setup(&gw, None).await;
    sql(
        &gw,
        "UPDATE api_keys SET expires_at_ms = 1000 WHERE id = $1",
        s.key_id,
    )
    .await;
    touch_key(&gw, s.key_id).await;
    assert_both_refuse(&gw, &session, &s, "expiry passed", Refusal::KeyExpired).await;

    // Several things wrong: both planes name the same first one (quota before expiry).
    let s = setup(&gw, None).await;
    sql(
        &gw,
        "UPDATE api_keys SET status = 'expired', quota_nanos = 5, quota_used_nanos = 9 WHERE id = $1",
        s.key_id,
    )
    .await;
    touch_key(&gw, s.key_id).await;
    assert_both_refuse(
        &gw,
        &session,
        &s,
        "expired and used up",
        Refusal::KeyQuotaExhausted,
    )
    .await;

    let s = setup(&gw, None).await;
    admin
        .update_user(admin::UpdateUserRequest {
            id: s.user,
            status: Some("disabled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_both_refuse(&gw, &session, &s, "user disabled", Refusal::UserInactive).await;

    let s = setup(&gw, None).await;
    admin
        .delete_user(admin::DeleteUserRequest {
            id: s.user,
            cascade: true,
        })
        .await
        .unwrap();
    // The cascade disabled the key; enabled again, it belongs to a deleted user.
    admin
        .enable_key(admin::KeyIdRequest { id: s.key_id })
        .await
        .unwrap();
    assert_both_refuse(&gw, &session, &s, "user deleted", Refusal::UserNotFound).await;

    let s = setup(&gw, None).await;
    admin
        .update_group(admin::UpdateGroupRequest {
            id: s.group,
            status: Some("disabled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_both_refuse(&gw, &session, &s, "group disabled", Refusal::GroupDisabled).await;

    let s = setup(&gw, None).await;
    admin
        .adjust_balance(admin::AdjustBalanceRequest {
            user_id: s.user,
            op: admin::BalanceOp::Set as i32,
            amount_nanos: 0,
            reason: "spent".into(),
            allow_negative: false,
        })
        .await
        .unwrap();
    assert_both_refuse(
        &gw,
        &session,
        &s,
        "no balance",
        Refusal::InsufficientBalance,
    )
    .await;

    // Subscription groups: limits of 1000, 2000 and 3000 nano-USD.
    let limits = Some([1_000, 2_000, 3_000]);
    let s = setup(&gw, limits).await;
    assert_both_refuse(
        &gw,
        &session,
        &s,
        "no subscription",
        Refusal::NoSubscription,
    )
    .await;

    // Usage per window: each case puts one window at its limit, the earlier ones under.
    for (window, [daily, weekly, monthly]) in [
        (Window::Daily, [1_000, 0, 0]),
        (Window::Weekly, [999, 2_000, 0]),
        (Window::Monthly, [999, 1_999, 3_000]),
    ] {
        let column = window.name();
        let s = setup(&gw, limits).await;
        let sub = admin
            .assign_subscription(admin::AssignSubscriptionRequest {
                user_id: s.user,
                group_id: s.group,
                expiry: Some(admin::assign_subscription_request::Expiry::DurationDays(30)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // The balance does not matter in subscription mode: 0, and still admitted.
        admin
            .adjust_balance(admin::AdjustBalanceRequest {
                user_id: s.user,
                op: admin::BalanceOp::Set as i32,
                amount_nanos: 0,
                reason: "subscription only".into(),
                allow_negative: false,
            })
            .await
            .unwrap();
        assert_eq!(session.admit(s.key_id).await, None, "{column}");
        assert_eq!(through_data_plane(&gw, &s.key).await.0, 200, "{column}");
        // That request is charged to the subscription's windows: wait for its charge, or
        // it could land after the windows are set below and push another one over.
        let admin2 = admin.clone();
        tollgate_tests::eventually(
            "the request's usage charged",
            Duration::from_secs(10),
            || {
                let mut admin = admin2.clone();
                async move {
                    admin
                        .query_usage(admin::QueryUsageRequest {
                            filter: Some(admin::UsageFilter {
                                user_id: s.user,
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .records
                        .len()
                        == 1
                }
            },
        )
        .await;
        sql(
            &gw,
            &format!(
                "UPDATE subscriptions SET daily_usage_nanos = {daily}, \
                 weekly_usage_nanos = {weekly}, monthly_usage_nanos = {monthly}, \
                 daily_window_start_ms = {now}, weekly_window_start_ms = {now}, \
                 monthly_window_start_ms = {now} WHERE id = $1",
                now = tollgate_shared::now_ms(),
            ),
            sub.id,
        )
        .await;
        touch_user(&gw, s.user).await;
        assert_both_refuse(&gw, &session, &s, column, Refusal::UsageLimit(window)).await;
    }
}
