//! Token lifetime end to end: refresh in the background before expiry under steady traffic, and
//! the failure modes of the token endpoint: keep serving the cached token until it expires,
//! answer 503 after, recover without a restart.

mod common;

use std::time::{Duration, Instant};

use common::idp::Mode;
use common::rig::{Rig, RigBuilder};
use common::wait_for;

const SECRET: &str = "refresh-secret";

/// An IdP in `mode`, a 1 s token timeout, retries from 100 ms to 400 ms, and route `api`.
fn rig(mode: Mode) -> RigBuilder {
    Rig::builder()
        .secret(SECRET)
        .mode(mode)
        .provider("timeout: 1s")
        .provider("refresh: { retry_initial: 100ms, retry_max: 400ms }")
        .route(
            "api",
            &["token: { provider: idp, audience: https://api.example/ }"],
        )
}

/// Sends requests from `workers` keep-alive loops for `duration`; returns (ok, other) counts.
async fn steady_traffic(port: u16, workers: usize, duration: Duration) -> (usize, Vec<u16>) {
    let client = reqwest::Client::new();
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0, Vec::new());
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                let r = client
                    .get(format!("http://127.0.0.1:{port}/w{w}/{i}"))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    s => bad.push(s),
                }
                let _ = r.bytes().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, bad)
        }));
    }
    let mut ok = 0;
    let mut bad = Vec::new();
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad.extend(b);
    }
    (ok, bad)
}

async fn steady_traffic_never_carries_an_expired_token(mode: Mode, lifetime: Duration) {
    let rig = rig(mode).env("RUST_LOG", "info").start().await;
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let port = rig.port("api");
    let run = lifetime * 3 + lifetime / 2;
    let (ok, bad) = steady_traffic(port, 4, run).await;
    assert!(bad.is_empty(), "non-200 answers: {bad:?}");
    let seen = up.seen();
    assert_eq!(seen.len(), ok);
    assert!(ok > 100, "only {ok} requests in {run:?}");
    let expired = seen.iter().filter(|s| s.token_valid != Some(true)).count();
    assert_eq!(
        expired, 0,
        "{expired} requests reached the API without a valid token"
    );
    // Refresh at 75-80% of the lifetime: about one fetch per 0.8 lifetimes, plus the first.
    let fetches = idp.request_count();
    let expected = run.as_secs_f64() / (lifetime.as_secs_f64() * 0.8) + 1.0;
    assert!(
        (fetches as f64) >= expected - 1.5 && (fetches as f64) <= expected + 1.5,
        "{fetches} token requests for {ok} proxied requests over {run:?}; expected about {expected:.1}"
    );
    let distinct: std::collections::HashSet<_> =
        seen.iter().map(|s| s.authorization[0].clone()).collect();
    assert!(
        distinct.len() >= 3,
        "tokens were not rotated: {}",
        distinct.len()
    );
    let mut secrets = idp.issued_tokens();
    secrets.push(SECRET.into());
    proxy.assert_log_free_of(&secrets);
}

#[tokio::test]
async fn refresh_with_expires_in() {
    let lifetime = Duration::from_secs(3);
    steady_traffic_never_carries_an_expired_token(Mode::Ok { lifetime }, lifetime).await;
}

#[tokio::test]
async fn refresh_with_jwt_exp_only() {
    let lifetime = Duration::from_secs(4);
    steady_traffic_never_carries_an_expired_token(Mode::JwtWithoutExpiresIn { lifetime }, lifetime)
        .await;
}

enum Failure {
    Down,
    Mode(Mode),
}

/// The IdP fails right after the first token: the proxy serves that token while refreshes fail,
/// stops at its expiry with 503, and recovers once the IdP is back.
async fn serves_until_expiry_then_503_then_recovers(failure: Failure) {
    let lifetime = Duration::from_secs(3);
    let rig = rig(Mode::Ok { lifetime }).start().await;
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let url = rig.url("api", "/x");
    let ready_at = Instant::now();
    match &failure {
        Failure::Down => idp.stop(),
        Failure::Mode(m) => idp.set_mode(m.clone()),
    }
    let client = reqwest::Client::new();
    // (time since ready, status, IdP requests so far)
    let mut log = Vec::new();
    loop {
        let r = client.get(&url).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        log.push((ready_at.elapsed(), status, idp.request_count()));
        if status == 503 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "token_unavailable");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            ready_at.elapsed() < lifetime + Duration::from_secs(1),
            "still 200 long after expiry: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first_503 = log.last().unwrap().0;
    // Usable until expiry minus the skew (10% of 3s): 503 must not come much before 2.7s.
    assert!(
        first_503 >= Duration::from_millis(2300),
        "503 too early: {log:?}"
    );
    // While refreshes were failing (more than the first request made), the cached token served.
    let served_during_failure =
        log.iter().any(|(_, s, n)| *s == 200 && *n >= 2) || matches!(failure, Failure::Down);
    assert!(served_during_failure, "{log:?}");
    if matches!(failure, Failure::Down) {
        assert!(
            log.iter()
                .filter(|(_, s, _)| *s == 200)
                .any(|(t, _, _)| *t > Duration::from_millis(2400)),
            "{log:?}"
        );
    }
    assert!(
        up.seen().iter().all(|s| s.token_valid == Some(true)),
        "an expired token reached the API"
    );
    let forwarded = up.count();
    for _ in 0..3 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 503);
    }
    assert_eq!(up.count(), forwarded, "requests forwarded without a token");
    let attempts = idp.request_count();

    // The IdP comes back: the proxy recovers on its own.
    match failure {
        Failure::Down => idp.restart().await,
        Failure::Mode(_) => idp.set_mode(Mode::Ok {
            lifetime: Duration::from_secs(60),
        }),
    }
    let recovered = wait_for(Duration::from_secs(8), || {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(recovered, "no recovery; stderr:\n{}", proxy.stderr());
    let after = idp.request_count();
    assert!(after > attempts);
    // Backoff, not a hot loop: with retries from 100 ms capped at 400 ms, a few seconds of
    // failure cost tens of attempts at most.
    assert!(attempts < 60, "{attempts} token requests: no backoff?");
    let mut secrets = idp.issued_tokens();
    secrets.push(SECRET.into());
    proxy.assert_log_free_of(&secrets);
}

#[tokio::test]
async fn idp_down() {
    serves_until_expiry_then_503_then_recovers(Failure::Down).await;
}

#[tokio::test]
async fn idp_answers_500() {
    serves_until_expiry_then_503_then_recovers(Failure::Mode(Mode::Status(
        500,
        r#"{"error":"server_error","error_description":"database unavailable"}"#.into(),
    )))
    .await;
}

#[tokio::test]
async fn idp_answers_garbage() {
    serves_until_expiry_then_503_then_recovers(Failure::Mode(Mode::Garbage)).await;
}

#[tokio::test]
async fn idp_answers_200_without_access_token() {
    serves_until_expiry_then_503_then_recovers(Failure::Mode(Mode::NoAccessToken)).await;
}

#[tokio::test]
async fn idp_hangs() {
    serves_until_expiry_then_503_then_recovers(Failure::Mode(Mode::Hang)).await;
}
