//! The demo issuer on a real socket: `/stats` counts every token request it answered and the
//! tokens it issued, which the benchmark uses to check that tokens are fetched on refresh only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenproxy::demo::{issuer::Issuer, spawn_issuer};
use tokenproxy::secret::Secret;
use tokio_util::sync::CancellationToken;

async fn stats(client: &reqwest::Client, base: &str) -> (u64, u64) {
    let v: Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["token_requests"].as_u64().unwrap(),
        v["tokens_issued"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn stats_count_token_requests_and_issued_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let issuer = Arc::new(Issuer::new(
        "client-1",
        Secret::new("secret-1"),
        Secret::new("signing-key"),
        Duration::from_secs(60),
        format!("{base}/"),
    ));
    spawn_issuer(listener, issuer, stop.clone());
    let client = reqwest::Client::new();
    assert_eq!(stats(&client, &base).await, (0, 0));

    let grant = |secret: &str| {
        json!({
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": secret,
            "audience": "https://api.example/",
        })
    };
    let token_url = format!("{base}/oauth/token");
    for (secret, status) in [("secret-1", 200), ("wrong", 401), ("secret-1", 200)] {
        let r = client
            .post(&token_url)
            .json(&grant(secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "client secret {secret:?}");
    }
    // Three requests answered, one of them refused; /stats and /healthz are not counted.
    assert_eq!(stats(&client, &base).await, (3, 2));
    stop.cancel();
}

/// `tokenproxy demo` as the README runs it: every part on ports of the kernel's choosing, one
/// request through the proxy answered by the echo API with the injected token, and a clean exit
/// on SIGTERM.
#[test]
fn the_demo_runs_on_ports_it_was_given_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenproxy"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("Ctrl-C to stop"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the demo did not finish its first request; stdout:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    let text = seen.join("\n");
    let proxy_line = seen
        .iter()
        .find(|l| l.trim_start().starts_with("proxy "))
        .expect("the demo prints the proxy's address");
    assert!(
        proxy_line.contains("http://127.0.0.1:") && !proxy_line.contains("http://127.0.0.1:0/"),
        "a port the kernel chose: {proxy_line}"
    );
    // The API answers 200 only to a bearer JWT of the demo issuer that verifies.
    assert!(
        text.contains("-> 200 OK"),
        "the API accepted the request:\n{text}"
    );
    assert!(
        text.contains("\"authorization_headers\": 1"),
        "one Authorization field reached the API:\n{text}"
    );
    assert!(
        !text.contains("the-apps-own-stale-token"),
        "the app's own token was replaced:\n{text}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status}"
    );
}
