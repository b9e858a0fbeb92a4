//! The issuer and API for `bench/verify.sh`: makes an RS256 signing key, writes `--tokens` JWT
//! access tokens signed with it (one a line) to `--out`, then serves on 127.0.0.1 the issuer's
//! discovery document and JWKS, and a plain API that answers `200 ok` to anything. Prints one
//! JSON line with the ports and the issuer once it serves.
//!
//! ```text
//! cargo run --release --example verify_bench -- --tokens 20000 --out /tmp/tokens.txt
//! ```

use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

/// The `aud` of every token, which the verify route must accept.
const AUDIENCE: &str = "https://bench.example/";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn serve(
    listener: TcpListener,
    answer: fn(&str, &str) -> Response<Full<Bytes>>,
    issuer: String,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let issuer = issuer.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = answer(req.uri().path(), &issuer);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json_response(v: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::LineEnding;
    use rsa::traits::PublicKeyParts;

    let count: usize = arg("--tokens")
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let Some(out) = arg("--out") else {
        eprintln!("usage: verify_bench --tokens N --out FILE");
        return ExitCode::from(2);
    };
    let issuer_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer_port = issuer_listener.local_addr().expect("addr").port();
    let api_port = api_listener.local_addr().expect("addr").port();
    let issuer = format!("http://127.0.0.1:{issuer_port}/");

    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
    let pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("bench-1".into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out).expect("--out"));
    for i in 0..count {
        let claims = json!({
            "iss": issuer, "aud": AUDIENCE, "sub": format!("client-{i}"),
            "exp": now + 3600, "iat": now, "scope": "read:bench",
        });
        let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
        writeln!(file, "{token}").expect("write");
    }
    file.flush().expect("write");

    let public = key.to_public_key();
    let jwks = json!({ "keys": [{
        "kty": "RSA", "kid": "bench-1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]});
    let jwks = Box::leak(Box::new(jwks));
    JWKS.set(jwks).ok();
    tokio::spawn(serve(issuer_listener, issuer_answer, issuer.clone()));
    tokio::spawn(serve(api_listener, api_answer, issuer.clone()));
    println!(
        "{}",
        json!({ "issuer": issuer, "api_port": api_port, "audience": AUDIENCE })
    );
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

static JWKS: std::sync::OnceLock<&'static serde_json::Value> = std::sync::OnceLock::new();

fn issuer_answer(path: &str, issuer: &str) -> Response<Full<Bytes>> {
    match path {
        "/.well-known/openid-configuration" => {
            json_response(&json!({ "issuer": issuer, "jwks_uri": format!("{issuer}jwks") }))
        }
        "/jwks" => json_response(JWKS.get().copied().unwrap_or(&serde_json::Value::Null)),
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
    }
}

fn api_answer(_path: &str, _issuer: &str) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}
