//! Test parts: a programmable OAuth2 token endpoint, an upstream API that records what reached
//! it (plain or TLS with a generated CA), and the real `tokenproxy` binary as a process.
#![allow(dead_code)]

pub mod idp;
pub mod proxy;
pub mod tls;
pub mod upstream;

use std::time::Duration;

/// A loopback port that was free a moment ago, for listeners the proxy's config must name.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that opens a new connection for every request, so tests see the proxy's answer to
/// each one independently.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
