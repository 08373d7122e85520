//! Account secrets: credentials are encrypted at rest and never returned.

use tollgate_control_plane::model::Credential;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::{create_account_request, update_account_request};

use crate::admin_support::Harness;
use crate::helpers::{api_key_account, new_group};
use tollgate_tests::Backend;

// ------------------------------------------------------------------ 7. account secrets

pub(crate) async fn account_credentials_are_encrypted_at_rest_and_never_returned(backend: Backend) {
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
