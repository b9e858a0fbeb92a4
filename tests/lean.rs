//! The lean HTTP/1.1 path against the real binary: which requests it serves itself (plain
//! requests to HTTP/1.1 upstreams, plain or TLS, including a 401 replay), which it leaves to
//! pingora's proxy and why (`tokenproxy_pingora_handoffs_total`), and that both give the same
//! result.

mod common;

use std::time::Duration;

use common::client;
use common::idp::Mode;
use common::rig::{Layout, Rig};
use common::upstream::sha256_hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "lean-secret";

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
    // The plain upstream is the rig's; the https one has a certificate from the rig's CA.
    let rig = Rig::builder()
        .secret(SECRET)
        .route_to("api", "{up}/base/", &[])
        .route_to("tls", "{tls_up}", &["{ca_file}"])
        .also_https()
        .start()
        .await;
    let (idp, up, tls_up, proxy) = (&rig.idp, rig.up(), rig.tls_up(), &rig.proxy);
    let port = rig.port("api");
    let c = client();

    // Served lean: a GET, and a POST with a small body.
    let r = c
        .get(rig.url("api", "/x/y?q=1&r=%20"))
        .header("authorization", "Bearer callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(rig.url("api", "/orders"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.all_handoffs("api").await, 0.0);

    // Left to pingora: a chunked body, and HTTP/1.0.
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"chun")),
        Ok(bytes::Bytes::from_static(b"ked")),
    ]);
    let r = c
        .post(rig.url("api", "/chunked"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.handoffs("api", "transfer_encoding").await, 1.0);
    let answer = http10(port, "/old").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert_eq!(rig.handoffs("api", "http_version").await, 1.0);

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
        rig.metric(r#"tokenproxy_requests_total{route="api",code="200"}"#)
            .await,
        4.0
    );

    // A 401 is replayed with a fresh token on the lean path too.
    let fetches = idp.request_count();
    up.revoke(&idp.issued_tokens()[0]);
    let r = c
        .put(rig.url("api", "/again"))
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
        rig.metric(r#"tokenproxy_upstream_replays_total{route="api",outcome="success"}"#)
            .await,
        1.0
    );
    assert_eq!(rig.all_handoffs("api").await, 2.0, "the replay stayed lean");

    // An https upstream (`http2: auto`): pingora's path takes the first request, offering h2;
    // the upstream selects HTTP/1.1, so the lean path takes the next ones, over TLS.
    for _ in 0..3 {
        let r = rig.get("tls", "/t").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(rig.handoffs("tls", "http2_unknown").await, 1.0);
    assert_eq!(rig.handoffs("tls", "tls_upstream").await, 0.0);
    assert_eq!(rig.all_handoffs("tls").await, 1.0);
    assert!(tls_up.seen().iter().all(|s| s.token_valid == Some(true)));
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}

#[tokio::test]
async fn lean_path_false_sends_every_request_through_pingora() {
    let rig = Rig::builder()
        .secret(SECRET)
        .top("lean_path: false")
        .route("api", &[])
        .start()
        .await;
    for _ in 0..3 {
        let r = rig.get("api", "/x").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(rig.handoffs("api", "disabled").await, 3.0);
    assert!(rig.up().seen().iter().all(|s| s.token_valid == Some(true)));
}

#[tokio::test]
async fn lean_path_can_be_turned_off_and_on_by_reload() {
    let layout = |lean: bool| {
        Layout::new()
            .top(&format!("lean_path: {lean}"))
            .route("api", &[])
    };
    let rig = Rig::builder()
        .secret(SECRET)
        .layout(layout(true))
        .start()
        .await;
    let up = rig.up();
    // A keep-alive client: a connection the lean path handed to pingora comes back to it, and
    // the switch applies from the next request on, on whatever connection carries it.
    let c = reqwest::Client::new();
    let get = || async {
        let r = c.get(rig.url("api", "/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    };
    get().await;
    assert_eq!(rig.all_handoffs("api").await, 0.0);

    for (lean, reloads, disabled) in [(false, 1.0, 1.0), (true, 2.0, 1.0)] {
        rig.reload(&rig.yaml(&layout(lean))).await;
        assert!(
            rig.metric(r#"tokenproxy_config_reloads_total{outcome="success"}"#)
                .await
                >= reloads,
            "reload to lean_path: {lean}"
        );
        get().await;
        assert_eq!(rig.handoffs("api", "disabled").await, disabled);
    }
    assert_eq!(up.seen().len(), 3);
    assert!(up.seen().iter().all(|s| s.token_valid == Some(true)));
}

#[tokio::test]
async fn without_a_token_the_request_goes_to_pingora_which_answers_503() {
    let rig = Rig::builder()
        .secret(SECRET)
        .mode(Mode::Status(500, r#"{"error":"server_error"}"#.into()))
        .no_checker()
        .provider("refresh: { retry_initial: 100ms, retry_max: 200ms }")
        .route("api", &[])
        .start_listening()
        .await;
    let r = rig.get("api", "/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(rig.handoffs("api", "no_token").await, 1.0);
    assert_eq!(rig.up().count(), 0);
}
