//! A whole gateway for system tests: the fake upstream, a control plane, N data planes,
//! and helpers that set up users, groups, accounts and keys through the real Admin API.

use std::collections::HashMap;
use std::time::Duration;

use tollgate_shared::proto::admin::v1 as admin;

pub use crate::cluster::{Admin, admin_client};
use crate::cluster::{ControlPlane, DataPlane, Home, control_plane_config};
use crate::fake_upstream::FakeUpstream;

pub struct Gateway {
    pub up: FakeUpstream,
    pub cp: ControlPlane,
    pub dps: Vec<DataPlane>,
    pub admin: Admin,
    pub http: reqwest::Client,
}

/// Knobs for `Gateway::start_with`.
pub struct Options {
    pub data_planes: usize,
    pub control_plane: Box<dyn FnOnce(&mut tollgate_control_plane::Config) + Send>,
    pub data_plane: fn(&mut tollgate_data_plane::Config),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            data_planes: 1,
            control_plane: Box::new(|_| {}),
            data_plane: |_| {},
        }
    }
}

impl Gateway {
    pub async fn start(data_planes: usize) -> Self {
        Self::start_with(Options {
            data_planes,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(opts: Options) -> Self {
        let up = FakeUpstream::start().await;
        let home = Home::embedded();
        let mut config = control_plane_config(home.data_dir());
        config.codex_url = up.codex_url();
        config.oauth_token_url = up.oauth_token_url();
        (opts.control_plane)(&mut config);
        let cp = ControlPlane::start_with(home, config).await;
        let mut dps = Vec::new();
        for _ in 0..opts.data_planes {
            let mut c = tollgate_data_plane::Config::for_control_plane(cp.url());
            // The fake upstream is on 127.0.0.1; a test may turn the rule back on.
            c.flow.allow_private_upstreams = true;
            (opts.data_plane)(&mut c);
            dps.push(DataPlane::start_exact(c).await);
        }
        for dp in &dps {
            crate::eventually("data plane attached", Duration::from_secs(10), || async {
                dp.admin_status("/readyz").await == 200
            })
            .await;
        }
        let admin = admin_client(&cp.url());
        let http = crate::http_client();
        Self {
            up,
            cp,
            dps,
            admin,
            http,
        }
    }

    pub fn dp(&self, i: usize) -> &DataPlane {
        &self.dps[i]
    }

    pub async fn user(&self, concurrency: i32, balance_usd: i64) -> i64 {
        let email = format!("u{}@example.com", uuid::Uuid::new_v4().simple());
        self.admin
            .clone()
            .create_user(admin::CreateUserRequest {
                email,
                name: "Test User".into(),
                concurrency: Some(concurrency),
                initial_balance_nanos: balance_usd * 1_000_000_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    pub async fn group(&self, rate_multiplier: &str) -> i64 {
        self.admin
            .clone()
            .create_group(admin::CreateGroupRequest {
                name: format!("g-{}", uuid::Uuid::new_v4().simple()),
                rate_multiplier: rate_multiplier.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// An API-key account pointing at the fake upstream. `secret` is its upstream key
    /// (the fake can script per bearer).
    pub async fn api_key_account(
        &self,
        secret: &str,
        group: i64,
        priority: i32,
        concurrency: i32,
    ) -> i64 {
        self.account(admin::CreateAccountRequest {
            name: format!("acct-{secret}"),
            credential: Some(admin::create_account_request::Credential::ApiKey(
                admin::ApiKeyCredential {
                    api_key: secret.into(),
                },
            )),
            base_url: self.up.base_url(),
            concurrency: Some(concurrency),
            priority,
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority,
            }],
            ..Default::default()
        })
        .await
    }

    /// A subscription (OAuth) account; its upstream is the fake's codex endpoint.
    pub async fn oauth_account(&self, access_token: &str, group: i64, priority: i32) -> i64 {
        self.account(admin::CreateAccountRequest {
            name: format!("oauth-{access_token}"),
            credential: Some(admin::create_account_request::Credential::Oauth(
                admin::OAuthCredential {
                    access_token: access_token.into(),
                    refresh_token: format!("refresh-{access_token}"),
                    expires_at_ms: Some(tollgate_shared::now_ms() + 24 * 3_600_000),
                    chatgpt_account_id: format!("chatgpt-{access_token}"),
                    id_token: String::new(),
                },
            )),
            concurrency: Some(3),
            priority,
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority,
            }],
            ..Default::default()
        })
        .await
    }

    pub async fn account(&self, req: admin::CreateAccountRequest) -> i64 {
        self.admin
            .clone()
            .create_account(req)
            .await
            .unwrap()
            .into_inner()
            .id
    }

    pub async fn set_mapping(&self, account: i64, mapping: &[(&str, &str)]) {
        let entries: HashMap<String, String> = mapping
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect();
        self.admin
            .clone()
            .update_account(admin::UpdateAccountRequest {
                id: account,
                model_mapping: Some(admin::StringMap { entries }),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Creates a key and returns (id, secret).
    pub async fn key(&self, user: i64, group: Option<i64>) -> (i64, String) {
        self.key_with(admin::CreateKeyRequest {
            user_id: user,
            group_id: group,
            name: "k".into(),
            ..Default::default()
        })
        .await
    }

    pub async fn key_with(&self, req: admin::CreateKeyRequest) -> (i64, String) {
        let r = self
            .admin
            .clone()
            .create_key(req)
            .await
            .unwrap()
            .into_inner();
        (r.key.unwrap().id, r.secret)
    }

    /// user (concurrency 5, $10) + group + one API-key account + key: the usual setup.
    pub async fn basic(&self) -> Basic {
        let user = self.user(5, 10).await;
        let group = self.group("1").await;
        let account = self.api_key_account("upstream-a", group, 10, 5).await;
        let (key_id, key) = self.key(user, Some(group)).await;
        Basic {
            user,
            group,
            account,
            key_id,
            key,
        }
    }

    pub fn responses_url(&self, dp: usize) -> String {
        format!("{}/v1/responses", self.dps[dp].proxy_url())
    }

    /// POST /v1/responses in the background (e.g. a request held at the upstream while
    /// the test does something else); resolves to the response status.
    pub fn spawn_post(
        &self,
        dp: usize,
        key: &str,
        body: serde_json::Value,
    ) -> tokio::task::JoinHandle<reqwest::StatusCode> {
        let req = self
            .http
            .post(self.responses_url(dp))
            .bearer_auth(key)
            .json(&body);
        #[allow(clippy::disallowed_methods)] // the test awaits the handle
        tokio::spawn(async move { req.send().await.unwrap().status() })
    }

    /// POST /v1/responses on data plane `dp` with `key` and a JSON body.
    pub async fn post(&self, dp: usize, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.responses_url(dp))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

pub struct Basic {
    pub user: i64,
    pub group: i64,
    pub account: i64,
    pub key_id: i64,
    pub key: String,
}
