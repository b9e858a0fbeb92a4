//! Logs: with `RUST_LOG=trace` and every path exercised (token fetch, refresh failures with the
//! IdP's error, invalid_client, proxied requests carrying the caller's own credentials, 502, 503,
//! reload, admin endpoints, shutdown), neither the client secret nor any issued token appears in
//! stderr; JSON format gives one JSON object per line; the access log is off by default.

mod common;

use std::time::Duration;

use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::rig::Rig;
use common::upstream::Upstream;
use common::{client, metric, wait_for};

const SECRET: &str = "log-test-client-secret-7f3a";

#[tokio::test]
async fn no_secret_or_token_in_trace_logs_on_any_path() {
    let idp = Idp::start(Mode::Ok {
        lifetime: Duration::from_secs(2),
    })
    .await;
    let up = Upstream::http(Some(idp.checker())).await;
    let (admin, port, dead) = (0u16, 0u16, 0u16);
    let closed = common::ClosedPort::new();
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:{admin} }}
log: {{ format: json, access: true }}
providers:
  idp:
    token_url: "{url}"
    client_id: cid
    client_secret: "{SECRET}"
    body: json
    refresh: {{ retry_initial: 100ms, retry_max: 300ms }}
  basic:
    token_url: "{url}"
    client_id: cid
    client_secret: "{SECRET}"
    auth_method: client_secret_basic
routes:
  - name: api
    listen: 127.0.0.1:{port}
    upstream: http://{up}
    token: {{ provider: idp }}
  - name: dead
    listen: 127.0.0.1:{dead}
    upstream: http://127.0.0.1:{closed_port}
    token: {{ provider: basic }}
"#,
        closed_port = closed.port,
        url = idp.token_url(),
        up = up.addr
    );
    let mut proxy = Proxy::start(&yaml, admin, &[("RUST_LOG", "trace")]);
    proxy.ready().await;
    let (admin, port, dead) = (proxy.admin, proxy.port("api"), proxy.port("dead"));
    let c = client();
    let callers = "Bearer callers-own-credential-9c1d";
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/p?q=1"))
            .header("authorization", callers)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(format!("http://127.0.0.1:{port}/p"))
            .body("payload")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://127.0.0.1:{dead}/x"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    for path in ["/tokens", "/metrics", "/readyz"] {
        c.get(proxy.admin_url(path)).send().await.unwrap();
    }
    // Refresh failures: an OAuth error with a description, then invalid_client.
    idp.set_mode(Mode::Status(
        403,
        r#"{"error":"access_denied","error_description":"Client has not been granted scopes"}"#
            .into(),
    ));
    assert!(
        wait_for(Duration::from_secs(10), || async {
            metric(
                admin,
                r#"tokenproxy_token_fetches_total{provider="idp",audience="",outcome="error"}"#,
            )
            .await
                >= 1.0
        })
        .await
    );
    idp.accept_only_secret("some-other-secret");
    assert!(
        wait_for(Duration::from_secs(10), || async {
            proxy.stderr().contains("invalid_client")
        })
        .await
    );
    // Past expiry: 503.
    assert!(
        wait_for(Duration::from_secs(10), || async {
            c.get(format!("http://127.0.0.1:{port}/late"))
                .send()
                .await
                .unwrap()
                .status()
                == 503
        })
        .await
    );
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            proxy.stderr().contains("config reloaded")
        })
        .await
    );
    proxy.signal(libc::SIGTERM);
    assert!(proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .is_some_and(|s| s.success()));

    let log = proxy.stderr();
    assert!(
        log.contains("access_denied") && log.contains("Client has not been granted scopes"),
        "the IdP's error is logged"
    );
    assert!(log.lines().count() > 50, "trace logging was not on");
    let mut secrets = idp.issued_tokens();
    assert!(secrets.len() >= 2);
    secrets.push(SECRET.to_string());
    secrets.push("callers-own-credential-9c1d".to_string());
    proxy.assert_log_free_of(&secrets);
    // The basic auth header is base64 of the id and secret: it must not appear either.
    let basic = idp
        .requests()
        .iter()
        .find_map(|r| r.authorization.clone())
        .expect("a basic-auth request");
    assert!(!log.contains(basic.trim_start_matches("Basic ")));

    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tokenproxy::access")
        .collect();
    assert!(access.iter().any(|v| v["route"] == "api"
        && v["path"] == "/p"
        && v["status"] == 200
        && v["method"] == "GET"));
    assert!(access
        .iter()
        .any(|v| v["route"] == "dead" && v["status"] == 502));
    assert!(
        access
            .iter()
            .all(|v| !v["path"].as_str().unwrap_or("").contains('?')),
        "query strings stay out of the access log"
    );
}

#[tokio::test]
async fn access_log_is_off_by_default_and_text_format_is_plain() {
    let rig = Rig::builder()
        .secret("x")
        .no_checker()
        .route("api", &[])
        .env("RUST_LOG", "info")
        .start()
        .await;
    rig.get("api", "/only-once").await;
    let log = rig.proxy.stderr();
    assert!(log.contains("token fetched"), "{log}");
    assert!(
        !log.contains("/only-once"),
        "request logged without log.access: {log}"
    );
    assert!(!log.starts_with('{'));
}
