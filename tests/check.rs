//! `tokenproxy check` on good and bad configs, through the real binary: exit code and a message
//! naming the key; and the shipped example config, so that it cannot rot.

mod common;

use std::process::Command;

use common::proxy::binary;

const GOOD: &str = r#"
admin: { listen: 127.0.0.1:19901 }
providers:
  auth0:
    token_url: https://idp.example/oauth/token
    client_id: ${CHECK_CLIENT_ID}
    client_secret: not-a-real-secret
routes:
  - name: orders
    listen: 127.0.0.1:18081
    upstream: https://orders.example.com/v1
    connect_timeout: 5s
    token: { provider: auth0, audience: https://orders.example.com/ }
"#;

fn check(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("CHECK_CLIENT_ID", "client-1")
        .env_remove("UNSET_FOR_TEST")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn accepts_a_good_config_with_a_summary() {
    let (ok, stdout, stderr) = check(GOOD);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 route(s)"), "{stdout}");
    assert!(!stdout.contains("not-a-real-secret"));
}

#[test]
fn rejects_bad_configs_naming_the_key() {
    let dup_route = "\n  - name: orders\n    listen: 127.0.0.1:18082\n    upstream: https://b.example\n    token: { provider: auth0 }\n";
    let dup_listen = "\n  - name: other\n    listen: 127.0.0.1:18081\n    upstream: https://b.example\n    token: { provider: auth0 }\n";
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("connect_timeout: 5s", "connect_timeout: 5s\n    retries: 3"),
            "routes[0].retries: unknown field `retries`",
        ),
        (
            GOOD.replace("provider: auth0,", "provider: okta,"),
            "routes[0].token.provider: unknown provider \"okta\"",
        ),
        (
            format!("{GOOD}{dup_route}"),
            "routes[1].name: duplicate route name \"orders\"",
        ),
        (format!("{GOOD}{dup_listen}"), "routes[1].listen:"),
        (
            GOOD.replace("https://orders.example.com/v1", "orders.example.com/v1"),
            "routes[0].upstream: invalid URL",
        ),
        (
            GOOD.replace("https://idp.example/oauth/token", "https//idp"),
            "providers.auth0.token_url: invalid URL",
        ),
        (
            GOOD.replace("connect_timeout: 5s", "connect_timeout: 5 minutes"),
            "routes[0].connect_timeout: invalid duration",
        ),
        (
            GOOD.replace("${CHECK_CLIENT_ID}", "${UNSET_FOR_TEST}"),
            "providers.auth0.client_id: environment variable UNSET_FOR_TEST is not set",
        ),
        (
            GOOD.replace(
                "client_secret: not-a-real-secret",
                "client_secret: not-a-real-secret\n    client_secret_file: /run/secret",
            ),
            "providers.auth0: set exactly one of client_secret and client_secret_file",
        ),
        (
            GOOD.replace("    client_secret: not-a-real-secret\n", ""),
            "providers.auth0: one of client_secret or client_secret_file is required",
        ),
    ];
    for (yaml, want) in cases {
        let (ok, _, stderr) = check(&yaml);
        assert!(!ok, "accepted, but should fail with {want:?}:\n{yaml}");
        assert!(stderr.contains(want), "want {want:?} in {stderr:?}");
        assert!(
            !stderr.contains("not-a-real-secret"),
            "secret in error: {stderr}"
        );
    }
}

/// A verify route beside the injecting one.
const VERIFY: &str = r#"
  - name: orders-inbound
    listen: 0.0.0.0:18443
    upstream: http://127.0.0.1:8080
    verify:
      issuer: https://idp.example/
      audiences: [https://orders.example.com/]
      algorithms: [RS256]
      required_scopes: [read:orders]
      rules:
        - { path_prefix: /admin/, methods: [POST], scopes: [admin:orders] }
"#;

#[test]
fn checks_a_verify_route_naming_the_key() {
    let good = format!("{GOOD}{VERIFY}");
    let (ok, stdout, stderr) = check(&good);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 route(s) (1 verify)"), "{stdout}");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("issuer: https://idp.example/", "issuer: idp.example"),
            "routes[1].verify.issuer: invalid URL",
        ),
        (
            good.replace("audiences: [https://orders.example.com/]", "audiences: []"),
            "routes[1].verify.audiences: at least one",
        ),
        (
            good.replace("algorithms: [RS256]", "algorithms: [RS256, HS256]"),
            "routes[1].verify.algorithms: \"HS256\" is not allowed",
        ),
        (
            good.replace("algorithms: [RS256]", "algorithms: [none]"),
            "routes[1].verify.algorithms: \"none\" is not allowed",
        ),
        (
            good.replace("path_prefix: /admin/", "path_prefix: admin"),
            "routes[1].verify.rules[0].path_prefix:",
        ),
        (
            good.replace("scopes: [admin:orders]", "scopes: []"),
            "routes[1].verify.rules[0].scopes: must not be empty",
        ),
        (
            good.replace(
                "      required_scopes",
                "      audience: x\n      required_scopes",
            ),
            "routes[1].verify.audience: unknown field",
        ),
        (
            good.replace(
                "    verify:\n",
                "    token: { provider: auth0 }\n    verify:\n",
            ),
            "routes[1]: a route has exactly one of token (inject) and verify",
        ),
        (
            good.replace(
                "    verify:\n",
                "    format: \"Token {token}\"\n    verify:\n",
            ),
            "routes[1].format: applies to token injection only",
        ),
    ];
    for (yaml, want) in cases {
        let (ok, _, stderr) = check(&yaml);
        assert!(!ok, "accepted, but should fail with {want:?}:\n{yaml}");
        assert!(stderr.contains(want), "want {want:?} in {stderr:?}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let out = Command::new(binary())
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml.example"),
        ])
        .env("AUTH0_CLIENT_ID", "example-client")
        .env("AUTH0_CLIENT_SECRET", "example-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(binary())
        .args(["check", "--config", "/nonexistent/tokenproxy.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tokenproxy.yaml"));
}
