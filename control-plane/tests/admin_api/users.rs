//! Users: balance operations and pagination.

use tollgate_shared::proto::admin::v1 as pb;
use tonic::Code;

use crate::admin_support::{Harness, assert_code};
use crate::helpers::new_user;
use tollgate_tests::Backend;

pub(crate) async fn users_balance_and_pagination(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let alice = c
        .create_user(pb::CreateUserRequest {
            email: "alice@example.com".into(),
            name: "Alice".into(),
            initial_balance_nanos: 5_000_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (alice.role.as_str(), alice.status.as_str()),
        ("user", "active")
    );
    assert_eq!((alice.concurrency, alice.balance_nanos), (5, 5_000_000_000));
    for i in 0..4 {
        new_user(&mut c, &format!("u{i}@example.com")).await;
    }

    // Pages of two: 2 + 2 + 1, then no token.
    let mut token = String::new();
    let mut seen = Vec::new();
    for expected in [2, 2, 1] {
        let page = c
            .list_users(pb::ListUsersRequest {
                page: Some(pb::PageRequest {
                    limit: 2,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.users.len(), expected);
        seen.extend(page.users.iter().map(|u| u.id));
        token = page.next_page_token;
        if expected == 1 {
            assert_eq!(token, "");
        } else {
            assert!(!token.is_empty());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in id order without repeats");

    let adj = |op: pb::BalanceOp, amount| pb::AdjustBalanceRequest {
        user_id: alice.id,
        op: op as i32,
        amount_nanos: amount,
        reason: "support ticket 42".into(),
        allow_negative: false,
    };
    // Below zero needs allow_negative: refused with a message naming the flag, and
    // nothing changes.
    let refused = c
        .adjust_balance(adj(pb::BalanceOp::Subtract, 7_000_000_000))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--allow-negative"),
        "{refused:?}"
    );
    let unchanged = c
        .get_user(pb::GetUserRequest { id: alice.id })
        .await
        .unwrap();
    assert_eq!(unchanged.into_inner().balance_nanos, 5_000_000_000);
    let r = c
        .adjust_balance(pb::AdjustBalanceRequest {
            allow_negative: true,
            ..adj(pb::BalanceOp::Subtract, 7_000_000_000)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.user.unwrap().balance_nanos, -2_000_000_000);
    let e = r.entry.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.delta_nanos, e.balance_after_nanos),
        ("subtract", -7_000_000_000, -2_000_000_000)
    );
    let r = c
        .adjust_balance(adj(pb::BalanceOp::Add, 3_000_000_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.user.unwrap().balance_nanos, 1_000_000_000);
    let r = c
        .adjust_balance(adj(pb::BalanceOp::Set, 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.entry.unwrap().delta_nanos, 10 - 1_000_000_000);
    let ledger = c
        .list_balance_ledger(pb::ListBalanceLedgerRequest {
            user_id: alice.id,
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = ledger.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["initial", "subtract", "add", "set"]);
    assert!(
        ledger.entries[1..]
            .iter()
            .all(|e| e.reason == "support ticket 42")
    );

    let disabled = c
        .update_user(pb::UpdateUserRequest {
            id: alice.id,
            status: Some("disabled".into()),
            role: Some("admin".into()),
            concurrency: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            disabled.status.as_str(),
            disabled.role.as_str(),
            disabled.concurrency
        ),
        ("disabled", "admin", 0)
    );
    let only_disabled = c
        .list_users(pb::ListUsersRequest {
            status: "disabled".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        only_disabled.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        [alice.id]
    );

    c.delete_user(pb::DeleteUserRequest {
        id: alice.id,
        cascade: true,
    })
    .await
    .unwrap();
    assert_code(
        c.get_user(pb::GetUserRequest { id: alice.id }).await,
        Code::NotFound,
        "user",
    );
    // The e-mail is free again once the user is deleted.
    new_user(&mut c, "alice@example.com").await;

    h.stop().await;
}

/// Deleting a user or a group that still has API keys is refused with a message naming
/// `--cascade`; with `cascade` the keys are disabled (counted in the answer) and no key
/// is listed as active for a deleted owner.
pub(crate) async fn delete_with_keys_needs_cascade(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let bob = new_user(&mut c, "bob@example.com").await;
    let group = crate::helpers::new_group(&mut c, "team", "standard").await;
    let key = |user_id, group_id| pb::CreateKeyRequest {
        user_id,
        name: "k".into(),
        group_id,
        ..Default::default()
    };
    let (in_group, _) = crate::helpers::new_key(&mut c, key(bob.id, Some(group.id))).await;
    let (plain, _) = crate::helpers::new_key(&mut c, key(bob.id, None)).await;
    let keys_of = |user_id, group_id| pb::ListKeysRequest {
        user_id,
        group_id,
        page: None,
    };

    let group_refused = c
        .delete_group(pb::DeleteGroupRequest {
            id: group.id,
            cascade: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        group_refused.code(),
        Code::FailedPrecondition,
        "{group_refused:?}"
    );
    assert!(
        group_refused.message().contains("--cascade"),
        "{group_refused:?}"
    );
    let user_refused = c
        .delete_user(pb::DeleteUserRequest {
            id: bob.id,
            cascade: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        user_refused.code(),
        Code::FailedPrecondition,
        "{user_refused:?}"
    );
    assert!(
        user_refused.message().contains("2 API key(s)"),
        "{user_refused:?}"
    );
    // Both still there, the keys active.
    c.get_group(pb::GetGroupRequest { id: group.id })
        .await
        .unwrap();
    c.get_user(pb::GetUserRequest { id: bob.id }).await.unwrap();

    let gone = c
        .delete_group(pb::DeleteGroupRequest {
            id: group.id,
            cascade: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.keys_disabled, 1);
    let listed = c
        .list_keys(keys_of(bob.id, 0))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let status = |id| {
        listed
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.status.clone())
            .unwrap()
    };
    assert_eq!(status(in_group.id), "disabled");
    assert_eq!(status(plain.id), "active");

    let gone = c
        .delete_user(pb::DeleteUserRequest {
            id: bob.id,
            cascade: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.keys_disabled, 1, "the one still active");
    assert_code(
        c.get_user(pb::GetUserRequest { id: bob.id }).await,
        Code::NotFound,
        "user",
    );
    let listed = c
        .list_keys(keys_of(bob.id, 0))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        listed.iter().all(|k| k.status != "active"),
        "a deleted user's key is listed as active: {listed:?}"
    );
    h.stop().await;
}
