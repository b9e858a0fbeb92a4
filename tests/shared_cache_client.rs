//! The shared cache's Redis operations one by one against a real `redis-server`: sealed values,
//! compare-and-delete of a token and of a lock, the lock's expiry, a foreign value as a miss, and
//! the per-operation timeout against a stopped server.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::redis::RedisServer;
use tokenproxy::config::Config;
use tokenproxy::secret::Secret;
use tokenproxy::shared_cache::client::CacheError;
use tokenproxy::shared_cache::key::{self, RedisKeys};
use tokenproxy::shared_cache::seal::SharedToken;
use tokenproxy::shared_cache::SharedCache;

/// A cache on `redis` with a fresh key, and the Redis keys of the config's one token.
fn cache(redis: &RedisServer, dir: &std::path::Path, timeout: &str) -> (SharedCache, RedisKeys) {
    let key_file = dir.join("key");
    let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let yaml = format!(
        "shared_cache:\n  redis: {{ url: \"{}\" }}\n  encryption_key_file: {}\n  timeout: {timeout}\n  lock_ttl: 3s\nproviders:\n  p:\n    token_url: http://127.0.0.1:9/oauth/token\n    client_id: cid\n    client_secret: s\nroutes:\n  - name: r\n    listen: 127.0.0.1:9\n    upstream: http://127.0.0.1:9\n    token: {{ provider: p, audience: a }}\n",
        redis.url(),
        key_file.display()
    );
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let keys = key::derive(
        "tokenproxy:",
        &config.providers["p"],
        config.routes[0].token.as_ref().unwrap(),
    );
    (SharedCache::new(config.shared_cache.unwrap()), keys)
}

fn token(name: &str) -> SharedToken {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let now = UNIX_EPOCH + Duration::from_millis(now.as_millis() as u64);
    SharedToken {
        token: Secret::new(name),
        fetched_at: now,
        expires_at: now + Duration::from_secs(60),
    }
}

fn pttl(redis: &RedisServer, key: &str) -> i64 {
    String::from_utf8_lossy(&redis.cli(&["PTTL", key]))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_token_is_deleted_only_while_redis_still_holds_it() {
    let redis = RedisServer::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, keys) = cache(&redis, dir.path(), "1s");
    assert!(cache.get(&keys).await.unwrap().is_none());
    let written = token("first");
    let first = cache
        .set(&keys, &written, Duration::from_secs(30))
        .await
        .unwrap();
    let ttl = pttl(&redis, &keys.value);
    assert!(ttl > 29_000 && ttl <= 30_000, "PTTL {ttl}");
    let found = cache.get(&keys).await.unwrap().unwrap();
    assert_eq!(found.token, written);
    assert_eq!(found.sealed, first);
    // Another replica wrote a newer token: the rejected one's bytes no longer match.
    let second = cache
        .set(&keys, &token("second"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!cache.delete_if(&keys, &first).await.unwrap());
    assert_eq!(
        cache.get(&keys).await.unwrap().unwrap().token.token,
        Secret::new("second")
    );
    assert!(cache.delete_if(&keys, &second).await.unwrap());
    assert!(cache.get(&keys).await.unwrap().is_none());
    assert!(!cache.delete_if(&keys, &second).await.unwrap());
}

#[tokio::test]
async fn the_lock_has_one_holder_expires_and_is_released_only_by_it() {
    let redis = RedisServer::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, keys) = cache(&redis, dir.path(), "1s");
    let lock = cache.lock(&keys).await.unwrap().expect("free lock taken");
    assert!(cache.lock(&keys).await.unwrap().is_none(), "contended");
    let ttl = pttl(&redis, &keys.lock);
    assert!(ttl > 2_000 && ttl <= 3_000, "lock PTTL {ttl}");
    cache.unlock(&keys, lock).await.unwrap();
    assert!(redis.keys("tokenproxy:lock:*").is_empty());

    // A lock that expired and was taken by another replica is not released by the old holder.
    let stale = cache.lock(&keys).await.unwrap().unwrap();
    redis.cli(&["SET", &keys.lock, "another-replica", "PX", "3000"]);
    cache.unlock(&keys, stale).await.unwrap();
    assert_eq!(redis.cli(&["GET", &keys.lock]), b"another-replica\n");

    // After a failed fetch the holder keeps the lock for its backoff.
    redis.cli(&["DEL", &keys.lock]);
    let held = cache.lock(&keys).await.unwrap().unwrap();
    cache
        .hold(&keys, held, Duration::from_millis(400))
        .await
        .unwrap();
    let ttl = pttl(&redis, &keys.lock);
    assert!(ttl > 0 && ttl <= 400, "held PTTL {ttl}");
    let free = common::wait_for(Duration::from_secs(2), || async {
        redis.keys("tokenproxy:lock:*").is_empty()
    })
    .await;
    assert!(free, "the held lock did not expire");
    assert!(cache.lock(&keys).await.unwrap().is_some());
}

#[tokio::test]
async fn a_value_that_does_not_open_is_a_miss() {
    let redis = RedisServer::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, keys) = cache(&redis, dir.path(), "1s");
    redis.cli(&["SET", &keys.value, "not-sealed-by-us"]);
    assert!(cache.get(&keys).await.unwrap().is_none());
    // A value sealed for another Redis key (copied over) does not open either.
    let other = RedisKeys {
        value: "tokenproxy:token:other".into(),
        lock: "tokenproxy:lock:other".into(),
    };
    cache
        .set(&other, &token("t"), Duration::from_secs(30))
        .await
        .unwrap();
    redis.cli(&["COPY", &other.value, &keys.value, "REPLACE"]);
    assert!(cache.get(&keys).await.unwrap().is_none());
    assert!(cache.get(&other).await.unwrap().is_some());
}

#[tokio::test]
async fn a_stopped_redis_costs_one_timeout_per_operation() {
    let redis = RedisServer::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (cache, keys) = cache(&redis, dir.path(), "200ms");
    assert!(cache.get(&keys).await.unwrap().is_none());
    redis.signal(libc::SIGSTOP);
    for _ in 0..3 {
        let started = Instant::now();
        let e = cache.get(&keys).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, CacheError::Timeout(_)), "{e}");
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
    redis.signal(libc::SIGCONT);
    let back = common::wait_for(Duration::from_secs(3), || async {
        cache.get(&keys).await.is_ok()
    })
    .await;
    assert!(back, "redis not used again after SIGCONT");
}
