//! Subscriptions: assign, extend, revoke.

use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry as SubExpiry;

use crate::admin_support::Harness;
use crate::helpers::{DAY_MS, new_user};
use tollgate_tests::Backend;

pub(crate) async fn subscriptions_lifecycle(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "sub@example.com").await;
    let group = c
        .create_group(pb::CreateGroupRequest {
            name: "pro".into(),
            kind: "subscription".into(),
            rate_multiplier: "0".into(),
            daily_limit_nanos: 10_000_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (group.kind.as_str(), group.rate_multiplier.as_str()),
        ("subscription", "0")
    );

    let start = now_ms();
    let sub = c
        .assign_subscription(pb::AssignSubscriptionRequest {
            user_id: user.id,
            group_id: group.id,
            starts_at_ms: Some(start),
            expiry: Some(SubExpiry::DurationDays(30)),
            notes: "trial".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (sub.status.as_str(), sub.starts_at_ms, sub.expires_at_ms),
        ("active", start, start + 30 * DAY_MS)
    );
    let ext = c
        .extend_subscription(pb::ExtendSubscriptionRequest {
            id: sub.id,
            days: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ext.expires_at_ms, start + 35 * DAY_MS);
    let got = c
        .get_subscription(pb::GetSubscriptionRequest { id: sub.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, ext);
    let listed = c
        .list_subscriptions(pb::ListSubscriptionsRequest {
            user_id: user.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subscriptions, vec![ext.clone()]);
    let revoked = c
        .revoke_subscription(pb::RevokeSubscriptionRequest { id: sub.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, "suspended");
    // Once revoked, a new one can be assigned.
    c.assign_subscription(pb::AssignSubscriptionRequest {
        user_id: user.id,
        group_id: group.id,
        expiry: Some(SubExpiry::ExpiresAtMs(now_ms() + DAY_MS)),
        ..Default::default()
    })
    .await
    .unwrap();

    h.stop().await;
}
