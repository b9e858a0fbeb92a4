//! The fault-injection suite: the real binary against a token endpoint and upstreams the test
//! controls. Revoked tokens and 401 replay, IdP failure modes with their retry pacing, upstream
//! resets, a burst across a refresh, hostile client input, WebSocket upgrades and HTTP/2.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::idp::Mode;
use common::rig::{Rig, RigBuilder};
use common::upstream::sha256_hex;
use common::{client, wait_for};

const SECRET: &str = "fault-secret";

/// Provider `idp` with a 1 s timeout and retries from 100 ms up to `retry_max`, logging at info.
fn rig(retry_max: &str) -> RigBuilder {
    Rig::builder()
        .secret(SECRET)
        .provider("timeout: 1s")
        .provider(&format!(
            "refresh: {{ retry_initial: 100ms, retry_max: {retry_max} }}"
        ))
        .env("RUST_LOG", "info")
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_for_fifty_concurrent_401s() {
    let rig = rig("400ms")
        .route("api", &[])
        .route("noreplay", &["replay: false"])
        .start()
        .await;
    let (idp, up) = (&rig.idp, rig.up());
    let port = rig.port("api");
    let first = idp.issued_tokens()[0].clone();
    up.revoke(&first);

    let c = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(format!("http://127.0.0.1:{port}/orders/{i}"))
                .body(format!("body-{i}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let echo: serde_json::Value = r.json().await.unwrap_or_default();
            (i, status, echo)
        }));
    }
    for t in tasks {
        let (i, status, echo) = t.await.unwrap();
        assert_eq!(status, 200, "request {i}: {echo}");
        // The replayed request carried its body intact.
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(format!("body-{i}").as_bytes())
        );
    }
    assert_eq!(
        idp.request_count(),
        2,
        "exactly one extra token request for 50 rejected requests"
    );
    let replays = rig
        .metric(r#"tokenproxy_upstream_replays_total{route="api",outcome="success"}"#)
        .await;
    assert!((1.0..=50.0).contains(&replays), "{replays}");
    let seen = up.seen();
    assert!(seen.iter().all(|s| s.authorization.len() == 1));
    let second = format!(
        "Bearer {}",
        idp.issued_tokens()
            .into_iter()
            .find(|t| *t != first)
            .unwrap()
    );
    assert_eq!(
        seen.iter().filter(|s| s.authorization[0] == second).count(),
        50
    );

    // replay: false lets the 401 through; so does a second rejection of a fresh token.
    up.revoke(second.trim_start_matches("Bearer "));
    let r = rig.get("noreplay", "/x").await;
    assert_eq!(r.status(), 401);
    let before = idp.request_count();
    let r = rig.get("api", "/x").await;
    assert_eq!(
        r.status(),
        200,
        "the token revoked by the other route's 401 is replaced"
    );
    assert_eq!(idp.request_count(), before + 1);
}

#[tokio::test]
async fn a_body_over_the_replay_buffer_gets_the_401_back() {
    let rig = rig("400ms")
        .route("api", &["replay_buffer: 1024"])
        .start()
        .await;
    rig.up().revoke(&rig.idp.issued_tokens()[0]);
    let r = client()
        .post(rig.url("api", "/big"))
        .body(vec![7u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        rig.metric(r#"tokenproxy_upstream_replays_total{route="api",outcome="not_replayable"}"#)
            .await,
        1.0
    );
    // A small body is replayed.
    let r = client()
        .post(rig.url("api", "/small"))
        .body("tiny")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// IdP failure modes: the cached token serves until expiry, 503 (with the reason) after, the
/// IdP's attempts are paced by the backoff, and recovery needs no restart.
async fn idp_fault(mode: Mode, reason: &str, min_gap: Duration, retry_max: &str) {
    let lifetime = Duration::from_secs(2);
    let rig = rig(retry_max)
        .mode(Mode::Ok { lifetime })
        .route("api", &[])
        .start()
        .await;
    let (idp, up) = (&rig.idp, rig.up());
    let failing_since = Instant::now();
    idp.set_mode(mode);
    let c = client();
    let url = rig.url("api", "/x");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let unavailable = wait_for(Duration::from_secs(5), || async {
        c.get(&url).send().await.unwrap().status() == 503
    })
    .await;
    assert!(unavailable);
    assert!(
        failing_since.elapsed() >= Duration::from_millis(1500),
        "503 before the token expired"
    );
    // The reason names the failure once an attempt has failed (before that: token_expired).
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let named = wait_for(Duration::from_secs(5), || async {
        let v: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        let hit = v["reason"] == reason;
        *last.lock().unwrap() = v;
        hit
    })
    .await;
    assert!(named, "503 reason: {}", last.lock().unwrap());
    assert!(
        up.seen().iter().all(|s| s.token_valid == Some(true)),
        "an expired token was forwarded"
    );
    // Pacing: count attempts over two more seconds of failure.
    let (n0, t0) = (idp.request_count(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = idp.request_count() - n0;
    let elapsed = t0.elapsed();
    let max = (elapsed.as_secs_f64() / min_gap.as_secs_f64()).ceil() as usize + 1;
    assert!(
        attempts <= max,
        "{attempts} attempts in {elapsed:?}: faster than one per {min_gap:?}"
    );
    assert!(attempts >= 1, "the refresher gave up");
    idp.set_mode(Mode::Ok {
        lifetime: Duration::from_secs(60),
    });
    assert!(
        wait_for(Duration::from_secs(6), || async {
            c.get(&url).send().await.unwrap().status() == 200
        })
        .await,
        "no recovery"
    );
    let mut secrets = idp.issued_tokens();
    secrets.push(SECRET.into());
    rig.proxy.assert_log_free_of(&secrets);
}

#[tokio::test]
async fn idp_rate_limits_with_retry_after() {
    // Retry-After: 1 is honoured (the backoff alone would retry within 400 ms).
    idp_fault(
        Mode::RateLimited { retry_after: 1 },
        "rate_limited",
        Duration::from_millis(950),
        "3s",
    )
    .await;
}

#[tokio::test]
async fn idp_answers_200_with_an_error_field() {
    idp_fault(
        Mode::Status(
            200,
            r#"{"access_token":"nope","error":"server_error"}"#.into(),
        ),
        "idp_error",
        Duration::from_millis(10),
        "400ms",
    )
    .await;
}

#[tokio::test]
async fn idp_answers_20_mib() {
    idp_fault(
        Mode::Huge(20 * 1024 * 1024),
        "bad_response",
        Duration::from_millis(10),
        "400ms",
    )
    .await;
}

#[tokio::test]
async fn idp_is_slower_than_the_timeout() {
    // Each attempt waits out the 1 s timeout.
    idp_fault(
        Mode::Hang,
        "idp_unreachable",
        Duration::from_millis(950),
        "400ms",
    )
    .await;
}

#[tokio::test]
async fn idp_quota_header_is_exported_and_shown() {
    let rig = rig("400ms")
        .env("RUST_LOG", "debug")
        .before_start(|idp, _| {
            idp.set_quota_header(
                "b=per_hour;q=100;r=98;t=3600,b=per_day;q=1000;r=996;t=86400,b=broken",
            )
        })
        .no_checker()
        .route("api", &[])
        .start()
        .await;
    assert_eq!(
        rig.metric(r#"tokenproxy_idp_quota_remaining{provider="idp",bucket="per_hour"}"#)
            .await,
        98.0
    );
    assert_eq!(
        rig.metric(r#"tokenproxy_idp_quota_limit{provider="idp",bucket="per_day"}"#)
            .await,
        1000.0
    );
    let tokens: serde_json::Value = common::fetch_json(&rig.proxy.admin_url("/tokens")).await;
    let quota = &tokens["tokens"][0]["idp_quota"];
    assert_eq!(quota.as_array().unwrap().len(), 2, "{quota}");
    assert_eq!(quota[0]["remaining"], 98);
}

/// An upstream that answers every request with a response cut off mid-body, then resets.
async fn resetting_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
                    .await;
                // Zero linger: the close is a reset, not a clean end.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_resets_mid_response_and_the_proxy_keeps_serving() {
    let reset = resetting_upstream().await;
    let rig = rig("400ms")
        .no_checker()
        .route("good", &[])
        .route_to("reset", &format!("http://{reset}"), &[])
        .start()
        .await;
    for _ in 0..5 {
        let body = match client().get(rig.url("reset", "/x")).send().await {
            Ok(r) => r.bytes().await.map(|b| b.len()).ok(),
            Err(_) => None,
        };
        assert_ne!(
            body,
            Some(100_000),
            "a cut-off response must not look complete"
        );
        assert_eq!(rig.get("good", "/y").await.status(), 200);
    }
}

#[tokio::test]
async fn a_burst_of_2000_requests_over_200_connections_across_a_refresh() {
    let lifetime = Duration::from_secs(2);
    let rig = rig("400ms")
        .mode(Mode::Ok { lifetime })
        .env("RUST_LOG", "warn")
        .route("api", &[])
        .start()
        .await;
    let (idp, up) = (&rig.idp, rig.up());
    let port = rig.port("api");
    let fetches_before = idp.request_count();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..200 {
        tasks.push(tokio::spawn(async move {
            // One connection per task.
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut failures = Vec::new();
            for i in 0..10 {
                match c
                    .get(format!("http://127.0.0.1:{port}/c{conn}/{i}"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                    }
                    Ok(r) => failures.push(r.status().to_string()),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 2000);
    assert_eq!(
        seen.iter().filter(|s| s.token_valid != Some(true)).count(),
        0,
        "expired tokens reached the API"
    );
    let refreshes = idp.request_count() - fetches_before;
    assert!(
        refreshes >= 1,
        "no refresh happened during the {:?} burst",
        started.elapsed()
    );
    assert!(
        refreshes <= 3,
        "{refreshes} token requests during the burst"
    );
}

/// Sends raw bytes, returns what came back (up to the close or 2 s).
async fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_client_input_gets_a_4xx_and_goes_nowhere_else() {
    let rig = rig("400ms").route("api", &[]).start().await;
    let up = rig.up();
    let port = rig.port("api");
    let big_header = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad request line", b"THIS IS NOT HTTP\r\n\r\n".to_vec()),
        ("oversized headers", big_header.into_bytes()),
        (
            "conflicting Content-Length and Transfer-Encoding",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "absolute URI for another host",
            b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_vec(),
        ),
        ("two Content-Length values", b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".to_vec()),
    ];
    for (name, bytes) in cases {
        let answer = raw(port, &bytes).await;
        let status = status_of(&answer);
        assert!(
            (400..500).contains(&status),
            "{name}: got {status}: {answer:.200}"
        );
    }
    let seen = up.seen();
    assert!(
        seen.iter().all(|s| !s.path_and_query.contains("hidden")
            && !s.path_and_query.contains("steal")
            && !s.path_and_query.contains("smuggle")),
        "hostile requests reached the upstream: {:?}",
        seen.iter().map(|s| &s.path_and_query).collect::<Vec<_>>()
    );
    // An absolute-form request for the upstream itself is fine.
    let own = format!(
        "GET http://{}/own HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        up.addr, up.addr
    );
    assert_eq!(status_of(&raw(port, own.as_bytes()).await), 200);
    // Still serving.
    assert_eq!(rig.get("api", "/after").await.status(), 200);
    assert!(up.seen().iter().any(|s| s.path_and_query == "/after"));
}

#[tokio::test]
async fn websocket_upgrade_passes_through_with_the_token_on_the_handshake() {
    // A minimal upgrade-capable upstream: records the handshake, answers 101, then echoes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await.unwrap() == 0 {
                return;
            }
            head.push(b[0]);
        }
        tx.send(String::from_utf8_lossy(&head).into_owned())
            .unwrap();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let rig = rig("400ms")
        .no_upstream()
        .route_to("ws", &format!("http://{ws_addr}"), &[])
        .start()
        .await;
    let port = rig.port("ws");
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /socket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed during the handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"frames-pass-both-ways").await.unwrap();
    let mut echo = vec![0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"frames-pass-both-ways");
    let handshake = rx.recv().await.unwrap().to_ascii_lowercase();
    let token = rig.idp.issued_tokens()[0].to_ascii_lowercase();
    assert!(
        handshake.contains(&format!("authorization: bearer {token}")),
        "{handshake}"
    );
    assert!(handshake.contains("upgrade: websocket"));
}

#[tokio::test]
async fn http2_to_the_upstream_when_offered_and_not_when_off() {
    let rig = rig("400ms")
        .https_h2()
        .route("auto", &["{ca_file}"])
        .route("off", &["{ca_file}", "http2: off"])
        .start()
        .await;
    let r = client()
        .post(rig.url("auto", "/h2"))
        .body("over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = rig.get("off", "/h1").await;
    assert_eq!(r.status(), 200);
    let seen = rig.up().seen();
    let h2 = seen.iter().find(|s| s.path_and_query == "/h2").unwrap();
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h2.body_sha256, sha256_hex(b"over h2"));
    assert_eq!(h2.token_valid, Some(true));
    assert_eq!(
        seen.iter()
            .find(|s| s.path_and_query == "/h1")
            .unwrap()
            .version,
        http::Version::HTTP_11
    );
}
