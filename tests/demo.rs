//! The demo issuer on a real socket: `/stats` counts every token request it answered and the
//! tokens it issued, which the benchmark uses to check that tokens are fetched on refresh only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokenproxy::demo::{issuer::Issuer, spawn_issuer};
use tokenproxy::secret::Secret;
use tokio_util::sync::CancellationToken;

async fn stats(client: &reqwest::Client, base: &str) -> (u64, u64) {
    let v: Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["token_requests"].as_u64().unwrap(),
        v["tokens_issued"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn stats_count_token_requests_and_issued_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let issuer = Arc::new(Issuer::new(
        "client-1",
        Secret::new("secret-1"),
        Secret::new("signing-key"),
        Duration::from_secs(60),
        format!("{base}/"),
    ));
    spawn_issuer(listener, issuer, stop.clone());
    let client = reqwest::Client::new();
    assert_eq!(stats(&client, &base).await, (0, 0));

    let grant = |secret: &str| {
        json!({
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": secret,
            "audience": "https://api.example/",
        })
    };
    let token_url = format!("{base}/oauth/token");
    for (secret, status) in [("secret-1", 200), ("wrong", 401), ("secret-1", 200)] {
        let r = client
            .post(&token_url)
            .json(&grant(secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "client secret {secret:?}");
    }
    // Three requests answered, one of them refused; /stats and /healthz are not counted.
    assert_eq!(stats(&client, &base).await, (3, 2));
    stop.cancel();
}
