//! In-process checks of what the wire tests cannot see: every successful change publishes
//! the invalidation data planes need, and creations, reads and refused requests publish
//! nothing (every message makes data planes distrust authorizations loading at that moment).

use tokio::sync::broadcast::Receiver;

use super::*;
use crate::crypto::SecretBox;
use crate::events::Invalidation;

async fn service() -> (AdminService, Receiver<Invalidation>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    let secrets = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
    let store = Store::connect(&url, secrets).await.unwrap();
    let invalidations = Invalidations::new();
    let rx = invalidations.subscribe();
    let ctx = AdminContext::new(store, invalidations, &Config::for_data_dir(dir.path()));
    (AdminService::new(ctx), rx, dir)
}

fn drain(rx: &mut Receiver<Invalidation>) -> Vec<Invalidation> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// A request as `AdminGuard` passes it on: with its authenticated caller.
fn request<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.extensions_mut().insert(Caller::bootstrap());
    r
}

macro_rules! call {
    ($svc:expr, $method:ident, $req:expr) => {
        $svc.$method(request($req)).await.unwrap().into_inner()
    };
}

#[tokio::test]
async fn every_change_publishes_its_invalidation() {
    let (svc, mut rx, _dir) = service().await;
    let user = call!(
        svc,
        create_user,
        pb::CreateUserRequest {
            email: "a@example.com".into(),
            ..Default::default()
        }
    );
    let group = call!(
        svc,
        create_group,
        pb::CreateGroupRequest {
            name: "pro".into(),
            kind: "subscription".into(),
            ..Default::default()
        }
    );
    drain(&mut rx);

    let u = Invalidation::user(user.id);
    call!(
        svc,
        update_user,
        pb::UpdateUserRequest {
            id: user.id,
            name: Some("A".into()),
            ..Default::default()
        }
    );
    assert_eq!(drain(&mut rx), vec![u.clone()]);
    call!(
        svc,
        adjust_balance,
        pb::AdjustBalanceRequest {
            user_id: user.id,
            op: pb::BalanceOp::Add as i32,
            amount_nanos: 5,
            reason: "gift".into(),
            allow_negative: false,
        }
    );
    assert_eq!(drain(&mut rx), vec![u.clone()]);
    call!(
        svc,
        update_group,
        pb::UpdateGroupRequest {
            id: group.id,
            rate_multiplier: Some("0.5".into()),
            ..Default::default()
        }
    );
    assert_eq!(drain(&mut rx), [Invalidation::group(group.id)]);

    let key = call!(
        svc,
        create_key,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        }
    )
    .key
    .unwrap();
    // Creations publish nothing: no cache holds a new id.
    assert_eq!(drain(&mut rx), []);
    let k = Invalidation::key(key.id);
    let id = pb::KeyIdRequest { id: key.id };
    call!(
        svc,
        update_key,
        pb::UpdateKeyRequest {
            id: key.id,
            quota_nanos: Some(10),
            ..Default::default()
        }
    );
    call!(svc, disable_key, id);
    call!(svc, enable_key, id);
    call!(svc, reset_key_quota, id);
    call!(svc, clear_key_expiration, id);
    call!(svc, delete_key, id);
    assert_eq!(drain(&mut rx), vec![k; 6]);

    let acct = call!(
        svc,
        create_account,
        pb::CreateAccountRequest {
            name: "up".into(),
            credential: Some(pb::create_account_request::Credential::ApiKey(
                pb::ApiKeyCredential {
                    api_key: "sk-up-0001".into(),
                },
            )),
            ..Default::default()
        }
    );
    assert_eq!(drain(&mut rx), []);
    let a = Invalidation::account(acct.id);
    let aid = pb::AccountIdRequest { id: acct.id };
    call!(
        svc,
        update_account,
        pb::UpdateAccountRequest {
            id: acct.id,
            priority: Some(1),
            ..Default::default()
        }
    );
    call!(
        svc,
        set_account_groups,
        pb::SetAccountGroupsRequest {
            account_id: acct.id,
            groups: vec![pb::AccountGroup {
                group_id: group.id,
                priority: 1,
            }],
        }
    );
    call!(svc, clear_account_error, aid);
    call!(svc, clear_account_rate_limit, aid);
    call!(
        svc,
        delete_account,
        pb::DeleteAccountRequest { id: acct.id }
    );
    assert_eq!(drain(&mut rx), vec![a; 5]);

    let sub = call!(
        svc,
        assign_subscription,
        pb::AssignSubscriptionRequest {
            user_id: user.id,
            group_id: group.id,
            expiry: Some(pb::assign_subscription_request::Expiry::DurationDays(3)),
            ..Default::default()
        }
    );
    call!(
        svc,
        extend_subscription,
        pb::ExtendSubscriptionRequest {
            id: sub.id,
            days: 1
        }
    );
    call!(
        svc,
        revoke_subscription,
        pb::RevokeSubscriptionRequest { id: sub.id }
    );
    assert_eq!(drain(&mut rx), vec![u.clone(); 3]);

    call!(
        svc,
        delete_group,
        pb::DeleteGroupRequest {
            id: group.id,
            cascade: true
        }
    );
    call!(
        svc,
        delete_user,
        pb::DeleteUserRequest {
            id: user.id,
            cascade: true
        }
    );
    assert_eq!(drain(&mut rx), [Invalidation::group(group.id), u]);
}

#[tokio::test]
async fn refused_and_read_only_calls_publish_nothing() {
    let (svc, mut rx, _dir) = service().await;
    let user = call!(
        svc,
        create_user,
        pb::CreateUserRequest {
            email: "b@example.com".into(),
            ..Default::default()
        }
    );
    let key = call!(
        svc,
        create_key,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        }
    )
    .key
    .unwrap();
    drain(&mut rx);

    let bad = svc
        .update_key(request(pb::UpdateKeyRequest {
            id: key.id,
            quota_nanos: Some(-1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = svc
        .reset_key_quota(request(pb::KeyIdRequest { id: 12345 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    call!(svc, get_key, pb::GetKeyRequest { id: key.id });
    call!(svc, list_keys, pb::ListKeysRequest::default());
    call!(svc, list_users, pb::ListUsersRequest::default());
    assert_eq!(drain(&mut rx), []);
}

#[tokio::test]
async fn a_write_without_an_authenticated_caller_is_refused_and_writes_nothing() {
    let (svc, _rx, _dir) = service().await;
    let e = svc
        .create_user(Request::new(pb::CreateUserRequest {
            email: "a@example.com".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    let users = svc
        .ctx
        .store
        .list_users(None, crate::model::Page::default())
        .await
        .unwrap();
    assert!(users.items.is_empty());
}
