//! Verify routes end to end through the real binary: inbound bearer tokens signed by a test
//! issuer (RSA and P-256 keys served as a JWKS on loopback) are checked before anything reaches
//! the API. Every case runs on both request paths (`lean_path: true` and `false`) and must give
//! the same answer. The hostile set: `alg: none`, HS256 with the RSA public key as secret, a
//! changed payload byte, unknown `kid`s (a flood costs one JWKS fetch), expired, `nbf` ahead,
//! wrong `iss`, wrong `aud`, `aud` as an array, a token over 16 KiB, a spoofed `X-Auth-Subject`.

mod common;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::config::Cfg;
use common::jwks::{JwksServer, TestKey};
use common::proxy::Proxy;
use common::rawup::{Client, RawUpstream, Received, Reply, Response};
use common::rig::Rig;
use common::{metric, ClosedPort};
use serde_json::{json, Value};

const AUD: &str = "https://orders.example.com/";

static RSA: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-1"));
static EC: LazyLock<TestKey> = LazyLock::new(|| TestKey::ec("ec-1"));

/// Two proxies (lean path on and off) with the same verify route in front of one API.
struct Fixture {
    jwks: JwksServer,
    up: RawUpstream,
    sides: Vec<(&'static str, Proxy, u16)>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, proxy, _) in &self.sides {
                eprintln!("{name} proxy stderr:\n{}", proxy.stderr());
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Good claims for the fixture's issuer; tests change what they attack.
fn claims(issuer: &str) -> Value {
    let t = now();
    json!({
        "iss": issuer, "aud": AUD, "sub": "svc-checkout", "exp": t + 300, "iat": t, "nbf": t,
        "scope": "read:orders write:orders",
    })
}

async fn fixture(extra: &str) -> Fixture {
    let jwks = JwksServer::start(vec![RSA.jwk.clone(), EC.jwk.clone()]).await;
    let up =
        RawUpstream::start(|r: &Received| Reply::ok(format!("{} {}", r.method, r.target))).await;
    let mut sides = Vec::new();
    for (name, lean) in [("lean", true), ("pingora", false)] {
        let verify = format!(
            "verify: {{ issuer: \"{}\", audiences: [\"{AUD}\"], required_scopes: [read:orders], \
             rules: [{{ path_prefix: /admin/, methods: [POST], scopes: [admin:orders] }}]{} }}",
            jwks.issuer(),
            extra.replace("JWKS_URL", &jwks.jwks_url()),
        );
        let yaml = Cfg::new(0, "http://127.0.0.1:9/token", "unused")
            .top(&format!("lean_path: {lean}"))
            .route("orders", 0, &up.url(), &[&verify])
            .build();
        let mut proxy = Proxy::start(&yaml, 0, &[("RUST_LOG", "info")]);
        proxy.ready().await;
        let port = proxy.port("orders");
        sides.push((name, proxy, port));
    }
    Fixture { jwks, up, sides }
}

/// Sends `method path` with `Authorization: Bearer token` (when given) and `extra` header lines;
/// returns the answer and the request the API got for it, if any.
async fn call(
    fx: &Fixture,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &str,
) -> (Response, Option<Received>) {
    let before = fx.up.received().len();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: api\r\n{auth}{extra}Content-Length: 0\r\n\r\n");
    let mut c = Client::connect(port).await;
    c.send(req.as_bytes()).await;
    let resp = c.response(method == "HEAD").await.unwrap();
    let got = fx.up.received();
    (resp, got.get(before).cloned())
}

/// The same request on both sides: both must refuse it with `status` and a challenge holding
/// `challenge`, and the API must see nothing.
async fn refused(fx: &Fixture, token: Option<&str>, status: u16, challenge: &str) -> Value {
    let mut bodies = Vec::new();
    for (name, _, port) in &fx.sides {
        let (resp, got) = call(fx, *port, "GET", "/orders/1", token, "").await;
        assert_eq!(resp.status, status, "{name}: {}", resp.text());
        assert!(got.is_none(), "{name}: the request reached the API");
        let www = resp.head.get("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer realm=\"orders\""), "{name}: {www}");
        assert!(www.contains(challenge), "{name}: {www} lacks {challenge}");
        if let Some(t) = token {
            assert!(
                !resp.text().contains(t),
                "{name}: the body echoes the token"
            );
            assert!(!www.contains(t), "{name}: the challenge echoes the token");
        }
        bodies.push(serde_json::from_slice::<Value>(&resp.body).unwrap());
    }
    assert_eq!(bodies[0], bodies[1], "both paths give the same body");
    bodies.remove(0)
}

/// `tokenproxy_inbound_requests_total` of route `orders` with `outcome`.
async fn inbound(proxy: &Proxy, outcome: &str) -> f64 {
    metric(
        proxy.admin,
        &format!(r#"tokenproxy_inbound_requests_total{{route="orders",outcome="{outcome}"}}"#),
    )
    .await
}

#[tokio::test]
async fn rs256_and_es256_tokens_pass_with_the_verified_identity() {
    let fx = fixture("").await;
    // No jwks_url: the keys were found by discovery, once per proxy.
    assert_eq!(fx.jwks.discovery_hits(), 2);
    for key in [&*RSA, &*EC] {
        let token = key.sign(&claims(&fx.jwks.issuer()));
        for (name, _, port) in &fx.sides {
            let (resp, got) = call(&fx, *port, "GET", "/orders/1", Some(&token), "").await;
            assert_eq!(resp.status, 200, "{name} {:?}: {}", key.alg, resp.text());
            let got = got.expect("the API got the request");
            assert_eq!(got.head.all("x-auth-subject"), ["svc-checkout"], "{name}");
            assert_eq!(got.head.all("x-auth-scope"), ["read:orders write:orders"]);
            // strip_authorization is off: the API gets the caller's token as it was.
            assert_eq!(got.head.all("authorization"), [format!("Bearer {token}")]);
        }
    }
    // The same token again is answered from the verified-token cache, with the same result.
    let token = RSA.sign(&claims(&fx.jwks.issuer()));
    for (_, proxy, port) in &fx.sides {
        for _ in 0..3 {
            let (resp, _) = call(&fx, *port, "GET", "/orders/2", Some(&token), "").await;
            assert_eq!(resp.status, 200);
        }
        assert_eq!(inbound(proxy, "allowed").await, 5.0);
    }
}

#[tokio::test]
async fn a_missing_token_gets_a_challenge_without_an_error_code() {
    let fx = fixture("").await;
    let body = refused(&fx, None, 401, "Bearer realm=\"orders\"").await;
    assert_eq!(body["error"], "missing_token");
    for (name, _, port) in &fx.sides {
        let (resp, _) = call(&fx, *port, "GET", "/", None, "").await;
        let www = resp.head.get("www-authenticate").unwrap();
        assert!(!www.contains("error="), "{name}: {www}");
        // Another scheme is no bearer token either.
        let (resp, got) = call(
            &fx,
            *port,
            "GET",
            "/",
            None,
            "Authorization: Basic YTpi\r\n",
        )
        .await;
        assert_eq!(resp.status, 401);
        assert!(got.is_none());
    }
    let (_, proxy, _) = &fx.sides[0];
    assert_eq!(inbound(proxy, "missing").await, 3.0);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let fx = fixture("").await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(&fx.jwks.issuer()).to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        refused(&fx, Some(&token), 401, "error=\"invalid_token\"").await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let fx = fixture("").await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(RSA.kid.clone());
    let key = jsonwebtoken::EncodingKey::from_secret(RSA.public_pem.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims(&fx.jwks.issuer()), &key).unwrap();
    let body = refused(&fx, Some(&token), 401, "error=\"invalid_token\"").await;
    assert_eq!(body["reason"], "the token's algorithm is not allowed");
}

#[tokio::test]
async fn a_token_with_one_payload_byte_changed_is_refused() {
    let fx = fixture("").await;
    let token = RSA.sign(&claims(&fx.jwks.issuer()));
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    // "svc-checkout" becomes "svc-checkouu": still JSON, another subject.
    let at = payload
        .windows(12)
        .position(|w| w == b"svc-checkout")
        .unwrap()
        + 11;
    payload[at] = b'u';
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(&payload),
        parts[2]
    );
    let body = refused(&fx, Some(&forged), 401, "error=\"invalid_token\"").await;
    assert_eq!(body["reason"], "the token's signature does not verify");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_once() {
    let fx = fixture("").await;
    let before = fx.jwks.jwks_hits();
    let c = claims(&fx.jwks.issuer());
    for i in 0..20 {
        let mut header = jsonwebtoken::Header::new(RSA.alg);
        header.kid = Some(format!("forged-{i}"));
        let token = jsonwebtoken::encode(&header, &c, &RSA.encoding).unwrap();
        let body = refused(&fx, Some(&token), 401, "error=\"invalid_token\"").await;
        assert_eq!(
            body["reason"],
            "the token's kid is not among the issuer's keys"
        );
    }
    // One kid-miss fetch per proxy process (two of them), not one per forged kid.
    assert_eq!(fx.jwks.jwks_hits() - before, 2);
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let fx = fixture("").await;
    let mut c = claims(&fx.jwks.issuer());
    c["exp"] = json!(now() - 31);
    let body = refused(&fx, Some(&RSA.sign(&c)), 401, "the token has expired").await;
    assert_eq!(body["error"], "invalid_token");
    let mut c = claims(&fx.jwks.issuer());
    c["nbf"] = json!(now() + 120);
    refused(&fx, Some(&EC.sign(&c)), 401, "not valid yet").await;
    // Within the 30 s leeway, both are fine.
    let mut c = claims(&fx.jwks.issuer());
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    let (resp, _) = call(&fx, fx.sides[0].2, "GET", "/", Some(&RSA.sign(&c)), "").await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn wrong_issuer_and_audience_are_refused_and_an_audience_array_is_read() {
    let fx = fixture("").await;
    let mut c = claims(&fx.jwks.issuer());
    c["iss"] = json!("https://evil.example/");
    refused(&fx, Some(&RSA.sign(&c)), 401, "issuer is not accepted").await;
    let mut c = claims(&fx.jwks.issuer());
    c["aud"] = json!("https://other.example.com/");
    refused(&fx, Some(&RSA.sign(&c)), 401, "not meant for this audience").await;
    c["aud"] = json!(["https://other.example.com/"]);
    refused(&fx, Some(&RSA.sign(&c)), 401, "not meant for this audience").await;
    c["aud"] = json!(["https://other.example.com/", AUD]);
    let token = RSA.sign(&c);
    for (name, _, port) in &fx.sides {
        let (resp, got) = call(&fx, *port, "GET", "/", Some(&token), "").await;
        assert_eq!(resp.status, 200, "{name}");
        assert!(got.is_some());
    }
}

#[tokio::test]
async fn a_token_over_16_kib_is_refused() {
    let fx = fixture("").await;
    let mut c = claims(&fx.jwks.issuer());
    c["padding"] = json!("p".repeat(17 * 1024));
    let body = refused(&fx, Some(&RSA.sign(&c)), 401, "larger than 16 KiB").await;
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn a_caller_cannot_send_its_own_identity_headers() {
    let fx = fixture("").await;
    let spoof = "X-Auth-Subject: admin\r\nx-auth-scope: admin:orders\r\n";
    let token = RSA.sign(&claims(&fx.jwks.issuer()));
    let mut no_sub = claims(&fx.jwks.issuer());
    no_sub.as_object_mut().unwrap().remove("sub");
    let no_sub = RSA.sign(&no_sub);
    for (name, _, port) in &fx.sides {
        let (resp, got) = call(&fx, *port, "GET", "/", Some(&token), spoof).await;
        assert_eq!(resp.status, 200, "{name}");
        let got = got.unwrap();
        assert_eq!(got.head.all("x-auth-subject"), ["svc-checkout"], "{name}");
        assert_eq!(got.head.all("x-auth-scope"), ["read:orders write:orders"]);
        // A token without `sub`: the caller's copy is still dropped, none is set.
        let (resp, got) = call(&fx, *port, "GET", "/", Some(&no_sub), spoof).await;
        assert_eq!(resp.status, 200, "{name}");
        assert!(got.unwrap().head.all("x-auth-subject").is_empty(), "{name}");
        // Without a valid token the spoofed request goes nowhere.
        let (resp, got) = call(&fx, *port, "GET", "/", None, spoof).await;
        assert_eq!(resp.status, 401);
        assert!(got.is_none());
    }
}

#[tokio::test]
async fn missing_scopes_get_403_naming_the_scope() {
    let fx = fixture("").await;
    let mut c = claims(&fx.jwks.issuer());
    c["scope"] = json!("write:orders");
    let body = refused(&fx, Some(&RSA.sign(&c)), 403, "scope=\"read:orders\"").await;
    assert_eq!(body["error"], "insufficient_scope");
    // The rule for POST /admin/ adds admin:orders; GET /admin/ does not need it.
    let token = RSA.sign(&claims(&fx.jwks.issuer()));
    for (name, _, port) in &fx.sides {
        let (resp, got) = call(&fx, *port, "POST", "/admin/x", Some(&token), "").await;
        assert_eq!(resp.status, 403, "{name}");
        assert!(got.is_none());
        let www = resp.head.get("www-authenticate").unwrap();
        assert!(www.contains("error=\"insufficient_scope\""), "{www}");
        assert!(www.contains("scope=\"read:orders admin:orders\""), "{www}");
        let (resp, _) = call(&fx, *port, "GET", "/admin/x", Some(&token), "").await;
        assert_eq!(resp.status, 200, "{name}");
        // A dot segment could reach /admin/ upstream past the rule: refused.
        let (resp, got) = call(&fx, *port, "POST", "/x/../admin/x", Some(&token), "").await;
        assert_eq!(resp.status, 400, "{name}");
        assert!(got.is_none());
    }
    let mut admin = claims(&fx.jwks.issuer());
    admin["scp"] = json!(["read:orders", "admin:orders"]);
    admin["scope"] = json!("");
    let token = EC.sign(&admin);
    for (name, _, port) in &fx.sides {
        let (resp, _) = call(&fx, *port, "POST", "/admin/x", Some(&token), "").await;
        assert_eq!(resp.status, 200, "{name}");
    }
}

#[tokio::test]
async fn strip_authorization_keeps_the_token_from_the_api() {
    // With jwks_url set, the keys come from it, not from discovery.
    let fx = fixture(
        ", strip_authorization: true, forward_claims: { sub: X-Caller, client_id: X-Client }, \
         jwks_url: \"JWKS_URL\"",
    )
    .await;
    let mut c = claims(&fx.jwks.issuer());
    c["client_id"] = json!("checkout");
    let token = RSA.sign(&c);
    for (name, _, port) in &fx.sides {
        let (resp, got) = call(
            &fx,
            *port,
            "GET",
            "/",
            Some(&token),
            "X-Client: spoofed\r\n",
        )
        .await;
        assert_eq!(resp.status, 200, "{name}");
        let got = got.unwrap();
        assert!(got.head.all("authorization").is_empty(), "{name}");
        assert_eq!(got.head.all("x-caller"), ["svc-checkout"]);
        assert_eq!(got.head.all("x-client"), ["checkout"]);
    }
    let keys: Value = common::fetch_json(&fx.sides[0].1.admin_url("/keys")).await;
    assert_eq!(keys["issuers"][0]["jwks_url"], fx.jwks.jwks_url());
    assert_eq!(fx.jwks.discovery_hits(), 0);
}

#[tokio::test]
async fn a_key_rotated_in_at_the_issuer_is_used_without_a_restart() {
    let fx = fixture("").await;
    let fresh = TestKey::ec("ec-2");
    let token = fresh.sign(&claims(&fx.jwks.issuer()));
    fx.jwks
        .set_keys(vec![RSA.jwk.clone(), EC.jwk.clone(), fresh.jwk.clone()]);
    for (name, proxy, port) in &fx.sides {
        let (resp, got) = call(&fx, *port, "GET", "/", Some(&token), "").await;
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        assert!(got.is_some());
        let keys: Value = common::fetch_json(&proxy.admin_url("/keys")).await;
        let issuer = &keys["issuers"][0];
        assert_eq!(issuer["issuer"], fx.jwks.issuer());
        assert_eq!(
            issuer["key_ids"],
            json!(["rsa-1", "ec-1", "ec-2"]),
            "{keys}"
        );
        assert!(issuer["fetched_at"].is_string());
        let fetched = metric(
            proxy.admin,
            &format!(
                "tokenproxy_jwks_refreshes_total{{issuer=\"{}\",outcome=\"success\"}}",
                fx.jwks.issuer()
            ),
        )
        .await;
        assert_eq!(fetched, 2.0, "start-up and the kid miss");
    }
    // The old keys still verify.
    let (resp, _) = call(
        &fx,
        fx.sides[0].2,
        "GET",
        "/",
        Some(&RSA.sign(&claims(&fx.jwks.issuer()))),
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn concurrent_tokens_with_a_new_kid_wait_for_one_fetch() {
    let fx = fixture("").await;
    let fresh = TestKey::rsa("rsa-2");
    let token = fresh.sign(&claims(&fx.jwks.issuer()));
    fx.jwks
        .set_keys(vec![RSA.jwk.clone(), EC.jwk.clone(), fresh.jwk.clone()]);
    // A slow JWKS: requests that come while the fetch is under way wait for it.
    fx.jwks.set_delay(std::time::Duration::from_millis(300));
    let before = fx.jwks.jwks_hits();
    let fx = std::sync::Arc::new(fx);
    let mut tasks = Vec::new();
    for side in 0..fx.sides.len() {
        for _ in 0..10 {
            let (fx, token) = (fx.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let port = fx.sides[side].2;
                call(&fx, port, "GET", "/", Some(&token), "").await.0.status
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // One fetch per proxy process.
    assert_eq!(fx.jwks.jwks_hits() - before, 2);
}

#[tokio::test]
async fn a_reload_applies_new_verify_settings_and_keeps_the_keys() {
    let fx = fixture("").await;
    let mut c = claims(&fx.jwks.issuer());
    c["scope"] = json!("read:orders");
    let token = RSA.sign(&c);
    let (_, proxy, port) = &fx.sides[0];
    let (resp, _) = call(&fx, *port, "GET", "/", Some(&token), "").await;
    assert_eq!(resp.status, 200);
    let hits = fx.jwks.jwks_hits();
    // The route now needs write:orders too; the same token (already verified and remembered)
    // must be refused with 403.
    let yaml = std::fs::read_to_string(&proxy.config_path).unwrap();
    let changed = yaml.replace(
        "required_scopes: [read:orders]",
        "required_scopes: [read:orders, write:orders]",
    );
    assert_ne!(yaml, changed);
    std::fs::write(&proxy.config_path, changed).unwrap();
    proxy.signal(libc::SIGHUP);
    let refused = common::wait_for(std::time::Duration::from_secs(10), || async {
        call(&fx, *port, "GET", "/", Some(&token), "")
            .await
            .0
            .status
            == 403
    })
    .await;
    assert!(refused, "{}", proxy.stderr());
    // Same issuer: the key set was kept, not fetched again.
    assert_eq!(fx.jwks.jwks_hits(), hits);
}

#[tokio::test]
async fn a_failed_key_fetch_keeps_the_last_good_set() {
    let fx = fixture("").await;
    fx.jwks.set_failing(true);
    let before = fx.jwks.jwks_hits();
    let mut header = jsonwebtoken::Header::new(RSA.alg);
    header.kid = Some("not-yet-published".into());
    let unknown = jsonwebtoken::encode(&header, &claims(&fx.jwks.issuer()), &RSA.encoding).unwrap();
    refused(&fx, Some(&unknown), 401, "error=\"invalid_token\"").await;
    // Each proxy asked once and got a 500.
    assert_eq!(fx.jwks.jwks_hits() - before, 2);
    let good = EC.sign(&claims(&fx.jwks.issuer()));
    for (name, proxy, port) in &fx.sides {
        let (resp, got) = call(&fx, *port, "GET", "/", Some(&good), "").await;
        assert_eq!(resp.status, 200, "{name}: the old keys were dropped");
        assert!(got.is_some());
        let keys: Value = common::fetch_json(&proxy.admin_url("/keys")).await;
        let issuer = &keys["issuers"][0];
        assert_eq!(issuer["key_ids"], json!(["rsa-1", "ec-1"]), "{keys}");
        assert!(
            issuer["last_error"].as_str().unwrap().contains("500"),
            "{keys}"
        );
        let failed = metric(
            proxy.admin,
            &format!(
                "tokenproxy_jwks_refreshes_total{{issuer=\"{}\",outcome=\"failure\"}}",
                fx.jwks.issuer()
            ),
        )
        .await;
        assert_eq!(failed, 1.0);
        // Still ready: the set in force is good.
        let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}

#[tokio::test]
async fn the_verify_metrics_pass_promtool_with_their_labels() {
    let fx = fixture("").await;
    let (_, proxy, port) = &fx.sides[0];
    let mut expired = claims(&fx.jwks.issuer());
    expired["exp"] = json!(now() - 100);
    call(
        &fx,
        *port,
        "GET",
        "/",
        Some(&RSA.sign(&claims(&fx.jwks.issuer()))),
        "",
    )
    .await;
    call(&fx, *port, "GET", "/", Some(&RSA.sign(&expired)), "").await;
    call(&fx, *port, "GET", "/", None, "").await;
    let text = common::metrics_text(proxy.admin).await;
    let issuer = fx.jwks.issuer();
    for (series, want) in [
        (
            "tokenproxy_inbound_requests_total{route=\"orders\",outcome=\"allowed\"}".to_string(),
            1.0,
        ),
        (
            "tokenproxy_inbound_requests_total{route=\"orders\",outcome=\"expired\"}".to_string(),
            1.0,
        ),
        (
            "tokenproxy_inbound_requests_total{route=\"orders\",outcome=\"missing\"}".to_string(),
            1.0,
        ),
        (
            format!("tokenproxy_jwks_refreshes_total{{issuer=\"{issuer}\",outcome=\"success\"}}"),
            1.0,
        ),
        (format!("tokenproxy_jwks_keys{{issuer=\"{issuer}\"}}"), 2.0),
    ] {
        assert_eq!(
            common::sample(&text, &series),
            Some(want),
            "{series}\n{text}"
        );
    }
    common::assert_promtool_accepts(&text);
}

#[tokio::test]
async fn readyz_waits_for_the_keys() {
    // An issuer that does not answer yet: the proxy listens but is not ready.
    let closed = ClosedPort::new();
    let issuer = format!("http://127.0.0.1:{}/", closed.port);
    let verify = format!("verify: {{ issuer: \"{issuer}\", audiences: [a] }}");
    let rig = Rig::builder()
        .raw(|_| Reply::ok("x"))
        .route("orders", &[&verify])
        .env("RUST_LOG", "info")
        .start_listening()
        .await;
    let (up, proxy) = (rig.raw(), &rig.proxy);
    let listen = rig.port("orders");
    let r = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["routes_without_keys"][0]["route"], "orders", "{v}");
    // Requests meanwhile are refused, never forwarded.
    let mut c = Client::connect(listen).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a.b.c\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.unwrap().status, 401);
    assert!(up.received().is_empty());
}
