//! The proxy's main job, end to end with the real binary: inject exactly one bearer token, speak
//! the token request the RFC and Auth0 describe, reach an HTTPS upstream, stream big bodies, and
//! answer upstream and token failures with JSON errors.

mod common;

use std::time::Duration;

use common::client;
use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::rig::Rig;
use common::upstream::{pattern, sha256_hex, Upstream};

const SECRET: &str = "s3cret-value-&:+";

#[tokio::test]
async fn injects_exactly_one_bearer_and_never_the_callers_own() {
    let token = "token: { provider: idp, audience: https://api.example/ }";
    let rig = Rig::builder()
        .secret(SECRET)
        .route("replace", &[token])
        .route("keep", &["existing: keep", token])
        .start()
        .await;
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let c = client();

    let r = c
        .get(rig.url("replace", "/x"))
        .header("authorization", "Bearer callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = rig.get("replace", "/y").await;
    assert_eq!(r.status(), 200);
    // `keep`: the caller's header goes through untouched; without one, the token is injected.
    c.get(rig.url("keep", "/z"))
        .header("authorization", "Basic callers-own")
        .send()
        .await
        .unwrap();
    rig.get("keep", "/w").await;

    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    let tokens = idp.issued_tokens();
    assert_eq!(tokens.len(), 1, "routes with the same key share one token");
    let bearer = format!("Bearer {}", tokens[0]);
    assert_eq!(seen[0].authorization, vec![bearer.clone()]);
    assert_eq!(seen[0].token_valid, Some(true));
    assert_eq!(seen[1].authorization, vec![bearer.clone()]);
    assert_eq!(seen[2].authorization, vec!["Basic callers-own".to_string()]);
    assert_eq!(seen[3].authorization, vec![bearer]);
    proxy.assert_log_free_of(&[SECRET.to_string(), tokens[0].clone()]);
}

#[tokio::test]
async fn token_requests_in_both_encodings_and_both_auth_methods() {
    let idp = Idp::start(Mode::Ok {
        lifetime: Duration::from_secs(300),
    })
    .await;
    let up = Upstream::http(None).await;
    let combos = [
        ("post_form", "client_secret_post", "form"),
        ("post_json", "client_secret_post", "json"),
        ("basic_form", "client_secret_basic", "form"),
        ("basic_json", "client_secret_basic", "json"),
    ];
    let mut yaml = "admin: { listen: 127.0.0.1:0 }\nproviders:\n".to_string();
    for (name, method, body) in combos {
        yaml += &format!(
            "  {name}:\n    token_url: \"{}\"\n    client_id: \"client {name}\"\n    client_secret: \"{SECRET}\"\n    auth_method: {method}\n    body: {body}\n    params: {{ organization: org_123 }}\n",
            idp.token_url()
        );
    }
    yaml += "routes:\n";
    for (name, _, _) in combos {
        yaml += &format!(
            "  - name: {name}\n    listen: 127.0.0.1:0\n    upstream: http://{}\n    token: {{ provider: {name}, audience: \"https://api/{name}\", scope: \"read:a write:b\", resource: \"https://res/\" }}\n",
            up.addr
        );
    }
    let mut proxy = Proxy::start(&yaml, 0, &[]);
    proxy.ready().await;

    let requests = idp.requests();
    assert_eq!(requests.len(), 4);
    for (name, method, body) in combos {
        let r = requests
            .iter()
            .find(|r| {
                r.params.get("audience").map(String::as_str) == Some(&format!("https://api/{name}"))
            })
            .unwrap_or_else(|| panic!("no token request for {name}: {requests:?}"));
        let want_type = if body == "json" {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        assert!(
            r.content_type.starts_with(want_type),
            "{name}: {}",
            r.content_type
        );
        assert_eq!(r.params["grant_type"], "client_credentials", "{name}");
        assert_eq!(r.params["scope"], "read:a write:b", "{name}");
        assert_eq!(r.params["resource"], "https://res/", "{name}");
        assert_eq!(
            r.params["organization"], "org_123",
            "{name}: params are sent"
        );
        let client_id = format!("client {name}");
        if method == "client_secret_post" {
            assert_eq!(r.params["client_id"], client_id, "{name}");
            assert_eq!(r.params["client_secret"], SECRET, "{name}");
            assert!(r.authorization.is_none(), "{name}");
        } else {
            assert_eq!(r.basic(), Some((client_id, SECRET.to_string())), "{name}");
            assert!(!r.params.contains_key("client_secret"), "{name}");
            assert!(!r.params.contains_key("client_id"), "{name}");
        }
    }
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}

#[tokio::test]
async fn https_upstream_with_generated_ca_gets_sni_host_and_base_path() {
    let rig = Rig::builder()
        .secret(SECRET)
        .https()
        .route_to("tls", "{up}/api/v1/", &["{ca_file}"])
        .route_to("untrusted", "{up}/api/v1/", &[])
        .start()
        .await;
    let (up, proxy) = (rig.up(), &rig.proxy);
    let r = rig
        .post_hello("tls", "/orders/42?expand=items&x=%20y")
        .await;
    assert_eq!(r.status(), 200, "stderr:\n{}", proxy.stderr());
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    assert_eq!(seen[0].host, format!("localhost:{}", up.addr.port()));
    assert_eq!(
        seen[0].path_and_query,
        "/api/v1/orders/42?expand=items&x=%20y"
    );
    assert_eq!(seen[0].body_sha256, sha256_hex(b"hello"));
    assert_eq!(seen[0].token_valid, Some(true));

    // Without the CA the certificate is not trusted: a 502 naming the route, nothing forwarded.
    let r = rig.get("untrusted", "/x").await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "error": "upstream_tls_failed", "route": "untrusted" })
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn ten_mib_bodies_stream_through_intact_both_ways() {
    let rig = Rig::builder()
        .secret(SECRET)
        .route("big", &[])
        .env("RUST_LOG", "info")
        .start()
        .await;
    const N: usize = 10 * 1024 * 1024;
    let upload = pattern(N);
    let r = rig.put_streamed("big", "/upload", &upload).await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_len"], N);
    assert_eq!(echo["body_sha256"], sha256_hex(&upload));

    rig.assert_big_download("big", N).await;
}

#[tokio::test]
async fn upstream_refused_is_502_and_timeout_is_504_with_json_naming_the_route() {
    let closed = common::ClosedPort::new();
    let rig = Rig::builder()
        .secret(SECRET)
        .route_to("refused", &format!("http://127.0.0.1:{}", closed.port), &[])
        .route("slow", &["read_timeout: 300ms"])
        .start()
        .await;

    let r = rig.get("refused", "/a").await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "error": "upstream_connect_failed", "route": "refused" })
    );

    let started = std::time::Instant::now();
    let r = rig.get("slow", "/hang").await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "error": "upstream_timeout", "route": "slow" })
    );
    rig.proxy
        .assert_log_free_of(&[SECRET.to_string(), rig.idp.issued_tokens()[0].clone()]);
}

#[tokio::test]
async fn without_a_token_nothing_is_forwarded_and_the_caller_gets_503() {
    let rig = Rig::builder()
        .secret(SECRET)
        .mode(Mode::Status(
            500,
            r#"{"error":"server_error","error_description":"try later"}"#.into(),
        ))
        .no_checker()
        .provider("refresh: { retry_initial: 100ms, retry_max: 200ms }")
        .route("orders", &[])
        .start_listening()
        .await;
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let port = rig.port("orders");
    let c = client();
    // Until the first answer from the IdP the reason is that the token is still pending.
    let failed = common::wait_for(Duration::from_secs(10), || async {
        rig.metric(r#"tokenproxy_token_fetches_total{provider="idp",audience="",outcome="error"}"#)
            .await
            >= 1.0
    })
    .await;
    assert!(failed);
    for _ in 0..3 {
        let r = c
            .get(format!("http://127.0.0.1:{port}/x"))
            .header("authorization", "Bearer callers-own")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "error": "token_unavailable", "route": "orders", "reason": "idp_error" })
        );
    }
    assert_eq!(
        up.count(),
        0,
        "no request may be forwarded without its token"
    );
    let r = c.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["routes_without_token"][0]["route"], "orders");
    assert_eq!(
        body["routes_without_token"][0]["last_error"]["error"],
        "server_error"
    );
    // Retries are 10-100 ms apart (full jitter): wait for the next one rather than race it.
    let retried = common::wait_for(Duration::from_secs(5), || async {
        idp.request_count() >= 2
    })
    .await;
    assert!(retried, "the refresher keeps retrying");
    proxy.assert_log_free_of(&[SECRET.to_string()]);
}
