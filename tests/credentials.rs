//! Credentials and discovery end to end through the real binary. `client_assertion`: the
//! assertion file (a Kubernetes projected service-account token) is read for every token request
//! and sent exactly as it is on disk; an expired one is not sent and the route answers 503
//! `assertion_expired`, shown in `/tokens` and `/readyz`; a fresh file brings the route back
//! without a restart. Discovery: a document for another issuer is `discovery_failed`.
//! `tokenproxy check`: a key that does not fit is an exit code and a message naming the key.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::idp::Mode;
use common::rig::{Rig, RigBuilder};
use common::{client, get_json, wait_for};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A JWT shaped like a projected service-account token, expiring `exp_in_s` from now (negative:
/// already expired). Its signature is not checked by anyone here.
fn sa_token(exp_in_s: i64, n: u32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(
        serde_json::json!({
            "iss": "https://kubernetes.default.svc",
            "sub": "system:serviceaccount:shop:orders",
            "aud": ["https://idp.example/"],
            "exp": now + exp_in_s,
            "iat": now,
            "n": n,
        })
        .to_string(),
    );
    format!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.{payload}.c2lnbmF0dXJl")
}

/// Replaces the file the way the kubelet does: a new file renamed over the old one.
fn swap(path: &Path, content: &str) {
    common::swap_file(path, &format!("{content}\n"));
}

/// Tokens that live 2 s (the proxy asks again every ~1.6 s) from provider `idp` at the IdP's
/// token URL as client `cid`, authenticating with `auth` instead of a secret.
fn rig(auth: &[&str]) -> RigBuilder {
    let mut head = vec!["token_url: \"{token_url}\"", "client_id: cid"];
    head.extend_from_slice(auth);
    Rig::builder()
        .mode(Mode::Ok {
            lifetime: Duration::from_secs(2),
        })
        .provider_head(&head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_assertion_file_is_sent_as_read_and_an_expired_one_is_not() {
    let rig = rig(&[
        "auth_method: client_assertion",
        "client_assertion_file: {dir}/idp-token",
    ])
    .provider("refresh: { retry_initial: 100ms, retry_max: 300ms, expiry_skew: 0s }")
    .route(
        "api",
        &["token: { provider: idp, audience: https://api.example/ }"],
    )
    .before_start(|idp, dir| {
        let token_file = dir.join("idp-token");
        swap(&token_file, &sa_token(3600, 1));
        idp.accept_only_assertion_from(&token_file);
    })
    .start()
    .await;
    let token_file = rig.proxy.dir.path().join("idp-token");
    let port = rig.port("api");
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let r = common::get(port, "/orders").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.seen().last().unwrap().token_valid, Some(true));
    let first = idp.requests()[0].clone();
    assert_eq!(
        first.params.get("client_assertion"),
        Some(&sa_token_trimmed(&token_file))
    );
    assert_eq!(
        first
            .params
            .get("client_assertion_type")
            .map(String::as_str),
        Some(JWT_BEARER)
    );
    assert_eq!(
        first.params.get("client_id").map(String::as_str),
        Some("cid")
    );
    assert_eq!(
        first.params.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert!(!first.params.contains_key("client_secret"));
    assert!(first.authorization.is_none());

    // The kubelet rotates the token: the next token request carries the new one.
    let second = sa_token(3600, 2);
    swap(&token_file, &second);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let got = idp
                .requests()
                .last()
                .and_then(|r| r.params.get("client_assertion").cloned());
            let second = second.clone();
            async move { got.as_deref() == Some(second.as_str()) }
        })
        .await,
        "the rotated assertion was not sent"
    );

    // An expired token on disk is not sent: the route runs dry and says why.
    let sent_before = idp.request_count();
    let expired = sa_token(-30, 3);
    swap(&token_file, &expired);
    let url = format!("http://127.0.0.1:{port}/orders");
    assert!(
        wait_for(Duration::from_secs(10), || {
            let url = url.clone();
            async move { client().get(&url).send().await.unwrap().status() == 503 }
        })
        .await,
        "the route kept a token after the assertion expired"
    );
    let r = client().get(&url).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "token_unavailable");
    assert_eq!(body["reason"], "assertion_expired", "{body}");
    let (_, tokens) = get_json(&proxy.admin_url("/tokens")).await;
    let t = &tokens["tokens"][0];
    assert_eq!(t["last_error"]["class"], "assertion_expired", "{tokens}");
    assert_eq!(t["auth_method"], "client_assertion");
    assert_eq!(t["token_endpoint"], idp.token_url());
    let (status, ready) = get_json(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(
        ready["routes_without_token"][0]["last_error"]["class"], "assertion_expired",
        "{ready}"
    );
    assert!(
        idp.requests()[sent_before..]
            .iter()
            .all(|r| r.params.get("client_assertion") != Some(&expired)),
        "an expired assertion was sent"
    );

    // A fresh token on disk: the route comes back by itself.
    swap(&token_file, &sa_token(3600, 4));
    assert!(
        wait_for(Duration::from_secs(10), || {
            let url = url.clone();
            async move { client().get(&url).send().await.unwrap().status() == 200 }
        })
        .await,
        "the route did not recover"
    );
    // Every assertion the IdP got was the file's content at that moment (it answers 401 else).
    assert!(idp
        .requests()
        .iter()
        .all(|r| r.params.contains_key("client_assertion")),);
    let log = proxy.stderr();
    assert!(
        log.contains("auth_method=\"client_assertion\""),
        "the log names the method:\n{log}"
    );
    proxy.assert_log_free_of(&[second, expired]);
}

fn sa_token_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Serves `GET /.well-known/openid-configuration` with the current body; 404 otherwise.
async fn discovery_server() -> (String, Arc<Mutex<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let doc = Arc::new(Mutex::new(String::new()));
    let d = doc.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = d.lock().unwrap().clone();
            let resp = if head.starts_with("GET /.well-known/openid-configuration ") {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (base, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_for_another_issuer_is_discovery_failed_until_it_is_right() {
    let (issuer, doc) = discovery_server().await;
    let mut rig = Rig::builder()
        .provider_head(&[
            &format!("issuer: {issuer}"),
            "client_id: cid",
            "client_secret: s3cret",
        ])
        .provider("refresh: { retry_initial: 100ms, retry_max: 300ms }")
        .route("api", &["token: { provider: idp }"])
        .mode(Mode::Ok {
            lifetime: Duration::from_secs(60),
        })
        .before_start({
            let doc = doc.clone();
            let issuer = issuer.clone();
            move |idp, _| {
                *doc.lock().unwrap() = format!(
                    r#"{{"issuer":"{issuer}/tenant","token_endpoint":"{}"}}"#,
                    idp.token_url()
                );
            }
        })
        .start_listening()
        .await;
    let port = rig.port("api");
    let (idp, proxy) = (&rig.idp, &rig.proxy);
    let url = format!("http://127.0.0.1:{port}/x");
    assert!(
        wait_for(Duration::from_secs(10), || {
            let admin = proxy.admin_url("/tokens");
            async move {
                let (_, t) = get_json(&admin).await;
                t["tokens"][0]["last_error"]["class"] == "discovery_failed"
            }
        })
        .await
    );
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "discovery_failed", "{body}");
    let (_, t) = get_json(&proxy.admin_url("/tokens")).await;
    let message = t["tokens"][0]["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&format!(
            "\"{issuer}/tenant\" is not the configured issuer \"{issuer}\""
        )),
        "{message}"
    );
    // The method is known from the config; the endpoint only once discovery names it.
    assert_eq!(t["tokens"][0]["auth_method"], "client_secret_post");
    assert!(t["tokens"][0]["token_endpoint"].is_null(), "{t}");
    let (status, ready) = get_json(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(
        ready["routes_without_token"][0]["last_error"]["class"],
        "discovery_failed"
    );
    assert_eq!(
        idp.request_count(),
        0,
        "no token request without a valid document"
    );

    // The document is fixed: the next retry finds the token endpoint, the route serves.
    *doc.lock().unwrap() = format!(
        r#"{{"issuer":"{issuer}","token_endpoint":"{}","token_endpoint_auth_methods_supported":["private_key_jwt"]}}"#,
        idp.token_url()
    );
    rig.proxy.ready().await;
    let (idp, proxy) = (&rig.idp, &rig.proxy);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    let (_, t) = get_json(&proxy.admin_url("/tokens")).await;
    assert_eq!(t["tokens"][0]["token_endpoint"], idp.token_url());
    assert_eq!(t["tokens"][0]["auth_method"], "client_secret_post");
    // The document does not list the configured method: a warning naming both.
    let log = proxy.stderr();
    assert!(
        log.contains("does not list the configured auth_method")
            && log.contains("client_secret_post")
            && log.contains("private_key_jwt"),
        "{log}"
    );
}

#[test]
fn check_names_the_key_of_a_credential_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client-key.pem");
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let config = dir.path().join("config.yaml");
    let yaml = |extra: &str| {
        format!(
            "providers:\n  auth0:\n    issuer: https://tenant.example/\n    client_id: c\n    auth_method: private_key_jwt\n    private_key_file: {}\n{extra}routes:\n  - name: r\n    listen: 127.0.0.1:18081\n    upstream: https://api.example\n    token: {{ provider: auth0 }}\n",
            key.display()
        )
    };
    let check = |text: String| {
        std::fs::write(&config, text).unwrap();
        std::process::Command::new(common::proxy::binary())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check(yaml(""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(yaml("    assertion: { algorithm: RS256 }\n"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("providers.auth0.assertion.algorithm: RS256 does not fit the key")
            && stderr.contains("an EC P-256 key"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "no key material: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_sends_a_fresh_signed_assertion_per_token_request() {
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = key.serialize_pem();
    let rig = rig(&[
        "auth_method: private_key_jwt",
        "private_key_file: {dir}/client-key.pem",
        "assertion: { key_id: k1, lifetime: 90s }",
    ])
    .route("api", &["token: { provider: idp }"])
    .before_start(move |_, dir| std::fs::write(dir.join("client-key.pem"), pem).unwrap())
    .start()
    .await;
    let (idp, proxy) = (&rig.idp, &rig.proxy);
    let port = rig.port("api");
    assert!(
        wait_for(Duration::from_secs(10), || async {
            idp.request_count() >= 3
        })
        .await,
        "no refreshes"
    );
    let decoding = jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    // The default audience is the token endpoint when there is no issuer.
    validation.set_audience(&[idp.token_url()]);
    validation.set_issuer(&["cid"]);
    let mut jtis = std::collections::HashSet::new();
    for r in idp.requests() {
        assert_eq!(
            r.params.get("client_assertion_type").map(String::as_str),
            Some(JWT_BEARER)
        );
        assert_eq!(r.params.get("client_id").map(String::as_str), Some("cid"));
        assert!(!r.params.contains_key("client_secret") && r.authorization.is_none());
        let jwt = &r.params["client_assertion"];
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation)
            .expect("the assertion verifies with the client's public key");
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        let c = data.claims;
        assert_eq!(c["sub"], "cid");
        let (iat, nbf, exp) = (
            c["iat"].as_u64().unwrap(),
            c["nbf"].as_u64().unwrap(),
            c["exp"].as_u64().unwrap(),
        );
        assert_eq!((nbf, exp - iat), (iat, 90));
        assert!(
            jtis.insert(c["jti"].as_str().unwrap().to_string()),
            "a jti was sent twice"
        );
    }
    let r = common::get(port, "/x").await;
    assert_eq!(r.status(), 200);
    let assertions: Vec<String> = idp
        .requests()
        .iter()
        .map(|r| r.params["client_assertion"].clone())
        .collect();
    proxy.assert_log_free_of(&assertions);
}
