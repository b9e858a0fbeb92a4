//! The lean path to HTTPS upstreams against the real binary and real TLS (a CA generated here):
//! trust roots (the route's `ca_file`, or the system's), SNI and Host, a certificate for another
//! name, pooled connections and their handshakes, resumption after the upstream closed one (or
//! all of them: a burst of new connections), large bodies, and what stays on pingora's path (h2
//! upstreams).

mod common;

use std::time::Duration;

use common::rig::Rig;
use common::upstream::{pattern, sha256_hex, Upstream};
use common::{client, keepalive_callers, wait_for};

const SECRET: &str = "tls-lean-secret";

#[tokio::test]
async fn https_requests_take_the_lean_path_with_sni_host_and_either_trust_root() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .route_to("ca_file", "{up}/api/v1/", &["{ca_file}", "http2: off"])
        .route("system", &["http2: off"])
        .route("auto", &["{ca_file}"])
        // The test CA as the system's roots, for the route without a ca_file.
        .env("SSL_CERT_FILE", "{ca_path}")
        .start()
        .await;
    let (up, proxy) = (rig.up(), &rig.proxy);

    let r = rig
        .post_hello("ca_file", "/orders/42?expand=items&x=%20y")
        .await;
    assert_eq!(r.status(), 200, "stderr:\n{}", proxy.stderr());
    let r = rig.get("system", "/sys").await;
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
        assert_eq!(rig.all_handoffs(route).await, 0.0, "{route}");
        assert_eq!(rig.opened(route, "lean").await, 1.0, "{route}");
        assert_eq!(rig.handshakes(route, "full").await, 1.0, "{route}");
    }

    // http2: auto: pingora's path takes the first request, offering h2; the upstream selects
    // HTTP/1.1, so the lean path takes the rest.
    for i in 0..4 {
        let r = rig.get("auto", &format!("/auto/{i}")).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(rig.handoffs("auto", "http2_unknown").await, 1.0);
    assert_eq!(rig.all_handoffs("auto").await, 1.0);
    assert_eq!(rig.opened("auto", "pingora").await, 1.0);
    assert_eq!(rig.opened("auto", "lean").await, 1.0);
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
        assert_eq!(rig.handoffs(route, "tls_upstream").await, 0.0, "{route}");
    }
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}

#[tokio::test]
async fn a_certificate_for_another_name_gets_the_same_502_on_both_paths() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .cert_names(&["other.example"])
        .route("lean", &["{ca_file}", "http2: off"])
        // Never learns the upstream's version (no handshake succeeds): stays pingora's.
        .route("pingora", &["{ca_file}"])
        .start()
        .await;
    let c = client();
    for route in ["lean", "pingora"] {
        for post in [false, true] {
            let url = rig.url(route, "/x");
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
        // Counted once the answer is logged, which may come just after the caller has it.
        rig.wait_metric(
            &format!(r#"tokenproxy_upstream_errors_total{{route="{route}",kind="tls"}}"#),
            2.0,
        )
        .await;
        rig.wait_metric(
            &format!(r#"tokenproxy_requests_total{{route="{route}",code="502"}}"#),
            2.0,
        )
        .await;
    }
    assert_eq!(rig.all_handoffs("lean").await, 0.0);
    assert_eq!(rig.handoffs("pingora", "http2_unknown").await, 2.0);
    // The GET is tried twice (a new connection, as on pingora's path), the POST once.
    assert_eq!(rig.handshakes("lean", "failed").await, 3.0);
    assert_eq!(rig.handshakes("lean", "full").await, 0.0);
    assert_eq!(rig.up().count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn pooled_tls_connections_are_reused_and_resumed_after_the_upstream_closes_them() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .route("pool", &["{ca_file}", "http2: off"])
        .start()
        .await;
    let (up, proxy) = (rig.up(), &rig.proxy);
    let port = rig.port("pool");

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
    assert_eq!(rig.opened("pool", "lean").await, 1.0);
    assert_eq!(rig.handshakes("pool", "full").await, 1.0);

    // Concurrent callers: each pooled connection costs one handshake, no more.
    let before = up.handshakes();
    let tasks = keepalive_callers(port, "par", 4, 10);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.count(), 70);
    let new = up.handshakes() - before;
    assert!(
        new <= 3,
        "{new} handshakes for 4 callers with one pooled connection"
    );
    assert_eq!(rig.opened("pool", "lean").await as usize, up.handshakes());
    assert_eq!(rig.all_handoffs("pool").await, 0.0);

    // The upstream closes its idle connections: the next request still succeeds, on a new
    // connection that resumes the TLS session.
    close_all(up).await;
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
        close_all(up).await;
    }
    assert_eq!(up.handshakes(), handshakes_before + 2);
    assert_eq!(
        up.resumed(),
        resumed_before + 2,
        "both new connections resumed a session"
    );
    counts_match_the_upstream(&rig, "pool").await;
    assert_eq!(
        rig.metric(r#"tokenproxy_upstream_errors_total{route="pool",kind="other"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn ten_mib_bodies_stream_through_tls_intact_both_ways() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .route("big", &["{ca_file}", "http2: off"])
        .env("RUST_LOG", "info")
        .start()
        .await;
    let port = rig.port("big");
    let c = client();
    const N: usize = 10 * 1024 * 1024;

    // The response streams through the lean path.
    rig.assert_big_download("big", N).await;
    assert_eq!(rig.all_handoffs("big").await, 0.0);

    // Uploads past the lean path's body limit are pingora's, over TLS too: streamed (chunked)
    // and with a Content-Length.
    let upload = pattern(N);
    let r = rig.put_streamed("big", "/upload", &upload).await;
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
    assert_eq!(rig.handoffs("big", "transfer_encoding").await, 1.0);
    assert_eq!(rig.handoffs("big", "large_body").await, 1.0);
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
    assert_eq!(rig.all_handoffs("big").await, 2.0);
}

#[tokio::test]
async fn h2_upstreams_stay_on_pingoras_path_and_http2_off_never_offers_h2() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https_h2()
        .route("auto", &["{ca_file}"])
        .route("off", &["{ca_file}", "http2: off"])
        .start()
        .await;
    let up = rig.up();
    let auto = rig.port("auto");
    let off = rig.port("off");
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
    assert_eq!(rig.handoffs("auto", "http2_unknown").await, 1.0);
    assert_eq!(rig.handoffs("auto", "http2_upstream").await, 2.0);
    assert_eq!(rig.all_handoffs("off").await, 0.0);
    assert_eq!(rig.opened("off", "lean").await, 1.0);
    assert_eq!(rig.handshakes("auto", "full").await, 0.0);
}

/// Many callers at once through an `http2: auto` route to an upstream that selects h2, with the
/// upstream closing its idle connections halfway: every request reaches it over HTTP/2 (none falls
/// back to HTTP/1.1), whichever path took it.
#[tokio::test]
async fn concurrent_callers_to_an_h2_upstream_all_arrive_over_http2() {
    const CALLERS: usize = 16;
    const EACH: usize = 25;
    let rig = Rig::builder()
        .secret(SECRET)
        .https_h2()
        .route("auto", &["{ca_file}"])
        .start()
        .await;
    let port = rig.port("auto");
    // One keep-alive connection per caller, as a legacy client pool would hold.
    let callers = keepalive_callers(port, "c", CALLERS, EACH);
    let up = rig.up();
    let half = wait_for(Duration::from_secs(30), || async {
        up.count() >= CALLERS * EACH / 2
    })
    .await;
    assert!(half, "half of the requests arrived");
    up.close_idle();
    for c in callers {
        c.await.unwrap();
    }
    let seen = up.seen();
    assert_eq!(seen.len(), CALLERS * EACH);
    let http11 = seen
        .iter()
        .filter(|s| s.version != http::Version::HTTP_2)
        .count();
    assert_eq!(http11, 0, "requests that fell back to HTTP/1.1");
    assert!(seen.iter().all(|s| s.token_valid == Some(true)));
}

#[tokio::test]
async fn an_upstream_that_never_answers_the_handshake_gets_the_same_504_on_both_paths() {
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
    let rig = Rig::builder()
        .secret(SECRET)
        .no_upstream()
        .route_to("lean", &upstream, &["connect_timeout: 300ms", "http2: off"])
        .route_to("pingora", &upstream, &["connect_timeout: 300ms"])
        .start()
        .await;
    let c = client();
    for route in ["lean", "pingora"] {
        let started = std::time::Instant::now();
        let r = c.post(rig.url(route, "/x")).body("b").send().await.unwrap();
        assert_eq!(r.status(), 504, "{route}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "upstream_timeout", "route": route })
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{route}");
        assert_eq!(
            rig.metric(&format!(
                r#"tokenproxy_upstream_errors_total{{route="{route}",kind="timeout"}}"#
            ))
            .await,
            1.0,
            "{route}"
        );
    }
    assert_eq!(rig.all_handoffs("lean").await, 0.0);
    assert_eq!(rig.handshakes("lean", "failed").await, 1.0);
    held.abort();
}

/// After its connections are gone, a route's pool opens many at once (a burst of callers): each
/// resumes a session, not only as many as rustls' own cache keeps per server (8).
#[tokio::test]
async fn a_burst_of_new_connections_resumes_every_one() {
    const BURST: usize = 16;
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .route("burst", &["{ca_file}", "http2: off"])
        .start()
        .await;
    let up = rig.up();
    let port = rig.port("burst");
    // BURST callers at once, each held by the upstream long enough that all are in flight
    // together: the pool has no idle connection to lend, so it opens BURST of them.
    let burst = |name: &'static str| async move {
        let c = client();
        let calls = (0..BURST).map(|i| {
            let c = c.clone();
            async move {
                c.get(format!("http://127.0.0.1:{port}/{name}/{i}?sleep_ms=500"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    };

    burst("first").await;
    assert_eq!(
        up.handshakes(),
        BURST,
        "one connection per caller in flight"
    );
    close_all(up).await;

    let resumed_before = up.resumed();
    burst("second").await;
    assert_eq!(up.handshakes(), 2 * BURST);
    assert_eq!(
        up.resumed() - resumed_before,
        BURST,
        "every connection of the second burst resumed a session"
    );
    counts_match_the_upstream(&rig, "burst").await;
}

/// Has the upstream close its idle connections, and waits until they are gone.
async fn close_all(up: &Upstream) {
    up.close_idle();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            up.open_connections() == 0
        })
        .await,
        "the upstream did not close its connections"
    );
}

/// What the proxy counts of `route`'s handshakes is what the (only) upstream saw.
async fn counts_match_the_upstream(rig: &Rig, route: &str) {
    let up = rig.up();
    assert_eq!(
        rig.handshakes(route, "resumed").await as usize,
        up.resumed(),
        "{route}"
    );
    assert_eq!(
        rig.handshakes(route, "full").await as usize,
        up.handshakes() - up.resumed(),
        "{route}"
    );
}
