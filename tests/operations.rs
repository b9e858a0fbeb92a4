//! Operating the proxy: probes and `/tokens`, reload on SIGHUP and on file change, secret
//! rotation through a symlink swap, and graceful shutdown, all against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::config::Cfg;
use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::rig::{Rig, RigBuilder};
use common::upstream::Upstream;
use common::{get_json, metric, wait_for};

const SECRET: &str = "ops-secret";

fn lifetime(secs: u64) -> Mode {
    Mode::Ok {
        lifetime: Duration::from_secs(secs),
    }
}

#[tokio::test]
async fn readyz_follows_the_tokens_and_tokens_shows_no_secret() {
    let mut rig = Rig::builder()
        .secret(SECRET)
        .mode(Mode::Status(503, "{}".into()))
        .no_checker()
        .provider("refresh: { retry_initial: 100ms, retry_max: 300ms }")
        .route(
            "orders",
            &[r#"token: { provider: idp, audience: "https://orders/", scope: "read" }"#],
        )
        .start_listening()
        .await;
    let (idp, proxy) = (&rig.idp, &mut rig.proxy);

    // Before the first token: 503, naming the route and the last error.
    let (s, body) = get_json(&proxy.admin_url("/readyz")).await;
    assert_eq!(s, 503);
    assert_eq!(body["routes_without_token"][0]["route"], "orders");
    assert_eq!(
        get_json(&proxy.admin_url("/healthz")).await.0,
        200,
        "liveness does not depend on tokens"
    );

    idp.set_mode(lifetime(3));
    proxy.ready().await;
    let (s, tokens) = get_json(&proxy.admin_url("/tokens")).await;
    assert_eq!(s, 200);
    let t = &tokens["tokens"][0];
    assert_eq!(t["provider"], "idp");
    assert_eq!(t["audience"], "https://orders/");
    assert_eq!(t["scope"], "read");
    assert_eq!(t["routes"], serde_json::json!(["orders"]));
    assert_eq!(t["consecutive_failures"], 0);
    for k in ["expires_at", "fetched_at", "next_refresh_at"] {
        assert!(t[k].as_str().is_some_and(|v| v.ends_with('Z')), "{k}: {t}");
    }
    assert_eq!(
        t["last_error"]["class"], "idp_error",
        "the failures before the first token are kept"
    );
    let raw = tokens.to_string();
    for secret in idp
        .issued_tokens()
        .iter()
        .chain([SECRET.to_string()].iter())
    {
        assert!(!raw.contains(secret.as_str()), "/tokens shows a secret");
    }

    // The IdP goes down: ready while the token lasts, 503 after its expiry.
    idp.stop();
    let (s, _) = get_json(&proxy.admin_url("/readyz")).await;
    assert_eq!(s, 200);
    let went_unready = wait_for(Duration::from_secs(6), || async {
        get_json(&proxy.admin_url("/readyz")).await.0 == 503
    })
    .await;
    assert!(went_unready);
    let (_, body) = get_json(&proxy.admin_url("/readyz")).await;
    assert_eq!(
        body["routes_without_token"][0]["last_error"]["class"],
        "idp_unreachable"
    );
    assert_eq!(get_json(&proxy.admin_url("/nope")).await.0, 404);
    assert!(
        rig.metric(r#"tokenproxy_token_unavailable_total{route="orders"}"#)
            .await
            == 0.0
    );
}

fn reload_config(idp: &Idp, admin: u16, port: u16, upstream: &Upstream, audience: &str) -> String {
    let token = format!(r#"token: {{ provider: idp, audience: "{audience}" }}"#);
    Cfg::new(admin, &idp.token_url(), SECRET)
        .route("api", port, &format!("http://{}", upstream.addr), &[&token])
        .build()
}

async fn reloads(admin: u16, outcome: &str) -> f64 {
    metric(
        admin,
        &format!(r#"tokenproxy_config_reloads_total{{outcome="{outcome}"}}"#),
    )
    .await
}

#[tokio::test]
async fn reload_on_sighup_rejects_bad_configs_and_follows_file_edits() {
    let idp = Idp::start(lifetime(300)).await;
    let (up_a, up_b, up_c) = (
        Upstream::http(Some(idp.checker())).await,
        Upstream::http(Some(idp.checker())).await,
        Upstream::http(Some(idp.checker())).await,
    );
    let (admin, port) = (0u16, 0u16);
    let mut proxy = Proxy::start(
        &reload_config(&idp, admin, port, &up_a, "https://a/"),
        admin,
        &[],
    );
    proxy.ready().await;
    let (admin, port) = (proxy.admin, proxy.port("api"));
    let url = format!("http://127.0.0.1:{port}/x");
    let c = reqwest::Client::new();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(up_a.count(), 1);

    // New audience and new upstream, then SIGHUP.
    std::fs::write(
        &proxy.config_path,
        reload_config(&idp, admin, port, &up_b, "https://b/"),
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            reloads(admin, "success").await >= 1.0
        })
        .await
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(up_b.count(), 1, "the next request goes to the new upstream");
    let b_token = up_b.seen()[0].authorization[0].clone();
    let audiences: Vec<_> = idp
        .requests()
        .iter()
        .map(|r| r.params["audience"].clone())
        .collect();
    assert_eq!(audiences, vec!["https://a/", "https://b/"]);
    assert_eq!(up_b.seen()[0].token_valid, Some(true));
    assert_ne!(b_token, up_a.seen()[0].authorization[0]);

    // An invalid config is rejected as a whole; the old one keeps serving.
    let good = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(
        &proxy.config_path,
        good.replace("provider: idp", "provider: nope"),
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            reloads(admin, "error").await >= 1.0
        })
        .await
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(up_b.count(), 2);
    assert!(proxy
        .stderr()
        .contains("routes[0].token.provider: unknown provider \"nope\""));

    // An edit without a signal is picked up by the file watch. Tokens whose key did not change
    // are kept, not fetched again.
    let fetches = idp.request_count();
    std::fs::write(
        &proxy.config_path,
        reload_config(&idp, admin, port, &up_c, "https://b/"),
    )
    .unwrap();
    let moved = wait_for(Duration::from_secs(10), || async {
        c.get(&url).send().await.unwrap();
        up_c.count() > 0
    })
    .await;
    assert!(moved, "file edit not applied; stderr:\n{}", proxy.stderr());
    assert_eq!(
        idp.request_count(),
        fetches,
        "an unchanged token was fetched again"
    );
    assert_eq!(up_c.seen()[0].authorization[0], b_token);
    assert_eq!(reloads(admin, "success").await, 2.0);
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_without_a_restart() {
    let rig = Rig::builder()
        .mode(lifetime(2))
        .provider_head(&[
            "token_url: \"{token_url}\"",
            "client_id: cid",
            "client_secret_file: {dir}/client_secret",
        ])
        .provider("refresh: { retry_initial: 100ms, retry_max: 500ms }")
        .route("api", &["token: { provider: idp }"])
        .before_start(|idp, dir| {
            idp.accept_only_secret("old-secret");
            // The layout of a Kubernetes Secret volume: the file is a symlink into a versioned
            // directory that is swapped atomically.
            let v1 = dir.join("..v1");
            std::fs::create_dir(&v1).unwrap();
            std::fs::write(v1.join("client_secret"), "old-secret\n").unwrap();
            std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/client_secret", dir.join("client_secret")).unwrap();
        })
        .start()
        .await;
    let (idp, up, proxy) = (&rig.idp, rig.up(), &rig.proxy);
    let (admin, port) = (rig.admin(), rig.port("api"));

    // The IdP now takes only the new secret; fetches with the old one fail with invalid_client.
    idp.accept_only_secret("new-secret");
    let failing = wait_for(Duration::from_secs(10), || async {
        metric(
            admin,
            r#"tokenproxy_token_fetches_total{provider="idp",audience="",outcome="error"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert!(failing);
    let base = proxy.dir.path();
    let v2 = base.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("client_secret"), "new-secret\n").unwrap();
    std::os::unix::fs::symlink("..v2", base.join("..data_tmp")).unwrap();
    std::fs::rename(base.join("..data_tmp"), base.join("..data")).unwrap();

    let recovered = wait_for(Duration::from_secs(10), || async {
        idp.requests().last().is_some_and(|r| {
            r.params.get("client_secret").map(String::as_str) == Some("new-secret")
        }) && metric(
            admin,
            r#"tokenproxy_token_fetches_total{provider="idp",audience="",outcome="success"}"#,
        )
        .await
            >= 2.0
    })
    .await;
    assert!(recovered, "stderr:\n{}", proxy.stderr());
    let r = common::get(port, "/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.seen().last().unwrap().token_valid, Some(true));
    let log = proxy.stderr();
    assert!(log.contains("invalid_client"), "the IdP's error is logged");
    proxy.assert_log_free_of(&["old-secret".into(), "new-secret".into()]);
}

/// The rig with one route, `api`, and `shutdown_grace: grace`.
fn shutdown_rig(grace: &str) -> RigBuilder {
    Rig::builder()
        .secret(SECRET)
        .top(&format!("shutdown_grace: {grace}"))
        .route("api", &[])
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut rig = shutdown_rig("10s").start().await;
    let port = rig.port("api");
    let slow = tokio::spawn(async move {
        let r = common::get(port, "/slow?sleep_ms=1500").await;
        let s = r.status().as_u16();
        let body = r.text().await.unwrap();
        (s, body, Instant::now())
    });
    assert!(wait_for(Duration::from_secs(5), || async { rig.up().count() == 1 }).await);
    let proxy = &mut rig.proxy;
    let sent = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("did not exit");
    let exited = Instant::now();
    assert!(status.success(), "{status}; stderr:\n{}", proxy.stderr());
    let (s, body, done) = slow.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("/slow"));
    assert!(
        done <= exited + Duration::from_millis(50),
        "exited before the request was done"
    );
    assert!(
        exited - sent < Duration::from_secs(5),
        "waited for more than the request: {:?}",
        exited - sent
    );
    // No new connections once draining (the process is gone now anyway).
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn idle_sigterm_and_sigint_exit_at_once_not_after_the_grace_period() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut rig = shutdown_rig("30s").no_checker().start().await;
        // A kept-alive idle connection must not hold the exit up.
        let c = reqwest::Client::new();
        assert_eq!(
            c.get(rig.url("api", "/x")).send().await.unwrap().status(),
            200
        );
        let t = Instant::now();
        rig.proxy.signal(sig);
        let status = rig
            .proxy
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("did not exit");
        assert!(status.success(), "signal {sig}: {status}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "signal {sig}: took {:?}",
            t.elapsed()
        );
    }
}

/// Times any thread of `pid` has gone to sleep so far (`voluntary_ctxt_switches`, all threads):
/// each one is a wake-up later.
fn sleeps(pid: i32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap());
    }
    total
}

#[tokio::test]
async fn an_idle_proxy_lets_its_core_sleep() {
    for lean in [true, false] {
        let rig = Rig::builder()
            .top(&format!("lean_path: {lean}"))
            .route("api", &[])
            .route_to("tls", "{tls_up}", &["{ca_file}"])
            .also_https()
            .start()
            .await;
        // Serve some connections first, plain and TLS: pingora arms a timeout for every
        // connection it accepts, and the clock thread of its fast timeouts, once started, wakes
        // every 10 ms for good.
        for route in ["api", "tls", "api", "tls"] {
            let c = reqwest::Client::new();
            let status = c.get(rig.url(route, "/x")).send().await.unwrap().status();
            assert_eq!(status, 200, "lean_path: {lean}, route {route}");
        }
        // A window of idleness is what is measured here, so it is waited out, not polled.
        let pid = rig.proxy.pid();
        let before = sleeps(pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let woke = sleeps(pid) - before;
        // What is left: the config file poll (1/s) and the control runtime's own timers.
        assert!(
            woke < 20,
            "lean_path: {lean}: {woke} wake-ups in 2 s of idleness (a 10 ms ticker makes about 200)"
        );
    }
}
