//! The lean HTTP/1.1 path against the real binary: which requests it serves itself (plain
//! requests to HTTP/1.1 upstreams, plain or TLS, including a 401 replay), which it leaves to
//! pingora's proxy and why (`tokenproxy_pingora_handoffs_total`), and that both give the same
//! result.

mod common;

use std::time::Duration;

use common::config::Cfg;
use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::tls::TestCa;
use common::upstream::{sha256_hex, Upstream};
use common::{client, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "lean-secret";

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
    let text = common::metrics_text(admin).await;
    let prefix = "tokenproxy_pingora_handoffs_total{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!(r#"route="{route}""#)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One HTTP/1.0 request on its own connection; returns the whole answer.
async fn http10(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes an HTTP/1.0 connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn plain_requests_are_served_lean_and_the_rest_by_pingora_with_the_same_result() {
    let ca = TestCa::new();
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::http(Some(idp.checker())).await;
    let tls_up = Upstream::https(Some(idp.checker()), &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .route("api", 0, &format!("http://{}/base/", up.addr), &[])
        .route(
            "tls",
            0,
            &format!("https://localhost:{}", tls_up.addr.port()),
            &[&format!("ca_file: {}", ca_file.display())],
        )
        .build();
    let mut proxy = Proxy::start_in(dir, &yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let port = proxy.port("api");
    let tls = proxy.port("tls");
    let c = client();

    // Served lean: a GET, and a POST with a small body.
    let r = c
        .get(format!("http://127.0.0.1:{port}/x/y?q=1&r=%20"))
        .header("authorization", "Bearer callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("http://127.0.0.1:{port}/orders"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(all_handoffs(admin, "api").await, 0.0);

    // Left to pingora: a chunked body, and HTTP/1.0.
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"chun")),
        Ok(bytes::Bytes::from_static(b"ked")),
    ]);
    let r = c
        .post(format!("http://127.0.0.1:{port}/chunked"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(handoffs(admin, "api", "transfer_encoding").await, 1.0);
    let answer = http10(port, "/old").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert_eq!(handoffs(admin, "api", "http_version").await, 1.0);

    // Whichever path served it, the upstream saw the same kind of request.
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    let paths: Vec<_> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/base/x/y?q=1&r=%20",
            "/base/orders",
            "/base/chunked",
            "/base/old"
        ]
    );
    for s in &seen {
        assert_eq!(s.authorization.len(), 1, "{s:?}");
        assert_eq!(s.token_valid, Some(true), "{s:?}");
        assert_eq!(s.host, up.addr.to_string());
    }
    assert_eq!(seen[1].body_sha256, sha256_hex(b"hello"));
    assert_eq!(seen[2].body_sha256, sha256_hex(b"chunked"));
    assert_eq!(
        metric(
            admin,
            r#"tokenproxy_requests_total{route="api",code="200"}"#
        )
        .await,
        4.0
    );

    // A 401 is replayed with a fresh token on the lean path too.
    let fetches = idp.request_count();
    up.revoke(&idp.issued_tokens()[0]);
    let r = c
        .put(format!("http://127.0.0.1:{port}/again"))
        .body("replay me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(idp.request_count(), fetches + 1);
    let last = up.seen().pop().unwrap();
    assert_eq!(last.token_valid, Some(true));
    assert_eq!(last.body_sha256, sha256_hex(b"replay me"));
    assert_eq!(
        metric(
            admin,
            r#"tokenproxy_upstream_replays_total{route="api",outcome="success"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        all_handoffs(admin, "api").await,
        2.0,
        "the replay stayed lean"
    );

    // An https upstream (`http2: auto`): pingora's path takes the first request, offering h2;
    // the upstream selects HTTP/1.1, so the lean path takes the next ones, over TLS.
    for _ in 0..3 {
        let r = c
            .get(format!("http://127.0.0.1:{tls}/t"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(handoffs(admin, "tls", "http2_unknown").await, 1.0);
    assert_eq!(handoffs(admin, "tls", "tls_upstream").await, 0.0);
    assert_eq!(all_handoffs(admin, "tls").await, 1.0);
    assert!(tls_up.seen().iter().all(|s| s.token_valid == Some(true)));
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}

#[tokio::test]
async fn lean_path_false_sends_every_request_through_pingora() {
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::http(Some(idp.checker())).await;
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .top("lean_path: false")
        .route("api", 0, &format!("http://{}", up.addr), &[])
        .build();
    let mut proxy = Proxy::start(&yaml, 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let port = proxy.port("api");
    for _ in 0..3 {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(handoffs(admin, "api", "disabled").await, 3.0);
    assert!(up.seen().iter().all(|s| s.token_valid == Some(true)));
}

#[tokio::test]
async fn lean_path_can_be_turned_off_and_on_by_reload() {
    let idp = Idp::start(ok_mode()).await;
    let up = Upstream::http(Some(idp.checker())).await;
    let config = |lean: bool| {
        Cfg::new(0, &idp.token_url(), SECRET)
            .top(&format!("lean_path: {lean}"))
            .route("api", 0, &format!("http://{}", up.addr), &[])
            .build()
    };
    let mut proxy = Proxy::start(&config(true), 0, &[]);
    proxy.ready().await;
    let admin = proxy.admin;
    let port = proxy.port("api");
    // A keep-alive client: a connection the lean path handed to pingora comes back to it, and
    // the switch applies from the next request on, on whatever connection carries it.
    let c = reqwest::Client::new();
    let get = || async {
        let r = c
            .get(format!("http://127.0.0.1:{port}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    get().await;
    assert_eq!(all_handoffs(admin, "api").await, 0.0);

    for (lean, reloads, disabled) in [(false, 1.0, 1.0), (true, 2.0, 1.0)] {
        std::fs::write(&proxy.config_path, config(lean)).unwrap();
        proxy.signal(libc::SIGHUP);
        let reloaded = common::wait_for(Duration::from_secs(10), || async {
            metric(
                admin,
                r#"tokenproxy_config_reloads_total{outcome="success"}"#,
            )
            .await
                >= reloads
        })
        .await;
        assert!(reloaded, "reload to lean_path: {lean}");
        get().await;
        assert_eq!(handoffs(admin, "api", "disabled").await, disabled);
    }
    assert_eq!(up.seen().len(), 3);
    assert!(up.seen().iter().all(|s| s.token_valid == Some(true)));
}

#[tokio::test]
async fn without_a_token_the_request_goes_to_pingora_which_answers_503() {
    let idp = Idp::start(Mode::Status(500, r#"{"error":"server_error"}"#.into())).await;
    let up = Upstream::http(None).await;
    let yaml = Cfg::new(0, &idp.token_url(), SECRET)
        .provider("refresh: { retry_initial: 100ms, retry_max: 200ms }")
        .route("api", 0, &format!("http://{}", up.addr), &[])
        .build();
    let mut proxy = Proxy::start(&yaml, 0, &[]);
    proxy.listening().await;
    let admin = proxy.admin;
    let port = proxy.port("api");
    let r = client()
        .get(format!("http://127.0.0.1:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(handoffs(admin, "api", "no_token").await, 1.0);
    assert_eq!(up.count(), 0);
}
