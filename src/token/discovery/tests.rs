use super::*;

fn issuer(id: &str) -> Issuer {
    Issuer {
        id: id.to_string(),
        url: Url::parse(id).unwrap(),
        allow_http: false,
    }
}

#[test]
fn metadata_urls_follow_oidc_then_rfc8414() {
    let u = |s: &str| {
        metadata_urls(&Url::parse(s).unwrap())
            .iter()
            .map(Url::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        u("https://tenant.auth0.com/"),
        [
            "https://tenant.auth0.com/.well-known/openid-configuration",
            "https://tenant.auth0.com/.well-known/oauth-authorization-server"
        ]
    );
    assert_eq!(
        u("https://kc.example/realms/prod"),
        [
            "https://kc.example/realms/prod/.well-known/openid-configuration",
            "https://kc.example/.well-known/oauth-authorization-server/realms/prod"
        ]
    );
}

#[test]
fn parses_a_document_with_mtls_aliases_and_methods() {
    let body = br#"{
        "issuer": "https://idp.example/",
        "token_endpoint": "https://idp.example/oauth/token",
        "mtls_endpoint_aliases": {"token_endpoint": "https://mtls.idp.example/oauth/token"},
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth"],
        "jwks_uri": "https://idp.example/jwks"
    }"#;
    let d = parse(body, &issuer("https://idp.example/")).unwrap();
    assert_eq!(d.token_endpoint.as_str(), "https://idp.example/oauth/token");
    assert_eq!(
        d.token_endpoint_for(AuthMethod::TlsClientAuth).as_str(),
        "https://mtls.idp.example/oauth/token"
    );
    assert_eq!(
        d.token_endpoint_for(AuthMethod::PrivateKeyJwt).as_str(),
        "https://idp.example/oauth/token"
    );
    assert!(!d.lacks(AuthMethod::PrivateKeyJwt));
    assert!(!d.lacks(AuthMethod::ClientAssertion));
    assert!(d.lacks(AuthMethod::ClientSecretBasic));
    assert!(d.lacks(AuthMethod::SelfSignedTlsClientAuth));
    // Without the list, nothing is known to be missing; without the alias, the plain endpoint.
    let d = parse(
        br#"{"issuer":"https://idp.example/","token_endpoint":"https://idp.example/t"}"#,
        &issuer("https://idp.example/"),
    )
    .unwrap();
    assert!(!d.lacks(AuthMethod::SelfSignedTlsClientAuth));
    assert_eq!(
        d.token_endpoint_for(AuthMethod::TlsClientAuth).as_str(),
        "https://idp.example/t"
    );
}

#[test]
fn the_issuer_must_match_exactly() {
    let body = br#"{"issuer":"https://idp.example","token_endpoint":"https://idp.example/t"}"#;
    let e = parse(body, &issuer("https://idp.example/")).unwrap_err();
    assert!(
        e.contains(
            "issuer \"https://idp.example\" is not the configured issuer \"https://idp.example/\""
        ),
        "{e}"
    );
    let body = br#"{"issuer":"https://evil.example/","token_endpoint":"https://evil.example/t"}"#;
    assert!(parse(body, &issuer("https://idp.example/")).is_err());
}

/// A metadata server on loopback answering `GET path` with the current (status, body), and
/// 404 for any other path. Raw HTTP/1.1, one request per connection.
async fn metadata_server(
    path: &'static str,
) -> (
    String,
    Arc<Mutex<(u16, String)>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let answer = Arc::new(Mutex::new((200, String::new())));
    let a = answer.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let asked = head.split(' ').nth(1).unwrap_or("").to_string();
            let (status, body) = if asked == path {
                a.lock().unwrap().clone()
            } else {
                (404, String::new())
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (base, answer, task)
}

fn loopback_issuer(id: &str) -> Issuer {
    Issuer {
        id: id.to_string(),
        url: Url::parse(id).unwrap(),
        allow_http: false,
    }
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_document() {
    let (base, answer, _task) = metadata_server("/.well-known/openid-configuration").await;
    *answer.lock().unwrap() = (
        200,
        format!(r#"{{"issuer":"{base}","token_endpoint":"{base}/oauth/token"}}"#),
    );
    let http = reqwest::Client::new();
    let d = Discovery::new("p", loopback_issuer(&base), AuthMethod::PrivateKeyJwt)
        .with_refresh_every(Duration::ZERO);
    let first = d.document(&http).await.unwrap();
    assert_eq!(first.token_endpoint.as_str(), format!("{base}/oauth/token"));
    // The server breaks: the refresh fails, the last good document stays in use.
    *answer.lock().unwrap() = (500, "oops".into());
    assert_eq!(d.document(&http).await.unwrap(), first);
    // A document for another issuer does not replace it either.
    *answer.lock().unwrap() = (
        200,
        format!(r#"{{"issuer":"{base}/other","token_endpoint":"{base}/evil"}}"#),
    );
    assert_eq!(d.document(&http).await.unwrap(), first);
    // Without a good document, the failure is an error naming both places tried.
    let fresh = Discovery::new("p", loopback_issuer(&base), AuthMethod::PrivateKeyJwt);
    *answer.lock().unwrap() = (500, "oops".into());
    let e = fresh.document(&http).await.unwrap_err();
    assert!(e.contains("openid-configuration: answered 500"), "{e}");
    assert!(
        e.contains("oauth-authorization-server: answered 404"),
        "{e}"
    );
}

#[tokio::test]
async fn falls_back_to_rfc8414_metadata_but_not_past_an_issuer_mismatch() {
    let (base, answer, _task) = metadata_server("/.well-known/oauth-authorization-server").await;
    *answer.lock().unwrap() = (
        200,
        format!(r#"{{"issuer":"{base}","token_endpoint":"{base}/as/token"}}"#),
    );
    let http = reqwest::Client::new();
    let d = Discovery::new("p", loopback_issuer(&base), AuthMethod::ClientSecretBasic);
    assert_eq!(
        d.document(&http).await.unwrap().token_endpoint.as_str(),
        format!("{base}/as/token")
    );

    let (base, answer, _task) = metadata_server("/.well-known/openid-configuration").await;
    *answer.lock().unwrap() = (
        200,
        format!(r#"{{"issuer":"{base}/","token_endpoint":"{base}/t"}}"#),
    );
    let d = Discovery::new("p", loopback_issuer(&base), AuthMethod::ClientSecretBasic);
    let e = d.document(&http).await.unwrap_err();
    assert!(e.contains("is not the configured issuer"), "{e}");
    assert!(
        !e.contains("oauth-authorization-server"),
        "no fallback: {e}"
    );
}

#[test]
fn rejects_broken_documents() {
    let i = issuer("https://idp.example/");
    for (body, want) in [
        (&b"<html>"[..], "not a JSON object"),
        (
            br#"{"token_endpoint":"https://idp.example/t"}"#,
            "no issuer",
        ),
        (br#"{"issuer":"https://idp.example/"}"#, "no token_endpoint"),
        (
            br#"{"issuer":"https://idp.example/","token_endpoint":"http://idp.example/t"}"#,
            "plain http",
        ),
        (
            br#"{"issuer":"https://idp.example/","token_endpoint":42}"#,
            "not a string",
        ),
    ] {
        let e = parse(body, &i).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}
