//! The Admin gRPC API end to end: a real control plane on `127.0.0.1:0`, the generated
//! client over TCP with the bearer token, and direct database reads to check what was (and
//! was not) stored. The important tests run on both SQLite and Postgres (`on_both!`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod admin_support;
mod common;

use std::fmt::Debug;

use admin_support::{Client, Harness, Snapshot, Value, assert_code};
use common::Backend;
use sha2::{Digest, Sha256};
use tollgate_control_plane::model::{Credential, UsageRecord};
use tollgate_shared::Multiplier;
use tollgate_shared::domain::BillingMode;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry as SubExpiry;
use tollgate_shared::proto::admin::v1::create_key_request::Expiry;
use tollgate_shared::proto::admin::v1::{create_account_request, update_account_request};
use tonic::{Code, Response, Status};

const DAY_MS: i64 = 86_400_000;
const MISSING: i64 = 999_999;

on_both!(
    key_secret_is_shown_once_and_only_its_hash_is_stored,
    reset_quota_reactivates_an_exhausted_key,
    clear_expiration_reactivates_an_expired_key,
    partial_updates_leave_other_fields_alone,
    bad_key_requests_are_refused_and_write_nothing,
    bad_user_and_balance_requests_are_refused_and_write_nothing,
    bad_group_requests_are_refused_and_write_nothing,
    bad_account_requests_are_refused_and_write_nothing,
    bad_subscription_price_and_usage_requests_are_refused_and_write_nothing,
    missing_token_or_wrong_token_is_unauthenticated,
    missing_rows_are_not_found_and_duplicates_already_exist,
    account_credentials_are_encrypted_at_rest_and_never_returned,
    users_balance_and_pagination,
    key_status_changes_and_delete,
    subscriptions_lifecycle,
    prices_and_usage_queries,
);

// ------------------------------------------------------------------ helpers

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

async fn new_user(c: &mut Client, email: &str) -> pb::User {
    c.create_user(pb::CreateUserRequest {
        email: email.to_owned(),
        name: "Test User".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn new_group(c: &mut Client, name: &str, kind: &str) -> pb::Group {
    c.create_group(pb::CreateGroupRequest {
        name: name.to_owned(),
        kind: kind.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn new_key(c: &mut Client, req: pb::CreateKeyRequest) -> (pb::ApiKey, String) {
    let r = c.create_key(req).await.unwrap().into_inner();
    (r.key.unwrap(), r.secret)
}

fn api_key_account(name: &str, api_key: &str) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        name: name.to_owned(),
        credential: Some(create_account_request::Credential::ApiKey(
            pb::ApiKeyCredential {
                api_key: api_key.to_owned(),
            },
        )),
        ..Default::default()
    }
}

/// The call was refused with INVALID_ARGUMENT naming `field`, and no table changed.
async fn refused<T: Debug>(
    h: &Harness,
    before: &Snapshot,
    field: &str,
    result: Result<Response<T>, Status>,
) {
    assert_code(result, Code::InvalidArgument, field);
    assert!(
        h.snapshot().await == *before,
        "a refused request ({field}) changed the database"
    );
}

// ------------------------------------------------------------------ 1. secrets

async fn key_secret_is_shown_once_and_only_its_hash_is_stored(backend: Backend) {
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

#[tokio::test]
async fn generated_keys_use_the_configured_prefix() {
    let h = Harness::start_with(Backend::Sqlite, |c| c.key_prefix = "tg_live_".into()).await;
    let mut c = h.client();
    let user = new_user(&mut c, "p@example.com").await;
    let (key, secret) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    assert!(secret.starts_with("tg_live_"), "{secret}");
    assert_eq!(secret.len(), "tg_live_".len() + 64);
    assert!(key.key_hint.starts_with("tg_liv…"));
    h.stop().await;
}

// ------------------------------------------------------------------ 2. / 3. reactivation

async fn reset_quota_reactivates_an_exhausted_key(backend: Backend) {
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

async fn clear_expiration_reactivates_an_expired_key(backend: Backend) {
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

async fn partial_updates_leave_other_fields_alone(backend: Backend) {
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

// ------------------------------------------------------------------ 5. validation

/// For each case, `base` with the listed fields changed goes to `client.method`, which
/// must refuse it with INVALID_ARGUMENT naming the field and leave every table as it was.
macro_rules! refuse_each {
    ($h:expr, $before:expr, $client:ident . $method:ident, $base:expr;
     $($field:literal => { $($f:ident: $v:expr),+ $(,)? }),+ $(,)?) => {{
        $({
            // Clearer here than a struct literal per case.
            #[allow(clippy::field_reassign_with_default)]
            let req = {
                let mut req = $base;
                $(req.$f = $v;)+
                req
            };
            refused($h, $before, $field, $client.$method(req).await).await;
        })+
    }};
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn list(v: &[&str]) -> Option<pb::StringList> {
    Some(pb::StringList { values: strs(v) })
}

fn page(limit: u32, token: &str) -> Option<pb::PageRequest> {
    Some(pb::PageRequest {
        limit,
        page_token: token.to_owned(),
    })
}

async fn bad_key_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "v@example.com").await;
    let gone_user = new_user(&mut c, "gone@example.com").await;
    let gone = new_group(&mut c, "gone", "standard").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    c.delete_user(pb::DeleteUserRequest { id: gone_user.id })
        .await
        .unwrap();
    c.delete_group(pb::DeleteGroupRequest { id: gone.id })
        .await
        .unwrap();
    let before = h.snapshot().await;
    let past = now_ms() - 1_000;

    let ok = pb::CreateKeyRequest {
        user_id: user.id,
        name: "k".into(),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.create_key, ok.clone();
        "quota_nanos" => { quota_nanos: -1 },
        "ip_allow" => { ip_allow: strs(&["10.0.0.300"]) },
        "ip_allow" => { ip_allow: strs(&["10.0.0.0/8", "office"]) },
        "ip_allow" => { ip_allow: strs(&["10.0.0.0/33"]) },
        "ip_deny" => { ip_deny: strs(&["2001:db8::/129"]) },
        "ip_deny" => { ip_deny: strs(&["1.2.3.4/"]) },
        "ip_deny" => { ip_deny: strs(&[""]) },
        "group_id" => { group_id: Some(MISSING) },
        "group_id" => { group_id: Some(gone.id) },
        "group_id" => { group_id: Some(-1) },
        "user_id" => { user_id: MISSING },
        "user_id" => { user_id: gone_user.id },
        "user_id" => { user_id: 0 },
        "expires_at_ms" => { expiry: Some(Expiry::ExpiresAtMs(past)) },
        "expires_in_days" => { expiry: Some(Expiry::ExpiresInDays(0)) },
        "custom_key" => { custom_key: "too-short".into() },
        "custom_key" => { custom_key: "has spaces 0123456789".into() },
        "custom_key" => { custom_key: "bang!0123456789abcdef".into() },
        "name" => { name: "x".repeat(201) },
    );

    // A valid change next to each bad one: it must not be applied either.
    let upd = pb::UpdateKeyRequest {
        id: key.id,
        name: Some("renamed".into()),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.update_key, upd.clone();
        "quota_nanos" => { quota_nanos: Some(-5) },
        "ip_allow" => { ip_allow: list(&["1.1.1.1", "bad"]) },
        "ip_deny" => { ip_deny: list(&["::1/200"]) },
        "group_id" => { group_id: Some(MISSING) },
        "group_id" => { group_id: Some(gone.id) },
        "group_id" => { group_id: Some(-2) },
        "expires_at_ms" => { expires_at_ms: Some(past) },
    );

    refuse_each!(&h, &before, c.list_keys, pb::ListKeysRequest::default();
        "page.limit" => { page: page(1001, "") },
        "page.page_token" => { page: page(0, "not a token!") },
        "page.page_token" => { page: page(0, "MTIz") },
        "user_id" => { user_id: -1 },
        "group_id" => { group_id: -1 },
    );

    h.stop().await;
}

async fn bad_user_and_balance_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "b@example.com").await;
    let before = h.snapshot().await;

    let ok = pb::CreateUserRequest {
        email: "new@example.com".into(),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.create_user, ok.clone();
        "email" => { email: "".into() },
        "email" => { email: "   ".into() },
        "email" => { email: "nobody".into() },
        "role" => { role: "root".into() },
        "concurrency" => { concurrency: Some(-1) },
        "initial_balance_nanos" => { initial_balance_nanos: -1 },
    );

    let upd = pb::UpdateUserRequest {
        id: user.id,
        notes: Some("ok".into()),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.update_user, upd.clone();
        "email" => { email: Some("".into()) },
        "role" => { role: Some("god".into()) },
        "status" => { status: Some("paused".into()) },
        "concurrency" => { concurrency: Some(-3) },
    );
    refuse_each!(&h, &before, c.list_users, pb::ListUsersRequest::default();
        "status" => { status: "weird".into() },
        "page.page_token" => { page: page(0, "@@@") },
    );

    let adj = pb::AdjustBalanceRequest {
        user_id: user.id,
        op: pb::BalanceOp::Add as i32,
        amount_nanos: 1_000,
        reason: "top-up".into(),
    };
    refuse_each!(&h, &before, c.adjust_balance, adj.clone();
        "amount_nanos" => { amount_nanos: -1 },
        "op" => { op: pb::BalanceOp::Unspecified as i32 },
        "op" => { op: 42 },
        "reason" => { reason: "".into() },
        "reason" => { reason: "  ".into() },
    );
    let ledger = pb::ListBalanceLedgerRequest {
        user_id: user.id,
        page: None,
    };
    refuse_each!(&h, &before, c.list_balance_ledger, ledger.clone();
        "page.limit" => { page: page(5000, "") },
    );

    h.stop().await;
}

async fn bad_group_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let group = new_group(&mut c, "std", "standard").await;
    let before = h.snapshot().await;

    let ok = pb::CreateGroupRequest {
        name: "new".into(),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.create_group, ok.clone();
        "name" => { name: "".into() },
        "name" => { name: "  ".into() },
        "rate_multiplier" => { rate_multiplier: "-1".into() },
        "rate_multiplier" => { rate_multiplier: "one".into() },
        "rate_multiplier" => { rate_multiplier: "0.0000001".into() },
        "kind" => { kind: "premium".into() },
        "platform" => { platform: "anthropic".into() },
        "daily_limit_nanos" => { daily_limit_nanos: -1 },
        "weekly_limit_nanos" => { weekly_limit_nanos: -1 },
        "monthly_limit_nanos" => { monthly_limit_nanos: -1 },
    );

    let upd = pb::UpdateGroupRequest {
        id: group.id,
        description: Some("ok".into()),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.update_group, upd.clone();
        "name" => { name: Some(" ".into()) },
        "rate_multiplier" => { rate_multiplier: Some("-0.5".into()) },
        "rate_multiplier" => { rate_multiplier: Some("".into()) },
        "kind" => { kind: Some("x".into()) },
        "status" => { status: Some("paused".into()) },
        "monthly_limit_nanos" => { monthly_limit_nanos: Some(-1) },
    );
    refuse_each!(&h, &before, c.list_groups, pb::ListGroupsRequest::default();
        "page.limit" => { page: page(1_000_000, "") },
    );

    h.stop().await;
}

async fn bad_account_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let group = new_group(&mut c, "pool", "standard").await;
    let gone = new_group(&mut c, "gone", "standard").await;
    c.delete_group(pb::DeleteGroupRequest { id: gone.id })
        .await
        .unwrap();
    let acct = c
        .create_account(api_key_account("a", "sk-upstream-0001"))
        .await
        .unwrap()
        .into_inner();
    let before = h.snapshot().await;

    use create_account_request::Credential as New;
    let api_key = |k: &str| {
        Some(New::ApiKey(pb::ApiKeyCredential {
            api_key: k.to_owned(),
        }))
    };
    let oauth = |access: &str| {
        Some(New::Oauth(pb::OAuthCredential {
            access_token: access.to_owned(),
            refresh_token: "rt".into(),
            ..Default::default()
        }))
    };
    let ag = |group_id| pb::AccountGroup {
        group_id,
        priority: 1,
    };
    let empty_target = [("gpt-5".to_owned(), String::new())].into();

    let ok = api_key_account("new", "sk-upstream-0002");
    refuse_each!(&h, &before, c.create_account, ok.clone();
        "credential" => { credential: None },
        "api_key" => { credential: api_key("") },
        "api_key" => { credential: api_key("   ") },
        "api_key" => { credential: api_key("sk with spaces") },
        "oauth.access_token" => { credential: oauth("") },
        "name" => { name: "".into() },
        "platform" => { platform: "azure".into() },
        "base_url" => { credential: oauth("at"), base_url: "https://api.example.com".into() },
        "proxy_url" => { proxy_url: "ftp://proxy:21".into() },
        "proxy_url" => { proxy_url: "socks4://proxy:1080".into() },
        "proxy_url" => { proxy_url: "proxy:3128".into() },
        "proxy_url" => { proxy_url: "http://".into() },
        "cost_multiplier" => { cost_multiplier: "-1".into() },
        "cost_multiplier" => { cost_multiplier: "1,5".into() },
        "concurrency" => { concurrency: Some(-1) },
        "groups" => { groups: vec![ag(MISSING)] },
        "groups" => { groups: vec![ag(gone.id)] },
        "groups" => { groups: vec![ag(group.id), ag(group.id)] },
        "groups" => { groups: vec![ag(0)] },
        "model_mapping" => { model_mapping: empty_target },
        "user_agent" => { user_agent: "bad\r\nheader".into() },
    );
    for bad_url in [
        "not a url",
        "api.openai.com",
        "http://api.openai.com",
        "ftp://api.openai.com",
        "https://127.0.0.1",
        "https://localhost:8443/v1",
        "https://10.0.0.5/v1",
        "https://192.168.1.1",
        "https://172.20.0.1",
        "https://169.254.169.254/latest",
        "https://0.0.0.0",
        "https://[::1]/v1",
        "https://[fe80::1]",
        "https://[fd12::1]",
        "https://[::ffff:10.0.0.1]",
        "https://user:pass@api.openai.com",
    ] {
        refuse_each!(&h, &before, c.create_account, ok.clone();
            "base_url" => { base_url: bad_url.into() },
        );
    }

    use update_account_request::Credential as Replace;
    let upd = pb::UpdateAccountRequest {
        id: acct.id,
        notes: Some("ok".into()),
        ..Default::default()
    };
    let new_oauth = pb::OAuthCredential {
        access_token: "at".into(),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.update_account, upd.clone();
        "name" => { name: Some("".into()) },
        "base_url" => { base_url: Some("http://api.example.com".into()) },
        "base_url" => { base_url: Some("https://127.0.0.1:8080".into()) },
        "proxy_url" => { proxy_url: Some("gopher://p".into()) },
        "status" => { status: Some("error".into()) },
        "status" => { status: Some("bogus".into()) },
        "cost_multiplier" => { cost_multiplier: Some("1.2.3".into()) },
        "concurrency" => { concurrency: Some(-1) },
        "api_key" => { credential: Some(Replace::ApiKey(pb::ApiKeyCredential::default())) },
        "credential" => { credential: Some(Replace::Oauth(new_oauth.clone())) },
    );

    let set = pb::SetAccountGroupsRequest {
        account_id: acct.id,
        groups: vec![],
    };
    refuse_each!(&h, &before, c.set_account_groups, set.clone();
        "groups" => { groups: vec![ag(group.id), ag(MISSING)] },
        "groups" => { groups: vec![ag(gone.id)] },
    );
    refuse_each!(&h, &before, c.list_accounts, pb::ListAccountsRequest::default();
        "status" => { status: "zzz".into() },
        "group_id" => { group_id: -4 },
    );

    h.stop().await;
}

async fn bad_subscription_price_and_usage_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "s@example.com").await;
    let std = new_group(&mut c, "std", "standard").await;
    let pro = new_group(&mut c, "pro", "subscription").await;
    let gone = new_group(&mut c, "gone", "subscription").await;
    c.delete_group(pb::DeleteGroupRequest { id: gone.id })
        .await
        .unwrap();
    let assign = pb::AssignSubscriptionRequest {
        user_id: user.id,
        group_id: pro.id,
        expiry: Some(SubExpiry::DurationDays(30)),
        ..Default::default()
    };
    let sub = c.assign_subscription(assign).await.unwrap().into_inner();
    let before = h.snapshot().await;
    let past = now_ms() - 1;

    let ok = pb::AssignSubscriptionRequest {
        user_id: user.id,
        group_id: pro.id,
        expiry: Some(SubExpiry::DurationDays(7)),
        ..Default::default()
    };
    refuse_each!(&h, &before, c.assign_subscription, ok.clone();
        "group_id" => { group_id: std.id },
        "group_id" => { group_id: MISSING },
        "group_id" => { group_id: gone.id },
        "group_id" => { group_id: 0 },
        "user_id" => { user_id: MISSING },
        "expires_at_ms" => { expiry: Some(SubExpiry::ExpiresAtMs(past)) },
        "duration_days" => { expiry: Some(SubExpiry::DurationDays(0)) },
        "expiry" => { expiry: None },
    );
    refuse_each!(&h, &before, c.extend_subscription, pb::ExtendSubscriptionRequest::default();
        "days" => { id: sub.id, days: 0 },
    );

    let price = pb::Price {
        model: "my-model".into(),
        input_per_mtok_nanos: 1,
        output_per_mtok_nanos: 2,
        cached_input_per_mtok_nanos: 3,
        updated_at_ms: 0,
    };
    let with = |edit: fn(&mut pb::Price)| {
        let mut p = price.clone();
        edit(&mut p);
        Some(p)
    };
    refuse_each!(&h, &before, c.set_price, pb::SetPriceRequest::default();
        "price" => { price: None },
        "price.model" => { price: with(|p| p.model = String::new()) },
        "price.model" => { price: with(|p| p.model = "two words".into()) },
        "price.input_per_mtok_nanos" => { price: with(|p| p.input_per_mtok_nanos = -1) },
        "price.output_per_mtok_nanos" => { price: with(|p| p.output_per_mtok_nanos = -1) },
        "price.cached_input_per_mtok_nanos" => {
            price: with(|p| p.cached_input_per_mtok_nanos = -1)
        },
    );
    refuse_each!(&h, &before, c.delete_price, pb::DeletePriceRequest::default();
        "model" => { model: " ".into() },
    );

    let backwards = Some(pb::UsageFilter {
        from_ms: Some(2_000),
        to_ms: Some(1_000),
        ..Default::default()
    });
    refuse_each!(&h, &before, c.query_usage, pb::QueryUsageRequest::default();
        "filter.to_ms" => { filter: backwards.clone() },
        "page.limit" => { page: page(1001, "") },
        "filter.key_id" => { filter: Some(pb::UsageFilter { key_id: -1, ..Default::default() }) },
    );
    refuse_each!(&h, &before, c.usage_series, pb::UsageSeriesRequest::default();
        "filter.to_ms" => { filter: backwards.clone() },
    );

    h.stop().await;
}

// ------------------------------------------------------------------ 6. auth and codes

async fn missing_token_or_wrong_token_is_unauthenticated(backend: Backend) {
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

async fn missing_rows_are_not_found_and_duplicates_already_exist(backend: Backend) {
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
        c.delete_user(pb::DeleteUserRequest { id: MISSING }).await,
        nf,
        "user",
    );
    let adj = pb::AdjustBalanceRequest {
        user_id: MISSING,
        op: pb::BalanceOp::Set as i32,
        amount_nanos: 1,
        reason: "r".into(),
    };
    assert_code(c.adjust_balance(adj).await, nf, "user");
    assert_code(
        c.get_group(pb::GetGroupRequest { id: MISSING }).await,
        nf,
        "group",
    );
    assert_code(
        c.delete_group(pb::DeleteGroupRequest { id: MISSING }).await,
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

// ------------------------------------------------------------------ 7. account secrets

async fn account_credentials_are_encrypted_at_rest_and_never_returned(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let group = new_group(&mut c, "pool", "standard").await;
    let api_key = "sk-upstream-TOPSECRET-4f1c2a9b";
    let proxy_password = "proxy-PASSWORD-77";
    let proxy = format!("socks5h://puser:{proxy_password}@proxy.example:1080");

    let created = c
        .create_account(pb::CreateAccountRequest {
            proxy_url: proxy.clone(),
            groups: vec![pb::AccountGroup {
                group_id: group.id,
                priority: 10,
            }],
            ..api_key_account("openai-1", api_key)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.kind, "api_key");
    assert_eq!(created.base_url, "https://api.openai.com");
    assert_eq!(created.proxy_url, "socks5h://proxy.example:1080");
    assert_eq!(
        created.groups,
        [pb::AccountGroup {
            group_id: group.id,
            priority: 10
        }]
    );

    let oauth = c
        .create_account(pb::CreateAccountRequest {
            name: "chatgpt-1".into(),
            credential: Some(create_account_request::Credential::Oauth(
                pb::OAuthCredential {
                    access_token: "at-TOPSECRET-access".into(),
                    refresh_token: "rt-TOPSECRET-refresh".into(),
                    expires_at_ms: Some(now_ms() + 3_600_000),
                    chatgpt_account_id: "acct-123".into(),
                    id_token: "idt-TOPSECRET-id".into(),
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (oauth.kind.as_str(), oauth.chatgpt_account_id.as_str()),
        ("oauth", "acct-123")
    );
    assert_eq!(oauth.base_url, "");

    // Rotate the api key: the new one is stored, and also never shown.
    let rotated = "sk-upstream-ROTATED-TOPSECRET-9";
    let updated = c
        .update_account(pb::UpdateAccountRequest {
            id: created.id,
            credential: Some(update_account_request::Credential::ApiKey(
                pb::ApiKeyCredential {
                    api_key: rotated.into(),
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let secrets = [api_key, rotated, proxy_password, "TOPSECRET"];
    let got = c
        .get_account(pb::GetAccountRequest { id: created.id })
        .await
        .unwrap()
        .into_inner();
    let listed = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 2);
    let by_group = c
        .list_accounts(pb::ListAccountsRequest {
            group_id: group.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_group.accounts.len(), 1);
    let shown = format!("{created:?}{oauth:?}{updated:?}{got:?}{listed:?}{by_group:?}");
    for s in secrets {
        assert!(!shown.contains(s), "a response contains {s}");
    }
    assert_eq!(got.proxy_url, "socks5h://proxy.example:1080");

    // At rest: encrypted columns, no plaintext anywhere in the database.
    for s in secrets {
        assert_eq!(
            h.where_stored(s).await,
            Vec::<(String, String)>::new(),
            "{s} stored in clear"
        );
    }
    assert_eq!(
        h.where_stored("openai-1").await,
        [("accounts".to_owned(), "name".to_owned())],
        "the search does see stored values"
    );
    let row = h.row("accounts", created.id).await;
    assert!(row["credential_enc"].text().starts_with("v1:"));
    assert!(row["proxy_url_enc"].text().starts_with("v1:"));
    // …and decrypts to what was given (the control plane's key, through storage).
    let stored = h.store.get_account(created.id).await.unwrap();
    assert_eq!(
        stored.credential,
        Credential::ApiKey {
            api_key: rotated.into()
        }
    );
    assert_eq!(stored.proxy_url, proxy);
    let stored = h.store.get_account(oauth.id).await.unwrap();
    assert_eq!(
        stored.credential,
        Credential::OAuth {
            access_token: "at-TOPSECRET-access".into(),
            refresh_token: "rt-TOPSECRET-refresh".into(),
            id_token: "idt-TOPSECRET-id".into(),
        }
    );

    // Removing the proxy.
    let no_proxy = c
        .update_account(pb::UpdateAccountRequest {
            id: created.id,
            proxy_url: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(no_proxy.proxy_url, "");

    h.stop().await;
}

#[tokio::test]
async fn base_url_policy_follows_configuration() {
    // Permissive: http and private hosts allowed (a local fake upstream in tests).
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.allow_insecure_upstreams = true;
        c.allow_private_upstreams = true;
    })
    .await;
    let mut c = h.client();
    let a = c
        .create_account(pb::CreateAccountRequest {
            base_url: "http://127.0.0.1:18080/v1/".into(),
            ..api_key_account("local", "sk-local-0001")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.base_url, "http://127.0.0.1:18080/v1");
    h.stop().await;

    // Allow-list: only listed hosts.
    let h = Harness::start_with(Backend::Sqlite, |c| {
        c.upstream_host_allowlist = vec!["api.openai.com".into(), "gw.example.com".into()];
    })
    .await;
    let mut c = h.client();
    for ok in ["https://api.openai.com", "https://gw.example.com/v1"] {
        c.create_account(pb::CreateAccountRequest {
            base_url: ok.into(),
            ..api_key_account(ok, "sk-x-0001")
        })
        .await
        .unwrap();
    }
    let before = h.snapshot().await;
    let r = c
        .create_account(pb::CreateAccountRequest {
            base_url: "https://evil.example.net/v1".into(),
            ..api_key_account("evil", "sk-x-0002")
        })
        .await;
    refused(&h, &before, "base_url", r).await;
    h.stop().await;
}

// ------------------------------------------------------------------ lifecycles

async fn users_balance_and_pagination(backend: Backend) {
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

async fn key_status_changes_and_delete(backend: Backend) {
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

async fn subscriptions_lifecycle(backend: Backend) {
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

async fn prices_and_usage_queries(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();

    // Prices: seeded defaults, upsert, get, delete.
    let defaults = c
        .list_prices(pb::ListPricesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        defaults.prices.iter().any(|p| p.model == "gpt-5"),
        "{defaults:?}"
    );
    let set = c
        .set_price(pb::SetPriceRequest {
            price: Some(pb::Price {
                model: "my-model".into(),
                input_per_mtok_nanos: 1_250_000_000,
                output_per_mtok_nanos: 10_000_000_000,
                cached_input_per_mtok_nanos: 125_000_000,
                updated_at_ms: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(set.updated_at_ms > 0);
    let got = c
        .get_price(pb::GetPriceRequest {
            model: "my-model".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, set);
    c.delete_price(pb::DeletePriceRequest {
        model: "my-model".into(),
    })
    .await
    .unwrap();
    assert_code(
        c.get_price(pb::GetPriceRequest {
            model: "my-model".into(),
        })
        .await,
        Code::NotFound,
        "my-model",
    );

    // Usage, written the way billing does, read through the API.
    let user = new_user(&mut c, "usage@example.com").await;
    let (key, _) = new_key(
        &mut c,
        pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        },
    )
    .await;
    let day0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    for (i, (at, model, cost)) in [
        (day0 + 1_000, "gpt-5", 100),
        (day0 + 2_000, "gpt-5-mini", 20),
        (day0 + DAY_MS + 5, "gpt-5", 300),
    ]
    .into_iter()
    .enumerate()
    {
        let rec = usage_record(&format!("req-{i}"), key.id, user.id, model, cost, at);
        assert!(h.store.insert_usage(&rec).await.unwrap());
    }
    let q = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                key_id: key.id,
                ..Default::default()
            }),
            page: Some(pb::PageRequest {
                limit: 2,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.records.len(), 2);
    assert!(!q.next_page_token.is_empty());
    let totals = q.totals.unwrap();
    assert_eq!(
        (
            totals.requests,
            totals.total_cost_nanos,
            totals.input_tokens
        ),
        (3, 420, 30)
    );
    let rest = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                key_id: key.id,
                ..Default::default()
            }),
            page: Some(pb::PageRequest {
                limit: 2,
                page_token: q.next_page_token,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.records[0].request_id, "req-2");
    assert_eq!(rest.records[0].rate_multiplier, "1");

    let by_model = c
        .query_usage(pb::QueryUsageRequest {
            filter: Some(pb::UsageFilter {
                model: "gpt-5".into(),
                ..Default::default()
            }),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_model.totals.unwrap().total_cost_nanos, 400);

    let series = c
        .usage_series(pb::UsageSeriesRequest {
            filter: Some(pb::UsageFilter {
                user_id: user.id,
                from_ms: Some(day0),
                to_ms: Some(day0 + 2 * DAY_MS),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let days: Vec<_> = series
        .days
        .iter()
        .map(|d| (d.day.as_str(), d.totals.unwrap().total_cost_nanos))
        .collect();
    assert_eq!(days, [("2026-01-01", 120), ("2026-01-02", 300)]);
    assert_eq!(series.totals.unwrap().requests, 3);

    // GetKey and ListKeys carry the key's usage totals.
    let k = c
        .get_key(pb::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    let u = k.usage.unwrap();
    assert_eq!(
        (u.requests, u.total_cost_nanos, u.actual_cost_nanos),
        (3, 420, 420)
    );
    let listed = c
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys[0].usage.unwrap().requests, 3);

    h.stop().await;
}

fn usage_record(
    request_id: &str,
    key_id: i64,
    user_id: i64,
    model: &str,
    cost: i64,
    at: i64,
) -> UsageRecord {
    UsageRecord {
        request_id: request_id.into(),
        key_id,
        user_id,
        group_id: None,
        subscription_id: None,
        account_id: 1,
        model: model.into(),
        upstream_model: model.into(),
        input_tokens: 10,
        output_tokens: 5,
        cached_tokens: 0,
        reasoning_tokens: 0,
        input_cost_nanos: cost,
        output_cost_nanos: 0,
        cached_cost_nanos: 0,
        total_cost_nanos: cost,
        actual_cost_nanos: cost,
        rate_multiplier: Multiplier::ONE,
        account_cost_multiplier: Multiplier::ONE,
        billing_mode: BillingMode::Balance,
        stream: false,
        duration_ms: 100,
        first_token_ms: None,
        user_agent: String::new(),
        client_ip: String::new(),
        reasoning_effort: String::new(),
        estimated: false,
        created_at_ms: at,
    }
}
