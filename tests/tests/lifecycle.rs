//! Data planes attach to the control plane, report readiness, survive a control-plane
//! restart by re-attaching, and drain on shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tollgate_tests::cluster::{ControlPlane, DataPlane};
use tollgate_tests::eventually;

#[tokio::test]
async fn data_plane_attaches_and_reports_ready() {
    let cp = ControlPlane::start().await;
    let dp = DataPlane::start(&cp.url()).await;
    assert_eq!(dp.admin_status("/healthz").await, 200);
    eventually("data plane ready", Duration::from_secs(10), || async {
        dp.admin_status("/readyz").await == 200
    })
    .await;
    let metrics = tollgate_tests::http_client()
        .get(format!("{}/metrics", dp.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_dp_control_plane_session_attached 1"),
        "{metrics}"
    );
    // Unknown routes on the proxy port get an OpenAI-shaped 404.
    let r = tollgate_tests::http_client()
        .get(format!("{}/nope", dp.proxy_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    dp.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn data_plane_is_not_ready_after_a_sustained_outage_and_reattaches() {
    let cp = ControlPlane::start().await;
    let mut dp_config = tollgate_data_plane::Config::for_control_plane(cp.url());
    dp_config.readiness_outage_ms = 3_000;
    let dp = DataPlane::start_with(dp_config).await;
    eventually("ready", Duration::from_secs(10), || async {
        dp.admin_status("/readyz").await == 200
    })
    .await;

    let stopping_at = std::time::Instant::now();
    let (dir, config) = cp.stop().await;
    // A control-plane failover takes seconds: the data plane stays in service that long.
    eventually("session lost", Duration::from_secs(10), || async {
        dp.metric("tollgate_dp_control_plane_session_attached")
            .await
            == 0.0
    })
    .await;
    assert_eq!(dp.admin_status("/readyz").await, 200);
    eventually(
        "not ready once the control plane is gone",
        Duration::from_secs(10),
        || async { dp.admin_status("/readyz").await == 503 },
    )
    .await;
    assert!(
        stopping_at.elapsed() >= Duration::from_secs(3),
        "readiness dropped within the outage grace"
    );
    // Liveness does not depend on the control plane.
    assert_eq!(dp.admin_status("/healthz").await, 200);

    let cp = ControlPlane::start_with(dir, config).await;
    eventually(
        "ready again after the control plane returns",
        Duration::from_secs(15),
        || async { dp.admin_status("/readyz").await == 200 },
    )
    .await;
    dp.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn control_plane_serves_grpc_health() {
    let cp = ControlPlane::start().await;
    let channel = cp.channel();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "tollgate.admin.v1.Admin", "tollgate.gateway.v1.Gateway"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    cp.stop().await;
}
