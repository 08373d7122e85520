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
    };
    let r = c
        .adjust_balance(adj(pb::BalanceOp::Subtract, 7_000_000_000))
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

    c.delete_user(pb::DeleteUserRequest { id: alice.id })
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
