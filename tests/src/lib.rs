//! Test support for system tests: start real control planes and data planes in-process on
//! loopback ports, and wait for conditions without fixed sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod fake_control_plane;
pub mod fake_proxy;
pub mod fake_upstream;
pub mod fixture;

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
