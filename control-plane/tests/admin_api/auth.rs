//! Authentication and status codes: missing or wrong tokens, NOT_FOUND and ALREADY_EXISTS.

use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry as SubExpiry;
use tonic::Code;

use crate::admin_support::{self, Harness, assert_code};
use crate::helpers::{MISSING, new_group, new_key, new_user};
use tollgate_tests::Backend;

// ------------------------------------------------------------------ 6. auth and codes

pub(crate) async fn missing_token_or_wrong_token_is_unauthenticated(backend: Backend) {
    let h = Harness::start(backend).await;
    let before = h.snapshot().await;
    for header in [
        None,
        Some("Bearer wrong-token-0123456789abcdef"),
        Some("Basic dGVzdDp0ZXN0"),
        Some(admin_support::TOKEN),
        Some("Bearer"),
    ] {
        let mut c = h.client_with(header);
        let r = c
            .create_user(pb::CreateUserRequest {
                email: "intruder@example.com".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "{header:?}");
        let r = c.list_keys(pb::ListKeysRequest::default()).await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "{header:?}");
        let r = c.reset_key_quota(pb::KeyIdRequest { id: 1 }).await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "{header:?}");
    }
    assert!(h.snapshot().await == before);
    h.stop().await;
}

pub(crate) async fn missing_rows_are_not_found_and_duplicates_already_exist(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let nf = Code::NotFound;

    assert_code(
        c.get_user(pb::GetUserRequest { id: MISSING }).await,
        nf,
        "user",
    );
    assert_code(
        c.update_user(pb::UpdateUserRequest {
            id: MISSING,
            ..Default::default()
        })
        .await,
        nf,
        "user",
    );
    assert_code(
        c.delete_user(pb::DeleteUserRequest {
            id: MISSING,
            cascade: true,
        })
        .await,
        nf,
        "user",
    );
    let adj = pb::AdjustBalanceRequest {
        user_id: MISSING,
        op: pb::BalanceOp::Set as i32,
        amount_nanos: 1,
        reason: "r".into(),
        allow_negative: false,
    };
    assert_code(c.adjust_balance(adj).await, nf, "user");
    assert_code(
        c.get_group(pb::GetGroupRequest { id: MISSING }).await,
        nf,
        "group",
    );
    assert_code(
        c.delete_group(pb::DeleteGroupRequest {
            id: MISSING,
            cascade: true,
        })
        .await,
        nf,
        "group",
    );
    assert_code(
        c.get_key(pb::GetKeyRequest { id: MISSING }).await,
        nf,
        "api key",
    );
    assert_code(
        c.update_key(pb::UpdateKeyRequest {
            id: MISSING,
            ..Default::default()
        })
        .await,
        nf,
        "api key",
    );
    let k = pb::KeyIdRequest { id: MISSING };
    assert_code(c.disable_key(k).await, nf, "api key");
    assert_code(c.enable_key(k).await, nf, "api key");
    assert_code(c.delete_key(k).await, nf, "api key");
    assert_code(c.reset_key_quota(k).await, nf, "api key");
    assert_code(c.clear_key_expiration(k).await, nf, "api key");
    assert_code(
        c.get_account(pb::GetAccountRequest { id: MISSING }).await,
        nf,
        "account",
    );
    assert_code(
        c.update_account(pb::UpdateAccountRequest {
            id: MISSING,
            ..Default::default()
        })
        .await,
        nf,
        "account",
    );
    assert_code(
        c.delete_account(pb::DeleteAccountRequest { id: MISSING })
            .await,
        nf,
        "account",
    );
    assert_code(
        c.clear_account_error(pb::AccountIdRequest { id: MISSING })
            .await,
        nf,
        "account",
    );
    assert_code(
        c.clear_account_rate_limit(pb::AccountIdRequest { id: MISSING })
            .await,
        nf,
        "account",
    );
    assert_code(
        c.set_account_groups(pb::SetAccountGroupsRequest {
            account_id: MISSING,
            groups: vec![],
        })
        .await,
        nf,
        "account",
    );
    assert_code(
        c.get_subscription(pb::GetSubscriptionRequest { id: MISSING })
            .await,
        nf,
        "subscription",
    );
    assert_code(
        c.extend_subscription(pb::ExtendSubscriptionRequest {
            id: MISSING,
            days: 1,
        })
        .await,
        nf,
        "subscription",
    );
    assert_code(
        c.revoke_subscription(pb::RevokeSubscriptionRequest { id: MISSING })
            .await,
        nf,
        "subscription",
    );
    assert_code(
        c.get_price(pb::GetPriceRequest {
            model: "no-such-model".into(),
        })
        .await,
        nf,
        "no-such-model",
    );
    assert_code(
        c.delete_price(pb::DeletePriceRequest {
            model: "no-such-model".into(),
        })
        .await,
        nf,
        "no-such-model",
    );

    // Deleted rows are gone for good.
    let user = new_user(&mut c, "d@example.com").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    c.delete_key(pb::KeyIdRequest { id: key.id }).await.unwrap();
    assert_code(
        c.get_key(pb::GetKeyRequest { id: key.id }).await,
        nf,
        "api key",
    );
    assert_code(
        c.delete_key(pb::KeyIdRequest { id: key.id }).await,
        nf,
        "api key",
    );

    // Duplicates.
    let before = h.snapshot().await;
    let dup_user = c
        .create_user(pb::CreateUserRequest {
            email: "d@example.com".into(),
            ..Default::default()
        })
        .await;
    assert_code(dup_user, Code::AlreadyExists, "d@example.com");
    assert!(h.snapshot().await == before);
    let g = new_group(&mut c, "team", "subscription").await;
    let before_group = h.snapshot().await;
    assert_code(
        c.create_group(pb::CreateGroupRequest {
            name: "team".into(),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        "team",
    );
    assert!(h.snapshot().await == before_group);
    let assign = pb::AssignSubscriptionRequest {
        user_id: user.id,
        group_id: g.id,
        expiry: Some(SubExpiry::DurationDays(30)),
        ..Default::default()
    };
    c.assign_subscription(assign.clone()).await.unwrap();
    let before_sub = h.snapshot().await;
    assert_code(
        c.assign_subscription(assign).await,
        Code::AlreadyExists,
        "subscription",
    );
    assert!(h.snapshot().await == before_sub);

    h.stop().await;
}
