use http::{HeaderMap, StatusCode};

use super::*;
use crate::config::{Config, Provider};

fn ok(body: &str) -> Result<TokenResponse, FetchError> {
    parse_response(StatusCode::OK, &HeaderMap::new(), body.as_bytes())
}

#[test]
fn accepts_a_well_formed_token() {
    let t = ok(r#"{"access_token":"abc","token_type":"Bearer","expires_in":3600}"#).unwrap();
    assert_eq!(t.access_token.expose(), "abc");
    assert_eq!(t.expires_in, Some(Duration::from_secs(3600)));
    assert_eq!(t.jwt_exp, None);
    // token_type in any case, or absent; expires_in as a string; absent expires_in.
    assert!(ok(r#"{"access_token":"abc","token_type":"bearer"}"#)
        .unwrap()
        .expires_in
        .is_none());
    assert_eq!(
        ok(r#"{"access_token":"abc","expires_in":"120"}"#)
            .unwrap()
            .expires_in,
        Some(Duration::from_secs(120))
    );
}

#[test]
fn rejects_what_is_not_a_token() {
    let cases = [
        ("not json", ErrorClass::BadResponse),
        ("[1,2]", ErrorClass::BadResponse),
        (r#"{"token_type":"Bearer"}"#, ErrorClass::BadResponse),
        (r#"{"access_token":""}"#, ErrorClass::BadResponse),
        (r#"{"access_token":42}"#, ErrorClass::BadResponse),
        (r#"{"access_token":"a b"}"#, ErrorClass::BadResponse),
        (
            r#"{"access_token":"abc","token_type":"mac"}"#,
            ErrorClass::BadResponse,
        ),
        (
            r#"{"access_token":"abc","expires_in":"soon"}"#,
            ErrorClass::BadResponse,
        ),
        (
            r#"{"access_token":"abc","expires_in":0}"#,
            ErrorClass::BadResponse,
        ),
        (
            r#"{"access_token":"abc","expires_in":-5}"#,
            ErrorClass::BadResponse,
        ),
        (
            r#"{"access_token":"abc","error":"server_error"}"#,
            ErrorClass::IdpError,
        ),
        (r#"{"error":"invalid_client"}"#, ErrorClass::InvalidClient),
    ];
    for (body, class) in cases {
        let e = ok(body).expect_err(body);
        assert_eq!(e.class, class, "{body}: {e}");
    }
}

#[test]
fn error_answers_keep_the_idp_error_and_classify() {
    let body = br#"{"error":"access_denied","error_description":"Service not enabled"}"#;
    let e = parse_response(StatusCode::FORBIDDEN, &HeaderMap::new(), body).unwrap_err();
    assert_eq!(e.class, ErrorClass::IdpError);
    assert_eq!(e.status, Some(403));
    assert_eq!(e.idp_error.as_deref(), Some("access_denied"));
    assert_eq!(e.idp_description.as_deref(), Some("Service not enabled"));
    assert!(e.to_string().contains("access_denied"));

    let e = parse_response(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"").unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidClient);

    let mut h = HeaderMap::new();
    h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
    let e = parse_response(StatusCode::TOO_MANY_REQUESTS, &h, b"{}").unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));

    let e = parse_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &HeaderMap::new(),
        b"<html>",
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::IdpError);
}

#[test]
fn jwt_exp_is_read_without_verifying() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let payload = B64.encode(r#"{"exp":1700000000,"sub":"x"}"#);
    let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
    assert_eq!(jwt_exp(&token), Some(1_700_000_000));
    assert_eq!(
        ok(&format!(r#"{{"access_token":"{token}"}}"#))
            .unwrap()
            .jwt_exp,
        Some(1_700_000_000)
    );
    assert_eq!(jwt_exp("opaque-token"), None);
    assert_eq!(jwt_exp("a.!!!.c"), None);
    assert_eq!(
        jwt_exp(&format!("a.{}.c", B64.encode(r#"{"exp":"soon"}"#))),
        None
    );
}

fn provider(extra: &str) -> std::sync::Arc<Provider> {
    let yaml = format!(
        r#"
providers:
  p:
    token_url: https://idp.example/oauth/token
    client_id: "my id"
    client_secret: "s&cret:x"
{extra}
routes:
  - name: r
    listen: 127.0.0.1:8081
    upstream: https://api.example
    token: {{ provider: p, audience: "https://api/", scope: "a b" }}
"#
    );
    Config::from_yaml(&yaml, &|_| None).unwrap().providers["p"].clone()
}

#[test]
fn request_params_follow_the_auth_method() {
    let key = TokenKey {
        provider: "p".into(),
        audience: Some("https://api/".into()),
        scope: Some("a b".into()),
        resource: Some("https://res/".into()),
    };
    let secret = Secret::new("s&cret:x");
    let proof = Proof::Secret(secret.clone());
    let post = provider("    params: { organization: org_1 }");
    assert_eq!(
        request_params(&post, &key, &proof),
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "my id"),
            ("client_secret", "s&cret:x"),
            ("audience", "https://api/"),
            ("scope", "a b"),
            ("resource", "https://res/"),
            ("organization", "org_1"),
        ]
    );
    let basic = provider("    auth_method: client_secret_basic");
    let params = request_params(&basic, &key, &proof);
    assert!(params
        .iter()
        .all(|(k, _)| *k != "client_secret" && *k != "client_id"));
    // RFC 6749 §2.3.1: form-encode, then base64 ("my+id:s%26cret%3Ax").
    assert_eq!(
        basic_auth("my id", &secret),
        "Basic bXkraWQ6cyUyNmNyZXQlM0F4"
    );
}

#[test]
fn auth0_quota_header_is_parsed_and_malformed_buckets_are_skipped() {
    let q = parse_quota("b=per_hour;q=100;r=98;t=3600,b=per_day;q=1000;r=996;t=86400");
    assert_eq!(
        q,
        vec![
            QuotaBucket {
                bucket: "per_hour".into(),
                limit: 100,
                remaining: 98,
                reset_in: 3600
            },
            QuotaBucket {
                bucket: "per_day".into(),
                limit: 1000,
                remaining: 996,
                reset_in: 86400
            },
        ]
    );
    let q = parse_quota("b=per_hour;q=lots;r=98,garbage,,b=per_day;q=10;r=9");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].bucket, "per_day");
    assert_eq!(q[0].reset_in, 0);
    assert!(parse_quota("").is_empty());
    assert!(parse_quota(";;;=,=").is_empty());
    let mut h = HeaderMap::new();
    h.insert(
        "auth0-client-quota-limit",
        "b=per_hour;q=5;r=4;t=10".parse().unwrap(),
    );
    assert_eq!(quota(&h)[0].remaining, 4);
}
