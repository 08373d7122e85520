//! A data plane on a scriptable fake control plane and the fake upstream: the stage of
//! the data-plane-only suites (`tests/data_plane.rs`, `tests/data_plane_billing.rs`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::DataPlane;
use crate::fake_control_plane::FakeControlPlane;
use crate::fake_upstream::FakeUpstream;

/// The client key the stage's requests carry (the fake control plane authorizes any key).
pub const KEY: &str = "sk-client-key-for-the-fake";

/// How long the stage waits for the data plane to attach.
const ATTACH_WAIT: Duration = Duration::from_secs(30);

pub struct Stage {
    pub cp: FakeControlPlane,
    pub up: FakeUpstream,
    pub dp: DataPlane,
    pub http: reqwest::Client,
}

impl Stage {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut tollgate_data_plane::Config)) -> Self {
        let up = FakeUpstream::start().await;
        let cp = FakeControlPlane::start(&up.responses_url()).await;
        Self::on(cp, up, configure).await
    }

    /// A data plane on `cp` and `up` (a restarted data plane reuses them).
    pub async fn on(
        cp: FakeControlPlane,
        up: FakeUpstream,
        configure: impl FnOnce(&mut tollgate_data_plane::Config),
    ) -> Self {
        let mut config = tollgate_data_plane::Config::for_control_plane(cp.url());
        // The scripted control plane speaks plaintext (mTLS is covered by tests/tls.rs).
        config.allow_plaintext_control_plane = true;
        configure(&mut config);
        let dp = DataPlane::start_with(config).await;
        let stage = Self {
            cp,
            up,
            dp,
            http: reqwest::Client::new(),
        };
        crate::eventually("data plane attached", ATTACH_WAIT, || async {
            stage.dp.admin_status("/readyz").await == 200
        })
        .await;
        stage
    }

    pub async fn post(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/responses", self.dp.proxy_url()))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A non-streaming request: (status, body JSON).
    pub async fn ask(&self) -> (u16, Value) {
        let r = self.post(json!({"model": "gpt-5.1", "input": "hi"})).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// A data-plane metric's value (`name` without labels).
    pub async fn metric(&self, name: &str) -> f64 {
        self.dp.metric(&format!("{name} ")).await
    }
}
