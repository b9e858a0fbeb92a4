//! Interop with an independent, OpenID-certified server: panva's `oidc-provider` (npm, installed
//! into tests/oidc by scripts/setup.sh) started on loopback by this test. tokenproxy finds the
//! token endpoint by discovery from the issuer, authenticates with `private_key_jwt`, with
//! `tls_client_auth` and with `self_signed_tls_client_auth` (both through the discovery
//! document's mTLS alias), and keeps doing so while the private key and the client certificate
//! are rotated on disk.
//!
//! The other end of the call: oidc-provider issues RS256 and ES256 JWT access tokens for a
//! resource indicator, and the chain client -> tokenproxy (inject) -> tokenproxy (verify) -> API
//! carries them; after the IdP rotates its signing keys, tokens signed with the new keys pass
//! the verify route without a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::proxy::Proxy;
use common::upstream::Upstream;
use common::wait_for;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The node process; killed when dropped.
struct OidcProvider {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    issuer: String,
    mtls_token_endpoint: String,
    stderr: PathBuf,
}

impl OidcProvider {
    fn start(dir: &Path) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            root.join("node_modules/oidc-provider").is_dir(),
            "tests/oidc/node_modules is missing: run `bash scripts/setup.sh` (installs node, npm and oidc-provider)"
        );
        let stderr = dir.join("oidc-provider.log");
        let mut child = Command::new("node")
            .arg(root.join("server.mjs"))
            .arg(dir)
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("node is not installed: run `bash scripts/setup.sh`");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "oidc-provider did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        OidcProvider {
            child,
            stdout,
            issuer: info["issuer"].as_str().unwrap().to_string(),
            mtls_token_endpoint: info["mtls_token_endpoint"].as_str().unwrap().to_string(),
            stderr,
        }
    }

    /// Puts new signing keys first at the IdP (the old ones stay published); returns their kids.
    fn rotate(&mut self) -> Vec<String> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"rotate\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["rotated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA that signs the IdP's server certificate and the client certificates.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "oidc interop test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// A new key and a certificate for `dns` signed by the CA: (key PEM, certificate PEM).
    fn issue(&self, dns: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, dns);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (key.serialize_pem(), cert.pem())
    }
}

fn rsa_key() -> (String, String) {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    (
        k.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
        k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    )
}

const ORDERS_CALLER_SECRET: &str = "orders-caller-secret-0123456789abcdef";

fn clients(jwt_public_key: &Path, mtls_dns: &str, self_signed_cert: &Path) -> String {
    let common = serde_json::json!({
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
    });
    let with = |extra: serde_json::Value| {
        let mut c = common.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    serde_json::Value::Array(vec![
        with(serde_json::json!({
            "client_id": "jwt-client",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_from_pem": [jwt_public_key],
        })),
        with(serde_json::json!({
            "client_id": "mtls-client",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_dns": mtls_dns,
        })),
        with(serde_json::json!({
            "client_id": "self-signed-client",
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks_from_cert": [self_signed_cert],
        })),
        with(serde_json::json!({
            "client_id": "orders-caller",
            "client_secret": ORDERS_CALLER_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
        })),
        with(serde_json::json!({
            "client_id": "resource-server",
            "client_secret": "introspection-secret-0123456789abcdef",
            "token_endpoint_auth_method": "client_secret_basic",
        })),
    ])
    .to_string()
}

struct Introspector {
    http: reqwest::Client,
    url: String,
}

impl Introspector {
    fn new(issuer: &str, ca_pem: &str) -> Self {
        Introspector {
            http: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
                .build()
                .unwrap(),
            url: format!("{issuer}/token/introspection"),
        }
    }

    /// The IdP's word on a token: (active, client_id).
    async fn check(&self, token: &str) -> (bool, String) {
        let v: serde_json::Value = self
            .http
            .post(&self.url)
            .basic_auth(
                "resource-server",
                Some("introspection-secret-0123456789abcdef"),
            )
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["active"] == true,
            v["client_id"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// Sends one request through the route on `port` and returns the bearer token the upstream got.
async fn token_through(port: u16, up: &Upstream) -> String {
    let before = up.count();
    let r = common::get(port, "/call").await;
    assert_eq!(r.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), before + 1);
    let auth = seen.last().unwrap().authorization.clone();
    assert_eq!(auth.len(), 1, "{auth:?}");
    auth[0]
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_string()
}

async fn tokens(proxy: &Proxy) -> serde_json::Value {
    common::fetch_json(&proxy.admin_url("/tokens")).await
}

fn entry<'a>(tokens: &'a serde_json::Value, provider: &str) -> &'a serde_json::Value {
    tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider"] == provider)
        .unwrap()
}

/// Waits until `provider`'s token was fetched, with no failure since, after `after`.
async fn fetched_after(proxy: &Proxy, provider: &str, after: SystemTime) -> bool {
    wait_for(Duration::from_secs(20), || async move {
        let t = tokens(proxy).await;
        let e = entry(&t, provider);
        let fetched = e["fetched_at"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339(s).ok());
        fetched.is_some_and(|f| f > after) && e["consecutive_failures"] == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_and_tls_client_auth_against_oidc_provider_with_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new();
    let ca_pem = pki.ca.pem();
    std::fs::write(d.join("ca.pem"), &ca_pem).unwrap();
    let (server_key, server_cert) = pki.issue("localhost");
    std::fs::write(d.join("server.key"), server_key).unwrap();
    std::fs::write(d.join("server.crt"), server_cert).unwrap();

    // private_key_jwt: an RSA key first (RS256 by default).
    let (jwt_key, jwt_pub) = rsa_key();
    common::swap_file(&d.join("jwt.key"), &jwt_key);
    std::fs::write(d.join("jwt-1.pub"), jwt_pub).unwrap();
    // tls_client_auth: a certificate for mtls-client.test.
    let (tls_key, tls_cert) = pki.issue("mtls-client.test");
    common::swap_file(&d.join("tls.key"), &tls_key);
    common::swap_file(&d.join("tls.crt"), &tls_cert);
    // self_signed_tls_client_auth: a self-signed certificate, registered as such.
    let self_key = KeyPair::generate().unwrap();
    let self_cert = CertificateParams::new(vec!["self-signed-client.test".to_string()])
        .unwrap()
        .self_signed(&self_key)
        .unwrap();
    common::swap_file(&d.join("self.key"), &self_key.serialize_pem());
    common::swap_file(&d.join("self.crt"), &self_cert.pem());
    let self_crt = d.join("self.crt");
    common::swap_file(
        &d.join("clients.json"),
        &clients(&d.join("jwt-1.pub"), "mtls-client.test", &self_crt),
    );

    let idp = OidcProvider::start(d);
    let up = Upstream::http(None).await;
    let (admin, jwt_port, mtls_port, self_port) = (0, 0, 0, 0);
    let yaml = format!(
        r#"admin: {{ listen: 127.0.0.1:{admin} }}
providers:
  oidc-jwt:
    issuer: {issuer}
    client_id: jwt-client
    auth_method: private_key_jwt
    private_key_file: {d}/jwt.key
    ca_file: {d}/ca.pem
    refresh: {{ retry_initial: 100ms, retry_max: 500ms }}
  oidc-mtls:
    issuer: {issuer}
    client_id: mtls-client
    auth_method: tls_client_auth
    client_certificate_file: {d}/tls.crt
    client_key_file: {d}/tls.key
    ca_file: {d}/ca.pem
    refresh: {{ retry_initial: 100ms, retry_max: 500ms }}
  oidc-self-signed:
    issuer: {issuer}
    client_id: self-signed-client
    auth_method: self_signed_tls_client_auth
    client_certificate_file: {d}/self.crt
    client_key_file: {d}/self.key
    ca_file: {d}/ca.pem
routes:
  - name: jwt
    listen: 127.0.0.1:{jwt_port}
    upstream: http://{up}
    token: {{ provider: oidc-jwt }}
  - name: mtls
    listen: 127.0.0.1:{mtls_port}
    upstream: http://{up}
    token: {{ provider: oidc-mtls }}
  - name: self-signed
    listen: 127.0.0.1:{self_port}
    upstream: http://{up}
    token: {{ provider: oidc-self-signed }}
"#,
        issuer = idp.issuer,
        d = d.display(),
        up = up.addr,
    );
    let mut proxy = Proxy::start(&yaml, admin, &[("RUST_LOG", "info")]);
    let ready = tokio::time::timeout(Duration::from_secs(30), proxy.ready()).await;
    assert!(
        ready.is_ok(),
        "not ready; oidc-provider log:\n{}",
        idp.log()
    );
    let (jwt_port, mtls_port, self_port) = (
        proxy.port("jwt"),
        proxy.port("mtls"),
        proxy.port("self-signed"),
    );

    // Tokens issued by oidc-provider for each client reach the upstream.
    let introspect = Introspector::new(&idp.issuer, &ca_pem);
    let jwt_token = token_through(jwt_port, &up).await;
    assert_eq!(
        introspect.check(&jwt_token).await,
        (true, "jwt-client".into())
    );
    let mtls_token = token_through(mtls_port, &up).await;
    assert_eq!(
        introspect.check(&mtls_token).await,
        (true, "mtls-client".into())
    );
    let self_token = token_through(self_port, &up).await;
    assert_eq!(
        introspect.check(&self_token).await,
        (true, "self-signed-client".into())
    );

    // The endpoints came from discovery; the TLS client used the mTLS alias.
    let t = tokens(&proxy).await;
    assert_eq!(entry(&t, "oidc-jwt")["auth_method"], "private_key_jwt");
    assert_eq!(
        entry(&t, "oidc-jwt")["token_endpoint"],
        format!("{}/token", idp.issuer)
    );
    assert_eq!(entry(&t, "oidc-mtls")["auth_method"], "tls_client_auth");
    assert_eq!(
        entry(&t, "oidc-mtls")["token_endpoint"],
        idp.mtls_token_endpoint
    );
    assert_eq!(
        entry(&t, "oidc-self-signed")["auth_method"],
        "self_signed_tls_client_auth"
    );
    assert_eq!(
        entry(&t, "oidc-self-signed")["token_endpoint"],
        idp.mtls_token_endpoint
    );

    // Tokens live 4 s: the next refresh is a second token request, which oidc-provider accepts
    // only with a jti it has not seen (it keeps every jti until the assertion's exp).
    let start = SystemTime::now();
    assert!(
        fetched_after(&proxy, "oidc-jwt", start).await,
        "no second token; oidc-provider log:\n{}",
        idp.log()
    );
    let second = token_through(jwt_port, &up).await;
    assert_ne!(second, jwt_token);
    assert_eq!(introspect.check(&second).await, (true, "jwt-client".into()));

    // Rotate the private key to an EC key: the new public key registered, the old one removed.
    let new_key = KeyPair::generate().unwrap();
    std::fs::write(d.join("jwt-2.pub"), new_key.public_key_pem()).unwrap();
    common::swap_file(&d.join("jwt.key"), &new_key.serialize_pem());
    common::swap_file(
        &d.join("clients.json"),
        &clients(&d.join("jwt-2.pub"), "mtls-client.test", &self_crt),
    );
    let rotated = SystemTime::now();
    assert!(
        fetched_after(&proxy, "oidc-jwt", rotated).await,
        "no token with the rotated key; oidc-provider log:\n{}",
        idp.log()
    );
    let after_key = token_through(jwt_port, &up).await;
    assert_eq!(
        introspect.check(&after_key).await,
        (true, "jwt-client".into())
    );

    // Rotate the client certificate (key first, then the certificate, as two writes): the IdP
    // now accepts only the new certificate's name.
    let (new_tls_key, new_tls_cert) = pki.issue("mtls-client-2.test");
    common::swap_file(&d.join("tls.key"), &new_tls_key);
    common::swap_file(&d.join("tls.crt"), &new_tls_cert);
    common::swap_file(
        &d.join("clients.json"),
        &clients(&d.join("jwt-2.pub"), "mtls-client-2.test", &self_crt),
    );
    let rotated = SystemTime::now();
    assert!(
        fetched_after(&proxy, "oidc-mtls", rotated).await,
        "no token with the rotated certificate; oidc-provider log:\n{}",
        idp.log()
    );
    let after_cert = token_through(mtls_port, &up).await;
    assert_eq!(
        introspect.check(&after_cert).await,
        (true, "mtls-client".into())
    );

    // Nothing secret in the proxy's log.
    proxy.assert_log_free_of(&[
        jwt_token,
        second,
        after_key,
        mtls_token,
        after_cert,
        self_token,
        "BEGIN PRIVATE KEY".into(),
        "BEGIN RSA PRIVATE KEY".into(),
    ]);
}

/// The JWS header of `token`: its `alg` and `kid`.
fn jws_alg_kid(token: &str) -> (String, String) {
    let h = jsonwebtoken::decode_header(token).unwrap();
    (format!("{:?}", h.alg), h.kid.unwrap_or_default())
}

/// A client-credentials token for `resource` straight from the IdP.
async fn token_for(idp: &OidcProvider, ca_pem: &str, resource: &str) -> String {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp: serde_json::Value = http
        .post(format!("{}/token", idp.issuer))
        .basic_auth("orders-caller", Some(ORDERS_CALLER_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "read:orders"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {resp}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_jwt_access_tokens_pass_inject_then_verify_and_survive_key_rotation() {
    use common::rawup::{Client, RawUpstream, Reply};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new();
    let ca_pem = pki.ca.pem();
    std::fs::write(d.join("ca.pem"), &ca_pem).unwrap();
    let (server_key, server_cert) = pki.issue("localhost");
    std::fs::write(d.join("server.key"), server_key).unwrap();
    std::fs::write(d.join("server.crt"), server_cert).unwrap();
    // Only orders-caller is used here; the other clients' key files are never read.
    common::swap_file(
        &d.join("clients.json"),
        &clients(&d.join("none.pub"), "unused.test", &d.join("none.crt")),
    );
    let mut idp = OidcProvider::start(d);
    let api = RawUpstream::start(|r| Reply::ok(format!("{} {}", r.method, r.target))).await;

    // The API's pod: a verify route in front of the API.
    let verify_yaml = format!(
        r#"admin: {{ listen: 127.0.0.1:0 }}
routes:
  - name: orders-inbound
    listen: 127.0.0.1:0
    upstream: {api}
    verify:
      issuer: {issuer}
      audiences: [https://orders.example.com/, https://orders.example.com/es/]
      required_scopes: [read:orders]
      ca_file: {d}/ca.pem
"#,
        api = api.url(),
        issuer = idp.issuer,
        d = d.display(),
    );
    let mut verify = Proxy::start(&verify_yaml, 0, &[("RUST_LOG", "info")]);
    let ready = tokio::time::timeout(Duration::from_secs(30), verify.ready()).await;
    assert!(
        ready.is_ok(),
        "verify proxy not ready:\n{}",
        verify.stderr()
    );
    let verify_port = verify.port("orders-inbound");

    // The caller's pod: two inject routes, one per resource (RS256 and ES256 tokens).
    let inject_yaml = format!(
        r#"admin: {{ listen: 127.0.0.1:0 }}
providers:
  oidc:
    issuer: {issuer}
    client_id: orders-caller
    client_secret: {secret}
    auth_method: client_secret_basic
    ca_file: {d}/ca.pem
routes:
  - name: orders-rs256
    listen: 127.0.0.1:0
    upstream: http://127.0.0.1:{verify_port}
    token: {{ provider: oidc, resource: "https://orders.example.com/", scope: "read:orders write:orders" }}
  - name: orders-es256
    listen: 127.0.0.1:0
    upstream: http://127.0.0.1:{verify_port}
    token: {{ provider: oidc, resource: "https://orders.example.com/es/", scope: "read:orders" }}
"#,
        issuer = idp.issuer,
        secret = ORDERS_CALLER_SECRET,
        d = d.display(),
    );
    let mut inject = Proxy::start(&inject_yaml, 0, &[("RUST_LOG", "info")]);
    let ready = tokio::time::timeout(Duration::from_secs(30), inject.ready()).await;
    assert!(
        ready.is_ok(),
        "inject proxy not ready:\n{}\noidc-provider log:\n{}",
        inject.stderr(),
        idp.log()
    );
    let (rs_port, es_port) = (inject.port("orders-rs256"), inject.port("orders-es256"));

    // client -> inject -> verify -> API, a plain request with no token from the client.
    for (port, alg, kid, scope) in [
        (rs_port, "RS256", "rsa-1", "read:orders write:orders"),
        (es_port, "ES256", "ec-1", "read:orders"),
    ] {
        let before = api.received().len();
        let mut c = Client::connect(port).await;
        let resp = c.get("/orders/7").await;
        assert_eq!(
            resp.status,
            200,
            "{alg}: {}\n{}",
            resp.text(),
            verify.stderr()
        );
        let got = api.received()[before].clone();
        assert_eq!(got.head.all("x-auth-subject"), ["orders-caller"], "{alg}");
        assert_eq!(got.head.all("x-auth-scope"), [scope], "{alg}");
        let auth = got.head.get("authorization").unwrap();
        let token = auth.strip_prefix("Bearer ").unwrap();
        assert_eq!(jws_alg_kid(token), (alg.to_string(), kid.to_string()));
    }
    // A token for another resource (audience) does not pass.
    let mut other = Client::connect(verify_port).await;
    let wrong = token_for(&idp, &ca_pem, "https://orders.example.com/other/").await;
    other
        .send(
            format!("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {wrong}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let resp = other.response(false).await.unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.text().contains("audience"), "{}", resp.text());

    // The IdP rotates its keys: tokens signed with the new ones pass without a restart.
    let rotated = idp.rotate();
    assert_eq!(rotated, ["rsa-2", "ec-2"]);
    for (resource, alg, kid) in [
        ("https://orders.example.com/", "RS256", "rsa-2"),
        ("https://orders.example.com/es/", "ES256", "ec-2"),
    ] {
        let token = token_for(&idp, &ca_pem, resource).await;
        assert_eq!(jws_alg_kid(&token), (alg.to_string(), kid.to_string()));
        let before = api.received().len();
        let mut c = Client::connect(verify_port).await;
        c.send(
            format!("GET /after HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let resp = c.response(false).await.unwrap();
        assert_eq!(
            resp.status,
            200,
            "{kid}: {}\n{}",
            resp.text(),
            verify.stderr()
        );
        assert_eq!(api.received().len(), before + 1);
    }
    let keys: serde_json::Value = common::fetch_json(&verify.admin_url("/keys")).await;
    let kids = keys["issuers"][0]["key_ids"].to_string();
    for kid in ["rsa-1", "ec-1", "rsa-2", "ec-2"] {
        assert!(kids.contains(kid), "{keys}");
    }
    // Nothing secret in the proxies' logs.
    verify.assert_log_free_of(&[ORDERS_CALLER_SECRET.to_string(), wrong]);
    inject.assert_log_free_of(&[ORDERS_CALLER_SECRET.to_string()]);
}
