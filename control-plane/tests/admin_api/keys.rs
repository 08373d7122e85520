//! API keys: the secret shown once, reactivation by quota reset or expiry change,
//! partial updates, status changes and delete.

use tollgate_control_plane::model::Credential;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_key_request::Expiry;
use tonic::Code;

use crate::admin_support::{Client, Harness, Value, assert_code};
use crate::helpers::{DAY_MS, api_key_account, new_group, new_key, new_user, sha256_hex};
use tollgate_tests::Backend;

// ------------------------------------------------------------------ 1. secrets

pub(crate) async fn key_secret_is_shown_once_and_only_its_hash_is_stored(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "alice@example.com").await;

    let before = now_ms();
    let (key, secret) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            name: "laptop".into(),
            expiry: Some(Expiry::ExpiresInDays(30)),
            ..Default::default()
        },
    )
    .await;
    let hex_part = secret
        .strip_prefix("sk-")
        .expect("generated keys start with sk-");
    assert_eq!(hex_part.len(), 64, "{secret}");
    assert!(
        hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    assert_eq!(
        key.key_hint,
        format!("{}…{}", &secret[..6], &secret[secret.len() - 4..])
    );
    let expires = key.expires_at_ms.unwrap();
    assert!(expires >= before + 30 * DAY_MS && expires <= now_ms() + 30 * DAY_MS);
    // Any long piece of the secret: the hint shows 6 + 4 characters, nothing more.
    let middle = &hex_part[4..60];
    assert!(!format!("{key:?}").contains(middle));

    let got = c
        .get_key(pb::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !format!("{got:?}").contains(middle),
        "GetKey leaks the secret"
    );
    assert_eq!(got.key_hint, key.key_hint);
    assert_eq!(got.usage, Some(pb::UsageTotals::default()));
    let listed = c
        .list_keys(pb::ListKeysRequest {
            user_id: user.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert!(
        !format!("{listed:?}").contains(middle),
        "ListKeys leaks the secret"
    );

    // At rest: the SHA-256 and the hint, nothing else of the secret, anywhere.
    let row = h.row("api_keys", key.id).await;
    assert_eq!(row["key_hash"].text(), sha256_hex(&secret));
    assert_eq!(row["key_hint"].text(), key.key_hint);
    assert_eq!(h.where_stored(middle).await, Vec::<(String, String)>::new());
    // (The search does see stored values: it finds the hash.)
    assert_eq!(
        h.where_stored(&sha256_hex(&secret)).await,
        [("api_keys".to_owned(), "key_hash".to_owned())]
    );

    // Two generated keys differ.
    let (_, other) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    assert_ne!(other, secret);

    // An operator-supplied key: returned as given, stored only as its hash, unique.
    let custom = "Team_CI-key-0123456789";
    let (ck, csecret) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            custom_key: custom.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(csecret, custom);
    assert_eq!(ck.key_hint, "Team_C…6789");
    assert_eq!(
        h.row("api_keys", ck.id).await["key_hash"].text(),
        sha256_hex(custom)
    );
    assert!(h.where_stored(custom).await.is_empty());
    let snap = h.snapshot().await;
    let dup = c
        .create_key(pb::CreateKeyRequest {
            user_id: user.id,
            custom_key: custom.into(),
            ..Default::default()
        })
        .await;
    let st = assert_code(dup, Code::AlreadyExists, "custom_key");
    assert!(!st.message().contains(custom), "never echo a key");
    assert!(h.snapshot().await == snap);

    h.stop().await;
}

// ------------------------------------------------------------------ 2. / 3. reactivation

pub(crate) async fn reset_quota_reactivates_an_exhausted_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "q@example.com").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            quota_nanos: 1_000_000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(key.status, "active");

    // Billing takes the key past its quota.
    let exhaust =
        "UPDATE api_keys SET quota_used_nanos = $1, status = 'quota_exhausted' WHERE id = $2";
    h.exec(exhaust, &[1_500_000, key.id]).await;
    let got = c
        .get_key(pb::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.status.as_str(), got.quota_used_nanos),
        ("quota_exhausted", 1_500_000)
    );

    let reset = c
        .reset_key_quota(pb::KeyIdRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.status, "active");
    assert_eq!(reset.quota_used_nanos, 0);
    assert_eq!(reset.quota_nanos, 1_000_000);
    let row = h.row("api_keys", key.id).await;
    assert_eq!(row["status"], Value::Text("active".into()));
    assert_eq!(row["quota_used_nanos"], Value::Int(0));

    // A new quota still below what was used keeps it exhausted; one above reactivates it.
    h.exec(exhaust, &[1_500_000, key.id]).await;
    let low = c
        .update_key(pb::UpdateKeyRequest {
            id: key.id,
            quota_nanos: Some(1_200_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(low.status, "quota_exhausted");
    let high = c
        .update_key(pb::UpdateKeyRequest {
            id: key.id,
            quota_nanos: Some(2_000_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (high.status.as_str(), high.quota_used_nanos),
        ("active", 1_500_000)
    );

    // Disable then enable does not override billing: still exhausted.
    h.exec(exhaust, &[2_000_000, key.id]).await;
    c.disable_key(pb::KeyIdRequest { id: key.id })
        .await
        .unwrap();
    let enabled = c
        .enable_key(pb::KeyIdRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.status, "quota_exhausted");

    h.stop().await;
}

pub(crate) async fn clear_expiration_reactivates_an_expired_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "e@example.com").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            expiry: Some(Expiry::ExpiresAtMs(now_ms() + 3_600_000)),
            ..Default::default()
        },
    )
    .await;

    // Time passes; the expiry sweep marks it expired.
    let expire = "UPDATE api_keys SET expires_at_ms = $1, status = 'expired' WHERE id = $2";
    h.exec(expire, &[now_ms() - 1_000, key.id]).await;
    let got = c
        .get_key(pb::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, "expired");

    let cleared = c
        .clear_key_expiration(pb::KeyIdRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.status, "active");
    assert_eq!(cleared.expires_at_ms, None);
    let row = h.row("api_keys", key.id).await;
    assert_eq!(row["expires_at_ms"], Value::Null);
    assert_eq!(row["status"], Value::Text("active".into()));

    // A new future expiry reactivates too.
    h.exec(expire, &[now_ms() - 1_000, key.id]).await;
    let later = now_ms() + DAY_MS;
    let moved = c
        .update_key(pb::UpdateKeyRequest {
            id: key.id,
            expires_at_ms: Some(later),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (moved.status.as_str(), moved.expires_at_ms),
        ("active", Some(later))
    );

    h.stop().await;
}

// ------------------------------------------------------------------ 4. partial updates

pub(crate) async fn partial_updates_leave_other_fields_alone(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "pu@example.com").await;
    let g1 = new_group(&mut c, "g1", "standard").await;
    let g2 = new_group(&mut c, "g2", "standard").await;
    let (base, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            name: "ci".into(),
            group_id: Some(g1.id),
            quota_nanos: 5_000_000_000,
            expiry: Some(Expiry::ExpiresInDays(10)),
            ip_allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            ip_deny: vec!["10.1.2.3".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(base.ip_allow, ["10.0.0.0/8", "2001:db8::/32"]);

    // Each update changes exactly its fields; compare everything else.
    let mut expect = base.clone();
    expect.name = "ci-renamed".into();
    let req = pb::UpdateKeyRequest {
        id: base.id,
        name: Some("ci-renamed".into()),
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    expect.ip_allow = vec![];
    let req = pb::UpdateKeyRequest {
        id: base.id,
        ip_allow: Some(pb::StringList { values: vec![] }),
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    expect.ip_deny = vec!["192.168.0.0/16".into()];
    let req = pb::UpdateKeyRequest {
        id: base.id,
        ip_deny: Some(pb::StringList {
            values: vec!["192.168.0.0/16".into()],
        }),
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    expect.group_id = Some(g2.id);
    let req = pb::UpdateKeyRequest {
        id: base.id,
        group_id: Some(g2.id),
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    expect.group_id = None;
    let req = pb::UpdateKeyRequest {
        id: base.id,
        group_id: Some(0),
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    // Nothing given: nothing changes.
    let req = pb::UpdateKeyRequest {
        id: base.id,
        ..Default::default()
    };
    update(&mut c, req, &mut expect).await;

    let row = h.row("api_keys", base.id).await;
    assert_eq!(row["ip_allow"], Value::Text("[]".into()));
    assert_eq!(row["ip_deny"], Value::Text(r#"["192.168.0.0/16"]"#.into()));
    assert_eq!(row["group_id"], Value::Null);
    assert_eq!(row["quota_nanos"], Value::Int(5_000_000_000));

    // Users.
    let u2 = c
        .update_user(pb::UpdateUserRequest {
            id: user.id,
            name: Some("Renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::User {
            name: "Renamed".into(),
            updated_at_ms: u2.updated_at_ms,
            ..user.clone()
        },
        u2
    );

    // Groups.
    let g = c
        .update_group(pb::UpdateGroupRequest {
            id: g1.id,
            description: Some("for CI".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::Group {
            description: "for CI".into(),
            updated_at_ms: g.updated_at_ms,
            ..g1.clone()
        },
        g
    );

    // Accounts: the credential, mapping and proxy survive an unrelated change.
    let acct = c
        .create_account(pb::CreateAccountRequest {
            model_mapping: [("gpt-5".to_owned(), "gpt-5-2025-08-07".to_owned())].into(),
            proxy_url: "http://proxy.example:3128".into(),
            user_agent: "tollgate-test/1".into(),
            groups: vec![pb::AccountGroup {
                group_id: g1.id,
                priority: 7,
            }],
            ..api_key_account("up-1", "sk-upstream-partial-0001")
        })
        .await
        .unwrap()
        .into_inner();
    let a2 = c
        .update_account(pb::UpdateAccountRequest {
            id: acct.id,
            notes: Some("rotated nothing".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pb::Account {
            notes: "rotated nothing".into(),
            updated_at_ms: a2.updated_at_ms,
            ..acct.clone()
        },
        a2
    );
    let stored = h.store.get_account(acct.id).await.unwrap();
    assert_eq!(
        stored.credential,
        Credential::ApiKey {
            api_key: "sk-upstream-partial-0001".into()
        }
    );
    let cleared = c
        .update_account(pb::UpdateAccountRequest {
            id: acct.id,
            model_mapping: Some(pb::StringMap::default()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.model_mapping.is_empty());
    assert_eq!(cleared.proxy_url, acct.proxy_url);

    h.stop().await;
}

/// Applies `req` and checks the key is `expect` apart from the update time and usage.
async fn update(c: &mut Client, req: pb::UpdateKeyRequest, expect: &mut pb::ApiKey) {
    let got = c.update_key(req).await.unwrap().into_inner();
    expect.updated_at_ms = got.updated_at_ms;
    expect.usage = got.usage;
    assert_eq!(&got, expect);
}

// ------------------------------------------------------------------ lifecycles

pub(crate) async fn key_status_changes_and_delete(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "k@example.com").await;
    let group = new_group(&mut c, "g", "standard").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            group_id: Some(group.id),
            ..Default::default()
        },
    )
    .await;
    let id = pb::KeyIdRequest { id: key.id };
    assert_eq!(
        c.disable_key(id).await.unwrap().into_inner().status,
        "disabled"
    );
    assert_eq!(
        h.row("api_keys", key.id).await["status"],
        Value::Text("disabled".into())
    );
    assert_eq!(
        c.enable_key(id).await.unwrap().into_inner().status,
        "active"
    );

    // Filters by user and by group.
    let other = new_user(&mut c, "other@example.com").await;
    new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: other.id,
            ..Default::default()
        },
    )
    .await;
    let by_group = c
        .list_keys(pb::ListKeysRequest {
            group_id: group.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_group.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
        [key.id]
    );
    let all = c
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.keys.len(), 2);

    c.delete_key(id).await.unwrap();
    // Soft delete: the row stays, marked.
    assert!(
        h.row("api_keys", key.id).await["deleted_at_ms"]
            .int()
            .is_some()
    );
    let all = c
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.keys.len(), 1);

    h.stop().await;
}
