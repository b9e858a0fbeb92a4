//! Test parts: a programmable OAuth2 token endpoint, an upstream API that records what reached
//! it (plain or TLS with a generated CA), and the real `tokenproxy` binary as a process; the
//! `rig` puts the three together for a test.
#![allow(dead_code)]

pub mod config;
pub mod idp;
pub mod jwks;
pub mod proxy;
pub mod rawup;
pub mod redis;
pub mod rig;
pub mod rig_calls;
pub mod tls;
pub mod upstream;

use std::time::Duration;

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
#[must_use = "a wait that timed out must fail the test"]
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

/// Splits `name{a="x",b="y"}` into the name and its label pairs, sorted (label values here never
/// hold commas or quotes).
fn parse_series(series: &str) -> (String, Vec<(String, String)>) {
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let mut pairs: Vec<(String, String)> = labels
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect();
    pairs.sort();
    (name.trim().to_string(), pairs)
}

/// The value of the sample `series` (e.g. `tokenproxy_config_reloads_total{outcome="success"}`,
/// labels in any order) in a Prometheus text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    let want = parse_series(series);
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            (parse_series(s) == want).then(|| value.parse().ok())?
        })
}

/// The Prometheus exposition from the admin port's `/metrics`.
pub async fn metrics_text(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Fetches `/metrics` from the admin port and reads one sample (0 when absent).
pub async fn metric(admin: u16, series: &str) -> f64 {
    sample(&metrics_text(admin).await, series).unwrap_or(0.0)
}

/// A loopback port that refuses connections for as long as the guard lives: bound (so nothing
/// else can take it) but not listening.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let port = socket.local_addr().expect("its address").port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }
}

/// Sends signal `sig` (a `libc::SIG*` number) to process `pid`.
pub fn send_signal(pid: u32, sig: i32) {
    use nix::sys::signal::{kill, Signal};
    let sig = Signal::try_from(sig).expect("a known signal");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a process id"));
    kill(pid, sig).expect("the signal was sent");
}

/// `GET http://127.0.0.1:port<path>` on a new connection.
pub async fn get(port: u16, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap()
}

/// `GET url`: the status and the body as JSON (`null` when it is not JSON).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Replaces `path` with `content` by renaming a new file over it, as Kubernetes volumes (and the
/// kubelet's projected tokens) do.
pub fn swap_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("swap-new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Asserts that `promtool check metrics` accepts the exposition `text`.
pub fn assert_promtool_accepts(text: &str) {
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run scripts/setup.sh (Debian package prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET url` on a new connection; the body as JSON (panics when it is not JSON).
pub async fn fetch_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `callers` tasks, each with one keep-alive connection (as a legacy client's pool holds), each
/// sending `each` GETs to `http://127.0.0.1:{port}/{prefix}/{caller}/{i}` and asserting a 200.
pub fn keepalive_callers(
    port: u16,
    prefix: &str,
    callers: usize,
    each: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..callers)
        .map(|c| {
            let base = format!("http://127.0.0.1:{port}/{prefix}/{c}");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0..each {
                    let r = client.get(format!("{base}/{i}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect()
}
