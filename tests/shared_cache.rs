//! The shared token cache end to end: several real tokenproxy processes, one real `redis-server`
//! and the test IdP: one token per refresh period for the fleet, a warm start without a token
//! request, only sealed bytes in Redis, Redis killed / restarted / paused / with a wrong password
//! or another key, a rotated password, a lock left by a dead or stuck replica, TLS with an ACL
//! user, and a 401 that costs the fleet one new token.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::config::Cfg;
use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::redis::RedisServer;
use common::upstream::Upstream;
use common::{metric, wait_for};

const SECRET: &str = "shared-cache-secret";
/// `shared_cache.timeout` for the tests that are not about a slow Redis: room for a loaded CI
/// machine, so that a slow first connection does not turn into a fetch of the replica's own.
const SLACK_TIMEOUT: &str = "1s";

/// Writes a key file holding one 32-byte key filled with `byte`.
fn key_file(dir: &Path, byte: u8) -> PathBuf {
    let path = dir.join(format!("cache-key-{byte}"));
    let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path
}

#[derive(Default)]
struct Opts {
    key: PathBuf,
    password_file: Option<PathBuf>,
    timeout: &'static str,
    username: Option<&'static str>,
    ca_file: Option<PathBuf>,
}

struct Replica {
    proxy: Proxy,
}

impl Replica {
    /// The route's port, once the proxy has reported it (after `proxy.ready()`).
    fn port(&self) -> u16 {
        self.proxy.port("api")
    }
}

/// What a fleet shares: the IdP, the API (checking tokens), Redis, and a directory for key and
/// password files.
struct Bench {
    idp: Idp,
    up: Upstream,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Bench {
    /// An IdP issuing tokens for `lifetime`, an API, and `redis`.
    async fn start(lifetime: Duration, redis: RedisServer) -> Bench {
        let idp = Idp::start(Mode::Ok { lifetime }).await;
        let up = Upstream::http(Some(idp.checker())).await;
        let dir = tempfile::tempdir().unwrap();
        Bench {
            idp,
            up,
            redis,
            dir,
        }
    }

    /// Encryption key 1 (in the bench's directory), no password, and `timeout`.
    fn opts(&self, timeout: &'static str) -> Opts {
        Opts {
            key: key_file(self.dir.path(), 1),
            timeout,
            ..Opts::default()
        }
    }

    /// Starts one replica with options `o` (not waiting for it).
    fn replica(&self, o: &Opts) -> Replica {
        let (idp, up, redis) = (&self.idp, &self.up, &self.redis);
        let mut redis_lines = String::new();
        if let Some(p) = &o.password_file {
            redis_lines += &format!("    password_file: {}\n", p.display());
        }
        if let Some(u) = o.username {
            redis_lines += &format!("    username: {u}\n");
        }
        if let Some(ca) = &o.ca_file {
            redis_lines += &format!("    ca_file: {}\n", ca.display());
        }
        let yaml = Cfg::new(0, &idp.token_url(), SECRET)
            .top(&format!(
                "shared_cache:\n  redis:\n    url: {}\n{redis_lines}  encryption_key_file: {}\n  timeout: {}\n  lock_ttl: 5s",
                redis.url(),
                o.key.display(),
                o.timeout
            ))
            .provider("timeout: 2s")
            .provider("refresh: { retry_initial: 100ms, retry_max: 400ms }")
            .route(
                "api",
                0,
                &format!("http://{}", up.addr),
                &["token: { provider: idp, audience: https://api.example/ }"],
            )
            .build();
        let proxy = Proxy::start(&yaml, 0, &[("RUST_LOG", "info,tokenproxy=debug")]);
        Replica { proxy }
    }

    /// Starts `n` replicas with options `o` and waits until each is ready.
    async fn fleet(&self, n: usize, o: &Opts) -> Vec<Replica> {
        let mut fleet: Vec<Replica> = (0..n).map(|_| self.replica(o)).collect();
        for r in &mut fleet {
            r.proxy.ready().await;
        }
        fleet
    }
}

#[derive(Default, Debug)]
struct Traffic {
    ok: usize,
    bad: Vec<String>,
    slowest: Duration,
}

/// Requests from two keep-alive loops per port for `duration`.
async fn traffic(ports: &[u16], duration: Duration) -> Traffic {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        for w in 0..2 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut t = Traffic::default();
                let mut n = 0;
                while Instant::now() < end {
                    n += 1;
                    let started = Instant::now();
                    let r = client
                        .get(format!("http://127.0.0.1:{port}/r{i}/w{w}/{n}"))
                        .send()
                        .await;
                    let took = started.elapsed();
                    t.slowest = t.slowest.max(took);
                    match r {
                        Ok(r) if r.status() == 200 => {
                            t.ok += 1;
                            let _ = r.bytes().await;
                        }
                        Ok(r) => t.bad.push(format!("{} after {took:?}", r.status())),
                        Err(e) => t.bad.push(format!("{e} after {took:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                t
            }));
        }
    }
    let mut all = Traffic::default();
    for t in tasks {
        let t = t.await.unwrap();
        all.ok += t.ok;
        all.bad.extend(t.bad);
        all.slowest = all.slowest.max(t.slowest);
    }
    all
}

async fn cache_ops(r: &Replica, op: &str, outcome: &str) -> f64 {
    metric(
        r.proxy.admin,
        &format!("tokenproxy_shared_cache_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}}"),
    )
    .await
}

async fn idp_fetches(r: &Replica) -> f64 {
    metric(
        r.proxy.admin,
        "tokenproxy_token_fetches_total{provider=\"idp\",audience=\"https://api.example/\",outcome=\"success\"}",
    )
    .await
}

async fn token_source(r: &Replica) -> String {
    let v: serde_json::Value = common::fetch_json(&r.proxy.admin_url("/tokens")).await;
    v["tokens"][0]["source"].as_str().unwrap_or("").to_string()
}

fn assert_all_valid(up: &Upstream, t: &Traffic) {
    assert!(t.bad.is_empty(), "failed requests: {:?}", t.bad);
    assert!(t.ok > 50, "only {} requests", t.ok);
    let invalid = up
        .seen()
        .iter()
        .filter(|s| s.token_valid != Some(true))
        .count();
    assert_eq!(
        invalid, 0,
        "{invalid} requests reached the API without a valid token"
    );
}

#[tokio::test]
async fn the_fleet_asks_the_idp_about_once_per_refresh_period() {
    let lifetime = Duration::from_secs(3);
    let b = Bench::start(lifetime, RedisServer::start(None).await).await;
    let (idp, up) = (&b.idp, &b.up);
    let o = b.opts(SLACK_TIMEOUT);
    let fleet = b.fleet(3, &o).await;
    assert_eq!(
        idp.request_count(),
        1,
        "three replicas starting against an empty cache cost one token request"
    );
    let run = lifetime * 4;
    let ports: Vec<u16> = fleet.iter().map(Replica::port).collect();
    let t = traffic(&ports, run).await;
    assert_all_valid(up, &t);
    // Refresh at 75-80% of the lifetime: about one request per 0.8 lifetimes for the whole fleet.
    // Without the cache each replica asks on its own: three times as many.
    let per_fleet = run.as_secs_f64() / (lifetime.as_secs_f64() * 0.8) + 1.0;
    let requests = idp.request_count() as f64;
    assert!(
        requests <= per_fleet + 2.0,
        "{requests} token requests in {run:?} for 3 replicas; one fleet refresh per period is about {per_fleet:.1}, each replica on its own about {:.1}",
        per_fleet * 3.0
    );
    assert!(
        requests >= per_fleet - 1.5,
        "{requests} token requests; tokens were not refreshed"
    );
    // The proxies' own count of IdP requests agrees with the IdP: adopted tokens are not counted.
    let mut counted = 0.0;
    let mut hits = 0.0;
    for r in &fleet {
        counted += idp_fetches(r).await;
        hits += cache_ops(r, "get", "hit").await;
    }
    assert_eq!(counted, requests);
    assert!(hits >= 4.0, "replicas took {hits} tokens from Redis");
    let key = std::fs::read_to_string(&o.key).unwrap().trim().to_string();
    for r in &fleet {
        let mut secrets = idp.issued_tokens();
        secrets.push(SECRET.into());
        secrets.push(key.clone());
        r.proxy.assert_log_free_of(&secrets);
        let tokens = reqwest::get(r.proxy.admin_url("/tokens"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let metrics = common::metrics_text(r.proxy.admin).await;
        for s in &secrets {
            assert!(!tokens.contains(s.as_str()) && !metrics.contains(s.as_str()));
        }
    }
}

#[tokio::test]
async fn a_new_replica_starts_from_a_warm_cache_without_a_token_request() {
    let b = Bench::start(Duration::from_secs(60), RedisServer::start(None).await).await;
    let (idp, up) = (&b.idp, &b.up);
    let o = b.opts(SLACK_TIMEOUT);
    let first = b.fleet(1, &o).await;
    assert_eq!(idp.request_count(), 1);
    assert_eq!(token_source(&first[0]).await, "idp");
    let started = Instant::now();
    let second = b.fleet(1, &o).await;
    let took = started.elapsed();
    assert_eq!(idp.request_count(), 1, "the new replica asked the IdP");
    assert_eq!(token_source(&second[0]).await, "shared_cache");
    assert_eq!(idp_fetches(&second[0]).await, 0.0);
    assert_eq!(cache_ops(&second[0], "get", "hit").await, 1.0);
    let r = common::client()
        .get(format!("http://127.0.0.1:{}/x", second[0].port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.seen()[0].token_valid, Some(true));
    assert!(took < Duration::from_secs(10), "ready after {took:?}");
    // The new metrics pass promtool as served.
    let text = common::metrics_text(second[0].proxy.admin).await;
    for name in [
        "tokenproxy_shared_cache_requests_total{",
        "tokenproxy_shared_cache_up 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    common::assert_promtool_accepts(&text);
}

#[tokio::test]
async fn redis_holds_only_sealed_bytes_under_a_hashed_key() {
    let b = Bench::start(Duration::from_secs(60), RedisServer::start(None).await).await;
    let (idp, redis) = (&b.idp, &b.redis);
    let o = b.opts(SLACK_TIMEOUT);
    let _fleet = b.fleet(1, &o).await;
    let token = idp.issued_tokens().pop().unwrap();
    let keys = redis.keys("*");
    assert_eq!(keys.len(), 1, "one value, no lock left: {keys:?}");
    let key = &keys[0];
    assert!(key.starts_with("tokenproxy:token:"), "{key}");
    assert!(
        !key.contains("cid") && !key.contains("api.example"),
        "{key}"
    );
    let raw = redis.cli(&["GET", key]);
    assert!(raw.len() > token.len(), "{} bytes", raw.len());
    for needle in [token.as_bytes(), SECRET.as_bytes(), b"tok-"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "plaintext found in the stored value"
        );
    }
    let dump = redis.cli(&["DUMP", key]);
    assert!(!dump.windows(token.len()).any(|w| w == token.as_bytes()));
    // The value lives until the token stops being usable (60 s minus the 6 s skew), not longer.
    let pttl: i64 = String::from_utf8_lossy(&redis.cli(&["PTTL", key]))
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 50_000 && pttl <= 54_000, "PTTL {pttl}");
}

#[tokio::test]
async fn redis_killed_then_restarted_replicas_fall_back_and_come_back() {
    let lifetime = Duration::from_secs(2);
    let mut b = Bench::start(lifetime, RedisServer::start(None).await).await;
    let o = b.opts("250ms");
    let fleet = b.fleet(3, &o).await;
    let (idp, up, redis) = (&b.idp, &b.up, &mut b.redis);
    let ports: Vec<u16> = fleet.iter().map(Replica::port).collect();
    let fetched_before: Vec<f64> =
        futures_util::future::join_all(fleet.iter().map(idp_fetches)).await;

    redis.kill();
    let t = traffic(&ports, lifetime * 2).await;
    assert_all_valid(up, &t);
    // Every replica refreshed from the IdP directly while Redis was gone.
    for (i, r) in fleet.iter().enumerate() {
        let now = idp_fetches(r).await;
        assert!(
            now > fetched_before[i],
            "replica {i} did not fetch its own token"
        );
        assert_eq!(
            metric(r.proxy.admin, "tokenproxy_shared_cache_up").await,
            0.0,
            "replica {i}"
        );
    }

    redis.restart().await;
    // Give every replica one refresh period to find Redis again.
    let t = traffic(&ports, lifetime).await;
    assert_all_valid(up, &t);
    let mut before = Vec::new();
    for r in &fleet {
        before.push((
            cache_ops(r, "get", "hit").await,
            cache_ops(r, "lock", "ok").await,
            cache_ops(r, "set", "ok").await,
        ));
    }
    let idp_before = idp.request_count();
    let window = lifetime * 3;
    let t = traffic(&ports, window).await;
    assert_all_valid(up, &t);
    let requests = (idp.request_count() - idp_before) as f64;
    let per_fleet = window.as_secs_f64() / (lifetime.as_secs_f64() * 0.8) + 1.0;
    assert!(
        requests <= per_fleet + 1.0,
        "{requests} token requests in {window:?} after Redis came back; shared, about {per_fleet:.1}"
    );
    let (mut hits, mut locks, mut sets) = (0.0, 0.0, 0.0);
    for (r, (h, l, s)) in fleet.iter().zip(before) {
        let got = cache_ops(r, "get", "hit").await - h;
        assert!(
            got >= 1.0,
            "a replica read nothing from Redis after its restart"
        );
        hits += got;
        locks += cache_ops(r, "lock", "ok").await - l;
        sets += cache_ops(r, "set", "ok").await - s;
        assert_eq!(
            metric(r.proxy.admin, "tokenproxy_shared_cache_up").await,
            1.0
        );
    }
    assert!(
        locks >= 2.0 && sets >= 2.0,
        "locks {locks}, sets {sets}, hits {hits}"
    );
    let log = fleet[0].proxy.stderr();
    assert!(log.contains("redis answers again"), "{log}");
}

#[tokio::test]
async fn redis_paused_longer_than_the_timeout_blocks_no_request() {
    let lifetime = Duration::from_secs(2);
    let b = Bench::start(lifetime, RedisServer::start(None).await).await;
    let (idp, up, redis) = (&b.idp, &b.up, &b.redis);
    let o = b.opts("250ms");
    let fleet = b.fleet(2, &o).await;
    let ports: Vec<u16> = fleet.iter().map(Replica::port).collect();
    let before = idp.request_count();
    redis.signal(libc::SIGSTOP);
    let t = traffic(&ports, lifetime * 2).await;
    // A replica started while Redis is paused is ready about one timeout later.
    let started = Instant::now();
    let late = b.fleet(1, &o).await;
    let took = started.elapsed();
    redis.signal(libc::SIGCONT);
    assert!(
        took < Duration::from_secs(5),
        "ready after {took:?} with Redis paused"
    );
    assert_eq!(token_source(&late[0]).await, "idp");
    assert_all_valid(up, &t);
    assert!(
        t.slowest < Duration::from_millis(750),
        "a request took {:?} with Redis paused (timeout 250ms)",
        t.slowest
    );
    assert!(
        idp.request_count() >= before + 2,
        "the replicas did not refresh on their own"
    );
    for r in &fleet {
        assert!(cache_ops(r, "get", "timeout").await >= 1.0);
    }
    // A paused Redis is reported once, not once per operation.
    let log = fleet[0].proxy.stderr();
    assert_eq!(log.matches("redis unavailable;").count(), 1, "{log}");
    // And it is used again once it runs.
    let hits = cache_ops(&fleet[0], "get", "hit").await + cache_ops(&fleet[1], "get", "hit").await;
    let ok = wait_for(lifetime * 3, || async {
        cache_ops(&fleet[0], "get", "hit").await + cache_ops(&fleet[1], "get", "hit").await > hits
    })
    .await;
    assert!(ok, "Redis not used again after SIGCONT");
}

#[tokio::test]
async fn a_wrong_password_and_another_key_count_as_misses_logged_once() {
    let lifetime = Duration::from_secs(2);
    let b = Bench::start(lifetime, RedisServer::start(Some("right-password")).await).await;
    let up = &b.up;
    let dir = &b.dir;
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, "right-password\n").unwrap();
    std::fs::write(&wrong, "wrong-password\n").unwrap();
    let mut fleet = b
        .fleet(
            1,
            &Opts {
                key: key_file(dir.path(), 1),
                password_file: Some(right),
                timeout: "250ms",
                ..Opts::default()
            },
        )
        .await;
    fleet.extend(
        b.fleet(
            1,
            &Opts {
                key: key_file(dir.path(), 2),
                password_file: Some(dir.path().join("right")),
                timeout: "250ms",
                ..Opts::default()
            },
        )
        .await,
    );
    fleet.extend(
        b.fleet(
            1,
            &Opts {
                key: key_file(dir.path(), 1),
                password_file: Some(wrong),
                timeout: "250ms",
                ..Opts::default()
            },
        )
        .await,
    );
    let ports: Vec<u16> = fleet.iter().map(Replica::port).collect();
    let t = traffic(&ports, lifetime * 3).await;
    assert_all_valid(up, &t);
    let [same_key, other_key, wrong_pw] = [&fleet[0], &fleet[1], &fleet[2]];
    // The replica with another encryption key cannot read the first one's token: a miss, and it
    // fetched its own.
    assert!(idp_fetches(other_key).await >= 2.0);
    assert!(cache_ops(other_key, "get", "miss").await >= 2.0);
    let log = other_key.proxy.stderr();
    assert_eq!(
        log.matches("does not decrypt with any key").count(),
        1,
        "{log}"
    );
    assert!(
        same_key
            .proxy
            .stderr()
            .matches("does not decrypt with any key")
            .count()
            <= 1
    );
    // The wrong password: every token from the IdP, one warning.
    assert!(idp_fetches(wrong_pw).await >= 2.0);
    let errors =
        cache_ops(wrong_pw, "get", "error").await + cache_ops(wrong_pw, "get", "timeout").await;
    assert!(
        errors >= 2.0,
        "{errors} failed gets\n{}",
        wrong_pw.proxy.stderr()
    );
    assert_eq!(cache_ops(wrong_pw, "get", "hit").await, 0.0);
    let log = wrong_pw.proxy.stderr();
    assert_eq!(log.matches("redis unavailable;").count(), 1, "{log}");
    assert!(!log.contains("wrong-password") && !log.contains("right-password"));
}

#[tokio::test]
async fn a_rejected_token_costs_the_fleet_one_new_token() {
    let b = Bench::start(Duration::from_secs(60), RedisServer::start(None).await).await;
    let (idp, up) = (&b.idp, &b.up);
    let o = b.opts(SLACK_TIMEOUT);
    let fleet = b.fleet(3, &o).await;
    assert_eq!(idp.request_count(), 1);
    let first = idp.issued_tokens().pop().unwrap();
    up.revoke(&first);
    let client = reqwest::Client::new();
    let requests = fleet.iter().flat_map(|r| {
        let client = client.clone();
        (0..4).map(move |i| {
            let client = client.clone();
            let port = r.port();
            async move {
                client
                    .get(format!("http://127.0.0.1:{port}/after-401/{i}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(idp.request_count(), 2, "one new token for the whole fleet");
    // Every replica now sends the same new token.
    let second = idp
        .issued_tokens()
        .into_iter()
        .find(|t| *t != first)
        .unwrap();
    for r in &fleet {
        let resp = client
            .get(format!("http://127.0.0.1:{}/later", r.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let last = up.seen().pop().unwrap();
        assert_eq!(last.authorization, vec![format!("Bearer {second}")]);
    }
}

#[tokio::test]
async fn tls_and_an_acl_user_carry_the_shared_token() {
    let ca = common::tls::TestCa::new();
    let redis = RedisServer::start_tls_acl(&ca, "tokenproxy", "acl-password").await;
    let b = Bench::start(Duration::from_secs(60), redis).await;
    let idp = &b.idp;
    let dir = &b.dir;
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let password = dir.path().join("redis-password");
    std::fs::write(&password, "acl-password\n").unwrap();
    let o = Opts {
        key: key_file(dir.path(), 1),
        password_file: Some(password),
        timeout: "500ms",
        username: Some("tokenproxy"),
        ca_file: Some(ca_file),
    };
    let first = b.fleet(1, &o).await;
    assert_eq!(
        cache_ops(&first[0], "set", "ok").await,
        1.0,
        "{}",
        first[0].proxy.stderr()
    );
    let second = b.fleet(1, &o).await;
    assert_eq!(idp.request_count(), 1, "{}", second[0].proxy.stderr());
    assert_eq!(token_source(&second[0]).await, "shared_cache");
    assert_eq!(cache_ops(&second[0], "get", "hit").await, 1.0);
}

#[tokio::test]
async fn a_lock_left_by_a_dead_replica_delays_the_fetch_only_until_it_expires() {
    let b = Bench::start(Duration::from_secs(60), RedisServer::start(None).await).await;
    let (idp, redis) = (&b.idp, &b.redis);
    let o = b.opts(SLACK_TIMEOUT);
    // A first replica leaves the token's key name behind; then it "dies" holding the lock, and
    // its token is gone.
    let first = b.fleet(1, &o).await;
    drop(first);
    let value = redis.keys("tokenproxy:token:*").pop().unwrap();
    let lock = value.replace("tokenproxy:token:", "tokenproxy:lock:");
    redis.cli(&["DEL", &value]);
    redis.cli(&["SET", &lock, "dead-replica", "PX", "3000"]);
    let started = Instant::now();
    let second = b.fleet(1, &o).await;
    let took = started.elapsed();
    assert_eq!(idp.request_count(), 2, "{}", second[0].proxy.stderr());
    assert!(
        took >= Duration::from_millis(2_500),
        "fetched after {took:?}, while another replica's lock was still held"
    );
    assert!(took < Duration::from_secs(8), "ready only after {took:?}");
    assert!(cache_ops(&second[0], "lock", "contended").await >= 1.0);
    assert_eq!(cache_ops(&second[0], "lock", "ok").await, 1.0);
    assert_eq!(token_source(&second[0]).await, "idp");
    // And its token is shared again.
    assert_eq!(redis.keys("tokenproxy:token:*"), vec![value]);
}

#[tokio::test]
async fn a_rotated_redis_password_file_is_used_without_a_restart() {
    let lifetime = Duration::from_secs(2);
    let b = Bench::start(lifetime, RedisServer::start(Some("new-password")).await).await;
    let redis = &b.redis;
    let dir = &b.dir;
    let password = dir.path().join("password");
    std::fs::write(&password, "old-password\n").unwrap();
    let o = Opts {
        key: key_file(dir.path(), 1),
        password_file: Some(password.clone()),
        timeout: SLACK_TIMEOUT,
        ..Opts::default()
    };
    let fleet = b.fleet(1, &o).await;
    assert_eq!(cache_ops(&fleet[0], "set", "ok").await, 0.0);
    std::fs::write(&password, "new-password\n").unwrap();
    let ok = wait_for(lifetime * 3, || async {
        cache_ops(&fleet[0], "set", "ok").await >= 1.0
    })
    .await;
    assert!(
        ok,
        "the new password was not used\n{}",
        fleet[0].proxy.stderr()
    );
    assert_eq!(redis.keys("tokenproxy:token:*").len(), 1);
}

#[tokio::test]
async fn a_replica_whose_fleet_never_refreshes_fetches_its_own_before_expiry() {
    let lifetime = Duration::from_secs(2);
    let b = Bench::start(lifetime, RedisServer::start(None).await).await;
    let (idp, up, redis) = (&b.idp, &b.up, &b.redis);
    let o = b.opts(SLACK_TIMEOUT);
    let fleet = b.fleet(1, &o).await;
    // Another replica holds the lock and never writes a token (stuck, or its IdP calls hang).
    let value = redis.keys("tokenproxy:token:*").pop().unwrap();
    let lock = value.replace("tokenproxy:token:", "tokenproxy:lock:");
    redis.cli(&["SET", &lock, "stuck-replica", "PX", "60000"]);
    let before = idp.request_count();
    let t = traffic(&[fleet[0].port()], lifetime * 3).await;
    assert_all_valid(up, &t);
    assert!(cache_ops(&fleet[0], "lock", "contended").await >= 2.0);
    assert!(
        idp.request_count() >= before + 2,
        "the replica waited for the lock holder instead of fetching its own"
    );
    let log = fleet[0].proxy.stderr();
    assert!(
        log.contains("no new token from the shared cache in time"),
        "{log}"
    );
}
