//! Validation: every malformed request is refused with INVALID_ARGUMENT naming the
//! field, and writes nothing.

use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry as SubExpiry;
use tollgate_shared::proto::admin::v1::create_key_request::Expiry;
use tollgate_shared::proto::admin::v1::{create_account_request, update_account_request};

use crate::admin_support::Harness;
use crate::helpers::{MISSING, api_key_account, new_group, new_key, new_user, refused};
use tollgate_tests::Backend;

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

pub(crate) async fn bad_key_requests_are_refused_and_write_nothing(backend: Backend) {
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
    c.delete_user(pb::DeleteUserRequest {
        id: gone_user.id,
        cascade: true,
    })
    .await
    .unwrap();
    c.delete_group(pb::DeleteGroupRequest {
        id: gone.id,
        cascade: true,
    })
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

pub(crate) async fn bad_user_and_balance_requests_are_refused_and_write_nothing(backend: Backend) {
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
        allow_negative: false,
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

pub(crate) async fn bad_group_requests_are_refused_and_write_nothing(backend: Backend) {
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

pub(crate) async fn bad_account_requests_are_refused_and_write_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let group = new_group(&mut c, "pool", "standard").await;
    let gone = new_group(&mut c, "gone", "standard").await;
    c.delete_group(pb::DeleteGroupRequest {
        id: gone.id,
        cascade: true,
    })
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

pub(crate) async fn bad_subscription_price_and_usage_requests_are_refused_and_write_nothing(
    backend: Backend,
) {
    let h = Harness::start(backend).await;
    let mut c = h.client();
    let user = new_user(&mut c, "s@example.com").await;
    let std = new_group(&mut c, "std", "standard").await;
    let pro = new_group(&mut c, "pro", "subscription").await;
    let gone = new_group(&mut c, "gone", "subscription").await;
    c.delete_group(pb::DeleteGroupRequest {
        id: gone.id,
        cascade: true,
    })
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
