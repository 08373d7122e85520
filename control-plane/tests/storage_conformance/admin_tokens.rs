//! Admin tokens and the audit log: a token change and its audit entry commit together (or
//! not at all), names are unique among live tokens, revocation is one-way, last use only
//! moves forward; the log reads newest first with every filter.

use tollgate_control_plane::Error;
use tollgate_control_plane::storage::{AuditFilter, NewAdminToken, NewAuditEntry, Store};
use tollgate_shared::domain::AdminScope;
use tollgate_shared::now_ms;

fn token(name: &str, hash: &str, scope: AdminScope) -> NewAdminToken {
    NewAdminToken {
        name: name.into(),
        token_hash: hash.into(),
        token_hint: "tgat_a…beef".into(),
        scope,
        created_by: "bootstrap".into(),
        expires_at_ms: None,
    }
}

fn entry(actor: &str, action: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor_kind: "token".into(),
        actor: actor.into(),
        action: action.into(),
        target: String::new(),
        details: r#"{"name":"x"}"#.into(),
    }
}

async fn log(store: &Store) -> Vec<(String, String, String)> {
    store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.target))
        .collect()
}

pub(crate) async fn case_admin_token_lifecycle(store: &Store) {
    let t = store
        .create_admin_token(
            token("ops", "hash-1", AdminScope::Admin),
            entry("bootstrap", "CreateAdminToken"),
        )
        .await
        .unwrap();
    assert_eq!((t.name.as_str(), t.scope), ("ops", AdminScope::Admin));
    assert!(t.is_live(now_ms()) && t.revoked_at_ms.is_none() && t.last_used_at_ms.is_none());
    let id = t.id.to_string();
    assert_eq!(
        log(store).await,
        [("bootstrap".into(), "CreateAdminToken".into(), id.clone())]
    );
    assert_eq!(
        store.get_admin_token_by_hash("hash-1").await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(store.get_admin_token_by_hash("hash-2").await.unwrap(), None);

    // A live name (or a hash) taken: refused, and its audit entry rolled back with it.
    for (name, hash) in [("ops", "hash-2"), ("other", "hash-1")] {
        let e = store
            .create_admin_token(
                token(name, hash, AdminScope::Read),
                entry("bootstrap", "CreateAdminToken"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    }
    assert_eq!(log(store).await.len(), 1);

    // Last use only moves forward.
    store.touch_admin_token(t.id, 2_000).await.unwrap();
    store.touch_admin_token(t.id, 1_000).await.unwrap();
    let got = store
        .get_admin_token_by_hash("hash-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.last_used_at_ms, Some(2_000));

    let r = store
        .revoke_admin_token(t.id, entry("ops", "RevokeAdminToken"))
        .await
        .unwrap();
    assert!(r.revoked_at_ms.is_some() && !r.is_live(now_ms()));
    let e = store
        .revoke_admin_token(t.id, entry("ops", "RevokeAdminToken"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    let e = store
        .revoke_admin_token(999_999, entry("ops", "RevokeAdminToken"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert_eq!(
        log(store).await,
        [
            ("ops".into(), "RevokeAdminToken".into(), id.clone()),
            ("bootstrap".into(), "CreateAdminToken".into(), id),
        ]
    );

    // The name is free again once revoked; lists hide revoked tokens unless asked.
    let again = store
        .create_admin_token(
            NewAdminToken {
                expires_at_ms: Some(now_ms() - 1),
                ..token("ops", "hash-3", AdminScope::Keys)
            },
            entry("bootstrap", "CreateAdminToken"),
        )
        .await
        .unwrap();
    assert!(!again.is_live(now_ms()), "an expired token is not live");
    let live: Vec<_> = store.list_admin_tokens(false).await.unwrap();
    assert_eq!(live.iter().map(|t| t.id).collect::<Vec<_>>(), [again.id]);
    let all: Vec<_> = store.list_admin_tokens(true).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        [t.id, again.id]
    );
}

pub(crate) async fn case_audit_filters_and_order(store: &Store) {
    let before = now_ms();
    let mut ids = Vec::new();
    for (actor, action) in [
        ("ops", "CreateUser"),
        ("billing", "CreateKey"),
        ("ops", "CreateKey"),
        ("bootstrap", "CreateAdminToken"),
        ("ops", "DeleteKey"),
    ] {
        let e = store
            .record_audit(&NewAuditEntry {
                target: "7".into(),
                ..entry(actor, action)
            })
            .await
            .unwrap();
        assert!(e.at_ms >= before);
        assert_eq!(
            (e.target.as_str(), e.details.as_str()),
            ("7", r#"{"name":"x"}"#)
        );
        ids.push(e.id);
    }
    let list = |f: AuditFilter| async move {
        store
            .list_audit(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(list(AuditFilter::default()).await, newest_first);
    assert_eq!(
        list(AuditFilter {
            actor: Some("ops".into()),
            ..Default::default()
        })
        .await,
        [ids[4], ids[2], ids[0]]
    );
    assert_eq!(
        list(AuditFilter {
            action: Some("CreateKey".into()),
            ..Default::default()
        })
        .await,
        [ids[2], ids[1]]
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("ops".into()),
            action: Some("CreateKey".into()),
            ..Default::default()
        })
        .await,
        [ids[2]]
    );
    assert_eq!(
        list(AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await,
        [ids[4], ids[3]]
    );
    assert_eq!(
        list(AuditFilter {
            limit: 2,
            before_id: Some(ids[3]),
            ..Default::default()
        })
        .await,
        [ids[2], ids[1]]
    );
    assert_eq!(
        list(AuditFilter {
            since_ms: Some(before),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert!(
        list(AuditFilter {
            since_ms: Some(now_ms() + 60_000),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}
