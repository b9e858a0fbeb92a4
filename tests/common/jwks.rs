//! An issuer's key endpoint for the verify tests: test signing keys (RSA and P-256) with their
//! JWKs, and a loopback server with a discovery document and a JWKS the test can change, which
//! counts how often the keys were fetched.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM (SPKI), for attacks that misuse it.
    pub public_pem: String,
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let public = k.to_public_key();
        let jwk = json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        });
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(k.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes())
                .unwrap(),
            jwk,
            public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
        }
    }

    pub fn ec(kid: &str) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(
                secret.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap(),
            jwk,
            public_pem: secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    /// A JWS over `claims` with this key, its `alg` and its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

struct State {
    issuer: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
    /// How long the JWKS answer takes.
    delay: Mutex<std::time::Duration>,
    /// Answer the JWKS with 500.
    failing: std::sync::atomic::AtomicBool,
}

/// The issuer's metadata and keys on `http://127.0.0.1:port`.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            issuer: Mutex::new(format!("http://{addr}/")),
            keys: Mutex::new(keys),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            delay: Mutex::new(std::time::Duration::ZERO),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        JwksServer { addr, state, task }
    }

    /// The issuer identifier (`http://127.0.0.1:port/`), which discovery serves.
    pub fn issuer(&self) -> String {
        self.state.issuer.lock().unwrap().clone()
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    /// Makes every JWKS answer take `delay`.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Makes the JWKS answer 500 (`true`) or the keys again.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    if req.uri().path() == "/jwks" {
                        let delay = *state.delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(answer(&state, req.uri().path()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(state: &State, path: &str) -> Response<Full<Bytes>> {
    let issuer = state.issuer.lock().unwrap().clone();
    let body = match path {
        "/.well-known/openid-configuration" => {
            state.discovery_hits.fetch_add(1, Ordering::SeqCst);
            json!({ "issuer": issuer, "jwks_uri": format!("{issuer}jwks") })
        }
        "/jwks" => {
            state.jwks_hits.fetch_add(1, Ordering::SeqCst);
            if state.failing.load(Ordering::SeqCst) {
                return Response::builder()
                    .status(500)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            json!({ "keys": *state.keys.lock().unwrap() })
        }
        _ => {
            return Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
