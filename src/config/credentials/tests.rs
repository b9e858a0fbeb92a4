use std::path::Path;

use crate::config::{AuthMethod, Config, ConfigError, Endpoint};
use crate::credentials::keys::Algorithm;
use crate::credentials::test_keys::{self, TestKey};
use crate::credentials::{Credential, PrivateKeyJwt};

const ROUTES: &str = r#"
routes:
  - name: r
    listen: 127.0.0.1:8081
    upstream: https://api.example
    token: { provider: p }
"#;

fn yaml(provider: &str) -> String {
    format!("providers:\n  p:\n    client_id: c\n{provider}{ROUTES}")
}

fn load(provider: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(&yaml(provider), &|_| None)
}

fn err(provider: &str) -> String {
    load(provider).expect_err("should be rejected").to_string()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn jwt_settings(c: &Config) -> PrivateKeyJwt {
    match &c.providers["p"].credential {
        Credential::PrivateKeyJwt(p) => p.clone(),
        other => panic!("not private_key_jwt: {other:?}"),
    }
}

struct Files {
    _dir: tempfile::TempDir,
    rsa: String,
    rsa_cert: String,
    ec: String,
    ec_cert: String,
    other_cert: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let rsa: TestKey = test_keys::rsa(2048, true);
    let ec = test_keys::p256(true);
    let other = test_keys::p384(false);
    Files {
        rsa: write(dir.path(), "rsa.pem", &rsa.private_pem),
        rsa_cert: write(dir.path(), "rsa.crt", &test_keys::self_signed(&rsa)),
        ec: write(dir.path(), "ec.pem", &ec.private_pem),
        ec_cert: write(dir.path(), "ec.crt", &test_keys::self_signed(&ec)),
        other_cert: write(dir.path(), "other.crt", &test_keys::self_signed(&other)),
        _dir: dir,
    }
}

#[test]
fn exactly_one_of_token_url_and_issuer() {
    let secret = "    client_secret: s\n";
    assert!(err(secret).contains("providers.p: one of token_url or issuer is required"));
    let both =
        format!("    token_url: https://i.example/t\n    issuer: https://i.example/\n{secret}");
    assert!(err(&both).contains("providers.p: set exactly one of token_url and issuer"));
    let c = load(&format!("    issuer: https://i.example\n{secret}")).unwrap();
    match &c.providers["p"].endpoint {
        // Kept exactly as written: no trailing slash added.
        Endpoint::Issuer(i) => assert_eq!(i.id, "https://i.example"),
        e => panic!("{e:?}"),
    }
    assert!(err(&format!("    issuer: http://i.example/\n{secret}"))
        .contains("providers.p.issuer: \"http://i.example/\" is plain http"));
    assert!(
        err(&format!("    issuer: https://i.example/?x=1\n{secret}"))
            .contains("providers.p.issuer: an issuer has no query")
    );
}

#[test]
fn private_key_jwt_defaults_and_audience() {
    let f = files();
    let c = load(&format!(
        "    token_url: https://i.example/oauth/token\n    auth_method: private_key_jwt\n    private_key_file: {}\n",
        f.rsa
    ))
    .unwrap();
    assert_eq!(c.providers["p"].auth_method, AuthMethod::PrivateKeyJwt);
    let s = jwt_settings(&c);
    assert_eq!(
        s.audience, "https://i.example/oauth/token",
        "default: token_url"
    );
    assert_eq!(s.algorithm, None, "decided by the key: RS256 for RSA");
    assert_eq!(s.lifetime, std::time::Duration::from_secs(60));
    assert_eq!(s.key_id, None);

    let c = load(&format!(
        "    issuer: https://tenant.example/\n    auth_method: private_key_jwt\n    private_key_file: {}\n",
        f.ec
    ))
    .unwrap();
    assert_eq!(
        jwt_settings(&c).audience,
        "https://tenant.example/",
        "default: issuer"
    );

    let c = load(&format!(
        "    issuer: https://tenant.example/\n    auth_method: private_key_jwt\n    private_key_file: {}\n    assertion: {{ algorithm: PS384, audience: https://aud.example/, key_id: k1, certificate_file: {}, lifetime: 10m }}\n",
        f.rsa, f.rsa_cert
    ))
    .unwrap();
    let s = jwt_settings(&c);
    assert_eq!(s.audience, "https://aud.example/");
    assert_eq!(s.algorithm, Some(Algorithm::PS384));
    assert_eq!(s.key_id.as_deref(), Some("k1"));
    assert_eq!(s.lifetime, std::time::Duration::from_secs(600));
    assert!(s.certificate_file.is_some());
}

#[test]
fn assertion_lifetime_is_bounded() {
    let f = files();
    let base = format!(
        "    token_url: https://i.example/t\n    auth_method: private_key_jwt\n    private_key_file: {}\n",
        f.ec
    );
    for bad in ["11m", "0s", "500ms"] {
        let e = err(&format!("{base}    assertion: {{ lifetime: {bad} }}\n"));
        assert!(
            e.contains("providers.p.assertion.lifetime") && e.contains("not between 1s and 10m"),
            "{bad}: {e}"
        );
    }
    assert!(load(&format!("{base}    assertion: {{ lifetime: 1s }}\n")).is_ok());
}

#[test]
fn check_reports_key_and_certificate_problems_naming_the_key() {
    let f = files();
    let dir = tempfile::tempdir().unwrap();
    let small = write(
        dir.path(),
        "small.pem",
        &test_keys::rsa(1024, false).private_pem,
    );
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_key = write(dir.path(), "ed.pem", &ed.serialize_pem());
    let garbage = write(dir.path(), "garbage.pem", "not a pem at all\n");
    let jwt = |key: &str, extra: &str| {
        format!("    token_url: https://i.example/t\n    auth_method: private_key_jwt\n    private_key_file: {key}\n{extra}")
    };
    let tls = |cert: &str, key: &str| {
        format!("    token_url: https://i.example/t\n    auth_method: tls_client_auth\n    client_certificate_file: {cert}\n    client_key_file: {key}\n")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            jwt("/nonexistent/key.pem", ""),
            "providers.p.private_key_file",
            "cannot read \"/nonexistent/key.pem\"",
        ),
        (
            jwt(&garbage, ""),
            "providers.p.private_key_file",
            "holds no PEM private key",
        ),
        (
            jwt(&f.rsa_cert, ""),
            "providers.p.private_key_file",
            "holds a \"CERTIFICATE\", not a private key",
        ),
        (
            jwt(&ed_key, ""),
            "providers.p.private_key_file",
            "is not RSA or EC",
        ),
        (
            jwt(&small, ""),
            "providers.p.private_key_file",
            "RSA key of 1024 bits; at least 2048",
        ),
        (
            jwt(&f.rsa, "    assertion: { algorithm: ES256 }\n"),
            "providers.p.assertion.algorithm",
            "ES256 does not fit the key",
        ),
        (
            jwt(&f.ec, "    assertion: { algorithm: RS256 }\n"),
            "providers.p.assertion.algorithm",
            "which is an EC P-256 key",
        ),
        (
            jwt(&f.ec, "    assertion: { algorithm: HS256 }\n"),
            "providers.p.assertion.algorithm",
            "unknown algorithm \"HS256\"",
        ),
        (
            jwt(
                &f.ec,
                &format!("    assertion: {{ certificate_file: {} }}\n", f.other_cert),
            ),
            "providers.p.assertion.certificate_file",
            "does not hold the public key",
        ),
        (
            jwt(
                &f.ec,
                "    assertion: { certificate_file: /nonexistent/c.crt }\n",
            ),
            "providers.p.assertion.certificate_file",
            "cannot read",
        ),
        (
            jwt(
                &f.ec,
                &format!("    assertion: {{ certificate_file: {} }}\n", f.ec),
            ),
            "providers.p.assertion.certificate_file",
            "holds no certificate",
        ),
        (
            tls(&f.ec_cert, "/nonexistent/k.pem"),
            "providers.p.client_key_file",
            "cannot read",
        ),
        (
            tls("/nonexistent/c.crt", &f.ec),
            "providers.p.client_certificate_file",
            "cannot read",
        ),
        (
            tls(&f.rsa_cert, &f.ec),
            "providers.p.client_certificate_file",
            "does not match the private key",
        ),
        (
            tls(&f.ec_cert, &small),
            "providers.p.client_key_file",
            "at least 2048",
        ),
        (
            tls(&f.ec_cert, &ed_key),
            "providers.p.client_key_file",
            "is not RSA or EC",
        ),
    ];
    for (provider, key, message) in cases {
        let e = err(&provider);
        assert!(e.starts_with(&format!("{key}: ")), "want {key}: {e}");
        assert!(e.contains(message), "want {message:?}: {e}");
    }
    // The good pairs load.
    assert!(load(&tls(&f.ec_cert, &f.ec)).is_ok());
    assert!(load(&tls(&f.rsa_cert, &f.rsa)).is_ok());
}

#[test]
fn each_method_takes_only_its_own_keys() {
    let f = files();
    let url = "    token_url: https://i.example/t\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("{url}    auth_method: private_key_jwt\n    private_key_file: {}\n    client_secret: s\n", f.ec), "providers.p.client_secret: is not used by auth_method private_key_jwt"),
        (format!("{url}    client_secret: s\n    private_key_file: {}\n", f.ec), "providers.p.private_key_file: is not used by auth_method client_secret_post"),
        (format!("{url}    auth_method: private_key_jwt\n"), "providers.p.private_key_file: is required with auth_method private_key_jwt"),
        (format!("{url}    auth_method: client_assertion\n"), "providers.p.client_assertion_file: is required"),
        (format!("{url}    auth_method: client_assertion\n    client_assertion_file: /nonexistent/token\n"), "providers.p.client_assertion_file: cannot read"),
        (format!("{url}    auth_method: tls_client_auth\n    client_key_file: {}\n", f.ec), "client_certificate_file and client_key_file are required"),
        (format!("    token_url: http://127.0.0.1:1/t\n    auth_method: self_signed_tls_client_auth\n    client_certificate_file: {}\n    client_key_file: {}\n", f.ec_cert, f.ec), "providers.p.token_url: auth_method self_signed_tls_client_auth needs an https token endpoint"),
        (format!("{url}    client_secret: s\n    params: {{ client_assertion: x }}\n"), "providers.p.params.client_assertion"),
    ];
    for (provider, want) in cases {
        let e = err(&provider);
        assert!(e.contains(want), "want {want:?}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "eyJ.x.y\n");
    let c = load(&format!(
        "{url}    auth_method: client_assertion\n    client_assertion_file: {token}\n"
    ))
    .unwrap();
    match &c.providers["p"].credential {
        Credential::ClientAssertion(a) => assert_eq!(
            a.assertion_type,
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_commented_credential_providers_of_the_example_load() {
    let example = include_str!("../../../config.yaml.example");
    let f = files();
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "idp-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n");
    // Uncomment the commented providers: a `  # name:` line and the indented lines after it.
    let mut providers = String::new();
    let mut names = Vec::new();
    let mut inside = false;
    for line in example.lines() {
        let Some(rest) = line.strip_prefix("  # ") else {
            inside = false;
            continue;
        };
        let is_name = rest.ends_with(':')
            && rest[..rest.len() - 1]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if is_name {
            names.push(rest.trim_end_matches(':').to_string());
            inside = true;
        } else if !(inside && rest.starts_with("  ")) {
            inside = false;
            continue;
        }
        providers.push_str(&format!("  {rest}\n"));
    }
    assert_eq!(
        names,
        ["auth0-private-key", "keycloak-workload", "idp-mtls"],
        "one commented provider per method"
    );
    let providers = providers
        .replace("/var/run/secrets/tokenproxy/client-key.pem", &f.rsa)
        .replace("/var/run/secrets/tokenproxy/client.crt", &f.rsa_cert)
        .replace("/var/run/secrets/tokens/idp-token", &token)
        .replace("/var/run/secrets/tokenproxy/tls.crt", &f.ec_cert)
        .replace("/var/run/secrets/tokenproxy/tls.key", &f.ec);
    let yaml = format!(
        "providers:\n{providers}routes:\n  - name: r\n    listen: 127.0.0.1:8081\n    upstream: https://api.example\n    token: {{ provider: auth0-private-key }}\n"
    );
    let c = Config::from_yaml(&yaml, &|_| Some("client-x".into()))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let methods: Vec<AuthMethod> = names
        .iter()
        .map(|n| c.providers[n.as_str()].auth_method)
        .collect();
    assert_eq!(
        methods,
        [
            AuthMethod::PrivateKeyJwt,
            AuthMethod::ClientAssertion,
            AuthMethod::TlsClientAuth
        ]
    );
}
