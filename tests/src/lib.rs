//! The test kit: everything tests need to run Tollgate for real, in-process on loopback
//! ports — shared by the system tests in `tests/tests/` and the control plane's own
//! integration tests (`control-plane/tests/`, a dev-dependency).
//!
//! - [`cluster`]: the one way to start a control plane ([`cluster::ControlPlane`]) and data
//!   planes, and the Admin API client;
//! - [`dp_process`]: a data plane as an OS process, for what only a process shows (its
//!   memory through `/proc`);
//! - [`db`]: per-test SQLite / Postgres databases dropped on `Drop`, and
//!   [`on_both_backends!`];
//! - [`fixture`]: a whole gateway (fake upstream, control plane, data planes) with setup
//!   helpers;
//! - [`fake_upstream`]: the fake OpenAI upstream and its OAuth token endpoint;
//! - [`fake_proxy`]: real HTTP and SOCKS5 outbound proxies;
//! - [`ha`]: etcd, control-plane replicas as processes, a blockable TCP relay;
//! - [`sse`]: the one SSE parser, which keeps the bytes;
//! - [`sdk`]: the official OpenAI Python SDK, installed once, and a runner for its scripts;
//! - [`eventually`]: waits for a condition instead of sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod db;
pub mod dp_process;
pub mod fake_control_plane;
pub mod fake_proxy;
pub mod fake_upstream;
pub mod fixture;
pub mod ha;
pub mod sdk;
pub mod sse;
pub mod stage;

pub use db::{Backend, TestDb};

/// An HTTP client for tests: it ignores `HTTP_PROXY`/`ALL_PROXY` (tests never read the
/// developer's environment; proxies are tested with `fake_proxy`) and keeps no idle
/// connections (each request sees the server as it is now).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what`.
/// Tests wait for what they need this way, never with a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(what, timeout, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` every 20 ms until it gives `Some`, and returns that; panics with `what`
/// after `timeout`.
pub async fn eventually_some<T, F, Fut>(what: &str, timeout: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
