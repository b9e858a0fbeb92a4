//! The lean path to HTTPS upstreams against the real binary and real TLS (a CA generated here):
//! trust roots (the route's `ca_file`, or the system's), SNI and Host, a certificate for another
//! name, pooled connections and their handshakes, resumption after the upstream closed one,
//! large bodies, and what stays on pingora's path (h2 upstreams).

mod common;

use std::time::Duration;

use common::config::Cfg;
use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::tls::TestCa;
use common::upstream::{pattern, sha256_hex, Upstream};
use common::{client, metric, metrics_text, wait_for};

const SECRET: &str = "tls-lean-secret";

fn ok_mode() -> Mode {
    Mode::Ok {
        lifetime: Duration::from_secs(300),
    }
}

async fn handoffs(admin: u16, route: &str, reason: &str) -> f64 {
    metric(
        admin,
        &format!(r#"tokenproxy_pingora_handoffs_total{{route="{route}",reason="{reason}"}}"#),
    )
    .await
}

/// The sum of every handoff sample of `route`, whatever the reason.
async fn all_handoffs(admin: u16, route: &str) -> f64 {
    let text = metrics_text(admin).await;
    let prefix = "tokenproxy_pingora_handoffs_total{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!(r#"route="{route}""#)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn handshakes(admin: u16, route: &str, outcome: &str) -> f64 {
    metric(
        admin,
        &format!(
            r#"tokenproxy_upstream_tls_handshakes_total{{route="{route}",outcome="{outcome}"}}"#
        ),
    )
    .await
}

async fn opened(admin: u16, route: &str, path: &str) -> f64 {
    metric(
        admin,
        &format!(
            r#"tokenproxy_upstream_connections_opened_total{{route="{route}",path="{path}"}}"#
        ),
    )
    .await
}

/// Writes `ca`'s certificate into `dir` and returns the `ca_file:` line naming it.
fn ca_line(dir: &tempfile::TempDir, name: &str, ca: &TestCa) -> (String, std::path::PathBuf) {
    let path = dir.path().join(name);
    std::fs::write(&path, &ca.ca_pem).unwrap();
    (format!("ca_file: {}", path.display()), path)
}

#[tokio::test]
async fn https_requests_take_the_lean_path_with_sni_host_and_either_trust_root() {
    let ca = TestCa::new();
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::https(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, ca_path) = ca_line(&dir, "ca.pem", &ca);
    let base = format!("https://localhost:{}/api/v1/", up.addr.port());
    let plain = format!("https://localhost:{}", up.addr.port());
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("ca_file", 0, &base, &[&ca_file, "http2: off"])
        .route("system", 0, &plain, &["http2: off"])
        .route("auto", 0, &plain, &[&ca_file])
        .build();
    // The test CA as the system's roots, for the route without a ca_file.
    let ca_env = ca_path.display().to_string();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[("SSL_CERT_FILE", &ca_env)]);
    proxy.ready().await;
    let admin = proxy.admin;
    let with_ca = proxy.port("ca_file");
    let system = proxy.port("system");
    let auto = proxy.port("auto");
    let c = client();

    let r = c
        .post(format!(
            "http://127.0.0.1:{with_ca}/orders/42?expand=items&x=%20y"
        ))
        .header("host", "caller.invalid")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "stderr:\n{}", proxy.stderr());
    let r = c
        .get(format!("http://127.0.0.1:{system}/sys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "stderr:\n{}", proxy.stderr());
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.sni.as_deref(), Some("localhost"), "{s:?}");
        assert_eq!(s.host, format!("localhost:{}", up.addr.port()), "{s:?}");
        assert_eq!(s.token_valid, Some(true), "{s:?}");
        assert_eq!(s.authorization.len(), 1, "{s:?}");
        assert_eq!(s.version, http::Version::HTTP_11);
    }
    assert_eq!(
        seen[0].path_and_query,
        "/api/v1/orders/42?expand=items&x=%20y"
    );
    assert_eq!(seen[0].body_sha256, sha256_hex(b"hello"));
    assert_eq!(seen[1].path_and_query, "/sys");
    for route in ["ca_file", "system"] {
        assert_eq!(all_handoffs(admin, route).await, 0.0, "{route}");
        assert_eq!(opened(admin, route, "lean").await, 1.0, "{route}");
        assert_eq!(handshakes(admin, route, "full").await, 1.0, "{route}");
    }

    // http2: auto: pingora's path takes the first request, offering h2; the upstream selects
    // HTTP/1.1, so the lean path takes the rest.
    for i in 0..4 {
        let r = c
            .get(format!("http://127.0.0.1:{auto}/auto/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(handoffs(admin, "auto", "http2_unknown").await, 1.0);
    assert_eq!(all_handoffs(admin, "auto").await, 1.0);
    assert_eq!(opened(admin, "auto", "pingora").await, 1.0);
    assert_eq!(opened(admin, "auto", "lean").await, 1.0);
    let auto_seen: Vec<_> = up
        .seen()
        .into_iter()
        .filter(|s| s.path_and_query.starts_with("/auto/"))
        .collect();
    assert_eq!(auto_seen.len(), 4);
    assert!(auto_seen
        .iter()
        .all(|s| s.version == http::Version::HTTP_11 && s.token_valid == Some(true)));
    for route in ["ca_file", "system", "auto"] {
        assert_eq!(handoffs(admin, route, "tls_upstream").await, 0.0, "{route}");
    }
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}

#[tokio::test]
async fn a_certificate_for_another_name_gets_the_same_502_on_both_paths() {
    let ca = TestCa::for_names(&["other.example"]);
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::https(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, _) = ca_line(&dir, "ca.pem", &ca);
    let upstream = format!("https://localhost:{}", up.addr.port());
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("lean", 0, &upstream, &[&ca_file, "http2: off"])
        // Never learns the upstream's version (no handshake succeeds): stays pingora's.
        .route("pingora", 0, &upstream, &[&ca_file])
        .build();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let lean = proxy.port("lean");
    let pingora = proxy.port("pingora");
    let c = client();
    for (route, port) in [("lean", lean), ("pingora", pingora)] {
        for post in [false, true] {
            let url = format!("http://127.0.0.1:{port}/x");
            let req = if post {
                c.post(url).body("b")
            } else {
                c.get(url)
            };
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 502, "{route}");
            assert_eq!(r.headers()["content-type"], "application/json", "{route}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                body,
                serde_json::json!({ "error": "upstream_tls_failed", "route": route })
            );
        }
        assert_eq!(
            metric(
                admin,
                &format!(r#"tokenproxy_upstream_errors_total{{route="{route}",kind="tls"}}"#)
            )
            .await,
            2.0,
            "{route}"
        );
        assert_eq!(
            metric(
                admin,
                &format!(r#"tokenproxy_requests_total{{route="{route}",code="502"}}"#)
            )
            .await,
            2.0,
            "{route}"
        );
    }
    assert_eq!(all_handoffs(admin, "lean").await, 0.0);
    assert_eq!(handoffs(admin, "pingora", "http2_unknown").await, 2.0);
    // The GET is tried twice (a new connection, as on pingora's path), the POST once.
    assert_eq!(handshakes(admin, "lean", "failed").await, 3.0);
    assert_eq!(handshakes(admin, "lean", "full").await, 0.0);
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn pooled_tls_connections_are_reused_and_resumed_after_the_upstream_closes_them() {
    let ca = TestCa::new();
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::https(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, _) = ca_line(&dir, "ca.pem", &ca);
    let upstream = format!("https://localhost:{}", up.addr.port());
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("pool", 0, &upstream, &[&ca_file, "http2: off"])
        .build();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let port = proxy.port("pool");

    // Many requests one after another, even on new caller connections: one upstream connection.
    let c = client();
    for i in 0..30 {
        let r = c
            .get(format!("http://127.0.0.1:{port}/seq/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.count(), 30);
    assert_eq!(up.handshakes(), 1);
    assert_eq!(opened(admin, "pool", "lean").await, 1.0);
    assert_eq!(handshakes(admin, "pool", "full").await, 1.0);

    // Concurrent callers: each pooled connection costs one handshake, no more.
    let before = up.handshakes();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let c = reqwest::Client::new();
            tokio::spawn(async move {
                for i in 0..10 {
                    let r = c
                        .get(format!("http://127.0.0.1:{port}/par/{t}/{i}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.count(), 70);
    let new = up.handshakes() - before;
    assert!(
        new <= 3,
        "{new} handshakes for 4 callers with one pooled connection"
    );
    assert_eq!(
        opened(admin, "pool", "lean").await as usize,
        up.handshakes()
    );
    assert_eq!(all_handoffs(admin, "pool").await, 0.0);

    // The upstream closes its idle connections: the next request still succeeds, on a new
    // connection that resumes the TLS session.
    up.close_idle();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            up.open_connections() == 0
        })
        .await,
        "the upstream did not close its connections"
    );
    let handshakes_before = up.handshakes();
    let resumed_before = up.resumed();
    for method in ["GET", "POST"] {
        let url = format!("http://127.0.0.1:{port}/after-close");
        let req = match method {
            "GET" => c.get(url),
            _ => c.post(url).body("after"),
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{method}; stderr:\n{}", proxy.stderr());
        up.close_idle();
        assert!(
            wait_for(Duration::from_secs(10), || async {
                up.open_connections() == 0
            })
            .await
        );
    }
    assert_eq!(up.handshakes(), handshakes_before + 2);
    assert_eq!(
        up.resumed(),
        resumed_before + 2,
        "both new connections resumed a session"
    );
    // What the proxy counts is what the upstream saw.
    assert_eq!(
        handshakes(admin, "pool", "resumed").await as usize,
        up.resumed()
    );
    assert_eq!(
        handshakes(admin, "pool", "full").await as usize,
        up.handshakes() - up.resumed()
    );
    assert_eq!(
        metric(
            admin,
            r#"tokenproxy_upstream_errors_total{route="pool",kind="other"}"#
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn ten_mib_bodies_stream_through_tls_intact_both_ways() {
    let ca = TestCa::new();
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::https(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, _) = ca_line(&dir, "ca.pem", &ca);
    let upstream = format!("https://localhost:{}", up.addr.port());
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("big", 0, &upstream, &[&ca_file, "http2: off"])
        .build();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[("RUST_LOG", "info")]);
    proxy.ready().await;
    let admin = proxy.admin;
    let port = proxy.port("big");
    let c = client();
    const N: usize = 10 * 1024 * 1024;

    // The response streams through the lean path.
    let r = c
        .get(format!("http://127.0.0.1:{port}/big?bytes={N}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), N);
    assert_eq!(sha256_hex(&body), sha256_hex(&pattern(N)));
    assert_eq!(all_handoffs(admin, "big").await, 0.0);

    // Uploads past the lean path's body limit are pingora's, over TLS too: streamed (chunked)
    // and with a Content-Length.
    let upload = pattern(N);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        upload.chunks(100_003).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .put(format!("http://127.0.0.1:{port}/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_len"], N);
    assert_eq!(echo["body_sha256"], sha256_hex(&upload));
    let r = c
        .put(format!("http://127.0.0.1:{port}/upload"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(&upload));
    assert_eq!(handoffs(admin, "big", "transfer_encoding").await, 1.0);
    assert_eq!(handoffs(admin, "big", "large_body").await, 1.0);
    // A body up to the limit goes lean, over TLS.
    let small = pattern(60 * 1024);
    let r = c
        .post(format!("http://127.0.0.1:{port}/small"))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(&small));
    assert_eq!(all_handoffs(admin, "big").await, 2.0);
}

#[tokio::test]
async fn h2_upstreams_stay_on_pingoras_path_and_http2_off_never_offers_h2() {
    let ca = TestCa::new();
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::https_h2(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, _) = ca_line(&dir, "ca.pem", &ca);
    let upstream = format!("https://localhost:{}", up.addr.port());
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("auto", 0, &upstream, &[&ca_file])
        .route("off", 0, &upstream, &[&ca_file, "http2: off"])
        .build();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let auto = proxy.port("auto");
    let off = proxy.port("off");
    let c = client();
    for i in 0..3 {
        for port in [auto, off] {
            let r = c
                .post(format!("http://127.0.0.1:{port}/v/{port}/{i}"))
                .body("body")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        let want = if s.path_and_query.starts_with(&format!("/v/{auto}/")) {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(s.version, want, "{s:?}");
        assert_eq!(s.token_valid, Some(true));
        assert_eq!(s.body_sha256, sha256_hex(b"body"));
    }
    assert_eq!(handoffs(admin, "auto", "http2_unknown").await, 1.0);
    assert_eq!(handoffs(admin, "auto", "http2_upstream").await, 2.0);
    assert_eq!(all_handoffs(admin, "off").await, 0.0);
    assert_eq!(opened(admin, "off", "lean").await, 1.0);
    assert_eq!(handshakes(admin, "auto", "full").await, 0.0);
}

#[tokio::test]
async fn an_upstream_that_never_answers_the_handshake_gets_the_same_504_on_both_paths() {
    let idp = Idp::start(ok_mode()).await;
    // Accepts connections and says nothing: the TLS handshake never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port_up = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let upstream = format!("https://127.0.0.1:{port_up}");
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route(
            "lean",
            0,
            &upstream,
            &["connect_timeout: 300ms", "http2: off"],
        )
        .route("pingora", 0, &upstream, &["connect_timeout: 300ms"])
        .build();
    let mut proxy = Proxy::start(&yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let lean = proxy.port("lean");
    let pingora = proxy.port("pingora");
    let c = client();
    for (route, port) in [("lean", lean), ("pingora", pingora)] {
        let started = std::time::Instant::now();
        let r = c
            .post(format!("http://127.0.0.1:{port}/x"))
            .body("b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504, "{route}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "upstream_timeout", "route": route })
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{route}");
        assert_eq!(
            metric(
                admin,
                &format!(r#"tokenproxy_upstream_errors_total{{route="{route}",kind="timeout"}}"#)
            )
            .await,
            1.0,
            "{route}"
        );
    }
    assert_eq!(all_handoffs(admin, "lean").await, 0.0);
    assert_eq!(handshakes(admin, "lean", "failed").await, 1.0);
    held.abort();
}
