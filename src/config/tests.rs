use std::time::Duration;

use super::*;
use crate::credentials::Credential;
use crate::secret::Secret;
use crate::token::schedule::RefreshPolicy;

const BASE: &str = r#"
providers:
  auth0:
    token_url: https://idp.example/oauth/token
    client_id: id
    client_secret: ${SECRET}
routes:
  - name: orders
    listen: 127.0.0.1:8081
    upstream: https://orders.example.com/v1/
    token:
      provider: auth0
      audience: https://orders.example.com/
"#;

fn env(name: &str) -> Option<String> {
    (name == "SECRET").then(|| "s3cret".to_string())
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &env)
}

fn err(yaml: &str) -> String {
    load(yaml)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = load(BASE).unwrap();
    assert_eq!(c.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.threads, 1);
    assert!(c.lean_path);
    let p = &c.providers["auth0"];
    assert_eq!(p.auth_method, AuthMethod::ClientSecretPost);
    assert_eq!(p.body, BodyEncoding::Form);
    assert_eq!(p.timeout, Duration::from_secs(10));
    assert_eq!(
        p.credential,
        Credential::Secret(SecretSource::Inline(Secret::new("s3cret")))
    );
    assert_eq!(p.refresh, RefreshPolicy::default());
    let r = &c.routes[0];
    assert_eq!(r.header, http::header::AUTHORIZATION);
    assert_eq!(r.format, HeaderFormat::parse("Bearer {token}").unwrap());
    assert_eq!(r.existing, Existing::Replace);
    assert_eq!(r.connect_timeout, Duration::from_secs(5));
    assert_eq!(r.read_timeout, Duration::from_secs(60));
    assert_eq!(
        r.upstream,
        Upstream {
            tls: true,
            host: "orders.example.com".into(),
            port: 443,
            authority: "orders.example.com".into(),
            base_path: "/v1".into(),
        }
    );
}

#[test]
fn upstream_authority_keeps_a_non_default_port_and_ipv6_brackets() {
    let c = load(&BASE.replace("https://orders.example.com/v1/", "http://[::1]:8443")).unwrap();
    let u = &c.routes[0].upstream;
    assert_eq!(
        (
            u.host.as_str(),
            u.port,
            u.authority.as_str(),
            u.base_path.as_str()
        ),
        ("::1", 8443, "[::1]:8443", "")
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one table of cases
fn rejections_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "client_id: id",
            "client_id: id\n    colour: blue",
            "providers.auth0.colour",
        ),
        (
            "provider: auth0",
            "provider: okta",
            "routes[0].token.provider: unknown provider \"okta\"",
        ),
        (
            "https://orders.example.com/v1/",
            "not a url",
            "routes[0].upstream",
        ),
        (
            "https://orders.example.com/v1/",
            "ftp://x/",
            "routes[0].upstream",
        ),
        (
            "listen: 127.0.0.1:8081",
            "listen: localhost:8081",
            "routes[0].listen",
        ),
        (
            "client_id: id",
            "client_id: id\n    timeout: 10 seconds",
            "providers.auth0.timeout",
        ),
        (
            "client_id: id",
            "client_id: id\n    timeout: 10",
            "providers.auth0.timeout",
        ),
        (
            "${SECRET}",
            "${NOT_SET_ANYWHERE}",
            "providers.auth0.client_secret: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "client_id: id",
            "client_id: id\n    client_secret_file: /etc/x",
            "providers.auth0: set exactly one",
        ),
        (
            "    client_secret: ${SECRET}\n",
            "",
            "providers.auth0: one of client_secret or client_secret_file is required",
        ),
        (
            "client_id: id",
            "client_id: id\n    params: { grant_type: password }",
            "providers.auth0.params.grant_type",
        ),
        (
            "client_id: id",
            "client_id: id\n    params: { client_secret: x }",
            "providers.auth0.params.client_secret",
        ),
        (
            "https://idp.example/oauth/token",
            "http://idp.example/oauth/token",
            "providers.auth0.token_url",
        ),
        (
            "client_id: id",
            "client_id: id\n    auth_method: client_secret_jwt",
            "providers.auth0.auth_method",
        ),
        (
            "client_id: id",
            "client_id: id\n    body: xml",
            "providers.auth0.body",
        ),
        (
            "client_id: id",
            "client_id: id\n    refresh: { ratio: 1.5 }",
            "providers.auth0.refresh.ratio",
        ),
        (
            "client_id: id",
            "client_id: id\n    refresh: { jitter: 0.9 }",
            "providers.auth0.refresh.jitter",
        ),
        (
            "client_id: id",
            "client_id: id\n    refresh: { retry_initial: 5s, retry_max: 1s }",
            "providers.auth0.refresh.retry_max",
        ),
        (
            "client_id: id",
            "client_id: id\n    ca_file: /nonexistent/ca.pem",
            "providers.auth0.ca_file",
        ),
        (
            "name: orders",
            "name: orders\n    format: \"Bearer token\"",
            "routes[0].format",
        ),
        (
            "name: orders",
            "name: orders\n    header: Host",
            "routes[0].header",
        ),
        (
            "name: orders",
            "name: orders\n    existing: merge",
            "routes[0].existing",
        ),
        (
            "name: orders",
            "name: orders\n    read_timeout: 0s",
            "routes[0].read_timeout",
        ),
        ("name: orders", "name: 'or ders'", "routes[0].name"),
    ];
    for (from, to, want) in cases {
        assert!(BASE.contains(from), "bad test case: {from}");
        let msg = err(&BASE.replace(from, to));
        assert!(
            msg.contains(want),
            "replacing {from:?} by {to:?}: got {msg:?}, want {want:?}"
        );
        assert!(!msg.contains("s3cret"), "error leaks the secret: {msg}");
    }
}

#[test]
fn http_token_url_is_allowed_to_loopback_or_with_allow_http() {
    load(&BASE.replace(
        "https://idp.example/oauth/token",
        "http://127.0.0.1:9/oauth/token",
    ))
    .unwrap();
    load(&BASE.replace("https://idp.example/oauth/token", "http://localhost:9/t")).unwrap();
    load(&BASE.replace(
        "https://idp.example/oauth/token",
        "http://idp.example/oauth/token\n    allow_http: true",
    ))
    .unwrap();
}

#[test]
fn duplicate_route_names_and_listen_addresses_are_rejected() {
    let second = r#"
  - name: orders
    listen: 127.0.0.1:8082
    upstream: https://b.example.com
    token: { provider: auth0 }
"#;
    let msg = err(&format!("{BASE}{second}"));
    assert!(
        msg.starts_with("routes[1].name: duplicate route name \"orders\""),
        "{msg}"
    );
    let msg = err(&format!(
        "{BASE}{}",
        second
            .replace("name: orders", "name: b")
            .replace("8082", "8081")
    ));
    assert!(msg.starts_with("routes[1].listen:"), "{msg}");
    let msg = err(&format!(
        "{BASE}{}",
        second
            .replace("name: orders", "name: b")
            .replace("8082", "9901")
    ));
    assert!(msg.starts_with("routes[1].listen:"), "admin clash: {msg}");
}

#[test]
fn syntax_errors_and_empty_files_are_reported() {
    assert!(err("routes: [").starts_with("invalid YAML"));
    assert!(err("").contains("empty"));
    assert!(err("providers: {}\nroutes: []\n").starts_with("routes: at least one route"));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "from-file\n").unwrap();
    let yaml = BASE.replace(
        "client_secret: ${SECRET}",
        &format!("client_secret_file: {}", f.display()),
    );
    let c = load(&yaml).unwrap();
    let Credential::Secret(source) = &c.providers["auth0"].credential else {
        panic!("a secret credential");
    };
    assert_eq!(source.read().unwrap().expose(), "from-file");
    std::fs::write(&f, "").unwrap();
    assert!(err(&yaml).contains("providers.auth0.client_secret_file"));
}

#[test]
fn header_format_renders_prefix_and_suffix() {
    let f = HeaderFormat::parse("Token {token}; v=1").unwrap();
    assert_eq!(f.render(&Secret::new("abc")).unwrap(), "Token abc; v=1");
    assert!(HeaderFormat::parse("{token}{token}").is_err());
    assert!(HeaderFormat::parse("Bearer\n{token}").is_err());
}

#[test]
fn lean_path_is_a_boolean() {
    assert!(
        !load(&format!("lean_path: false\n{BASE}"))
            .unwrap()
            .lean_path
    );
    let e = err(&format!("lean_path: sometimes\n{BASE}"));
    assert!(e.contains("lean_path"), "{e}");
}

#[test]
fn caller_limits_have_defaults_and_bounds_that_name_the_key() {
    let c = load(BASE).unwrap();
    assert_eq!(
        c.callers,
        CallerLimits {
            header_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    );
    let c = load(&format!(
        "client_header_timeout: 1s\nclient_write_timeout: 10m\nmax_connections: 3\n{BASE}"
    ))
    .unwrap();
    assert_eq!(c.callers.header_timeout, Duration::from_secs(1));
    assert_eq!(c.callers.write_timeout, Duration::from_secs(600));
    assert_eq!(c.callers.max_connections, 3);
    for (line, want) in [
        (
            "client_header_timeout: 999ms",
            "client_header_timeout: must be between 1s and 10m",
        ),
        (
            "client_header_timeout: 601s",
            "client_header_timeout: must be between 1s and 10m",
        ),
        (
            "client_header_timeout: soon",
            "client_header_timeout: invalid duration",
        ),
        (
            "client_write_timeout: 0s",
            "client_write_timeout: must be between 1s and 10m",
        ),
        (
            "client_write_timeout: 2h",
            "client_write_timeout: must be between",
        ),
        (
            "max_connections: 0",
            "max_connections: 0 is not in 1..=1000000",
        ),
        (
            "max_connections: 1000001",
            "max_connections: 1000001 is not in",
        ),
        ("max_connections: -1", "max_connections"),
        ("max_connections: many", "max_connections"),
    ] {
        let msg = err(&format!("{line}\n{BASE}"));
        assert!(msg.starts_with(want), "{line}: got {msg:?}, want {want:?}");
    }
}

#[test]
fn enum_keys_name_the_key_and_the_allowed_values() {
    let cases = [
        (
            "    body: xml\n",
            "",
            "providers.auth0.body",
            "`form` or `json`",
        ),
        (
            "    auth_method: magic\n",
            "",
            "providers.auth0.auth_method",
            "`client_secret_post`, `client_secret_basic`, `private_key_jwt`",
        ),
        (
            "",
            "    existing: merge\n",
            "routes[0].existing",
            "`replace` or `keep`",
        ),
        (
            "",
            "    http2: maybe\n",
            "routes[0].http2",
            "`auto` or `off`",
        ),
    ];
    for (provider, route, key, allowed) in cases {
        let yaml = BASE.replace(
            "    client_secret: ${SECRET}\n",
            &format!("    client_secret: ${{SECRET}}\n{provider}"),
        ) + route;
        let err = Config::from_yaml(&yaml, &|_| Some("s".into()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{key}: unknown variant")), "{err}");
        assert!(err.contains(allowed), "{err}");
    }
    let yaml = format!("log: {{ format: xml }}\n{BASE}");
    let err = Config::from_yaml(&yaml, &|_| Some("s".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("log.format: unknown variant") && err.contains("`text` or `json`"),
        "{err}"
    );
}

#[test]
fn provider_and_route_names_share_one_rule() {
    let bad_route = BASE.replace("name: orders", "name: \"or ders\"");
    let err = Config::from_yaml(&bad_route, &|_| Some("s".into()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "routes[0].name: \"or ders\" is not a valid route name (letters, digits, '-', '_', '.')"
    );
    let bad_provider = BASE
        .replace("  auth0:", "  \"au th0\":")
        .replace("provider: auth0", "provider: \"au th0\"");
    let err = Config::from_yaml(&bad_provider, &|_| Some("s".into()))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "providers.au th0: \"au th0\" is not a valid provider name (letters, digits, '-', '_', '.')");
}
