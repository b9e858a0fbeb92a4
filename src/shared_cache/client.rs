//! The Redis side of the shared cache: get, set, lock and compare-and-delete, each bounded by
//! `shared_cache.timeout`, counted in the metrics, and logged once per distinct problem.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::SharedCacheConfig;
use crate::metrics;
use crate::secret::Secret;
use crate::shared_cache::key::RedisKeys;
use crate::shared_cache::seal::SharedToken;

/// Deletes KEYS[1] only while it still holds ARGV[1]: a lock only by its owner, a token only if
/// it is still the rejected one.
const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sets the expiry of KEYS[1] to ARGV[2] ms only while it holds ARGV[1] (a lock by its owner).
const COMPARE_AND_PEXPIRE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// After a connection could not be set up, the next attempt waits this long; operations meanwhile
/// fail at once instead of each waiting for the timeout.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {message}")]
    Redis { class: String, message: String },
    #[error("cannot read shared_cache.redis.password_file: {0}")]
    Password(String),
    #[error("redis connection being set up again")]
    Paused,
    #[error(transparent)]
    Seal(#[from] crate::shared_cache::seal::SealError),
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError::Redis {
            class: format!("{:?}", e.kind()),
            message: e.to_string(),
        }
    }
}

impl CacheError {
    fn outcome(&self) -> &'static str {
        match self {
            CacheError::Timeout(_) => "timeout",
            _ => "error",
        }
    }

    /// What kind of problem, remembered while an outage lasts.
    fn class(&self) -> String {
        match self {
            CacheError::Timeout(_) => "timeout".into(),
            CacheError::Redis { class, .. } => class.clone(),
            CacheError::Password(_) => "password".into(),
            CacheError::Paused => "paused".into(),
            CacheError::Seal(_) => "seal".into(),
        }
    }
}

/// A value read from Redis: the token and the exact bytes it was stored as (for
/// compare-and-delete).
#[derive(Debug, Clone)]
pub struct Found {
    pub token: SharedToken,
    pub sealed: Vec<u8>,
}

/// The right to fetch one token for the fleet, until `lock_ttl` passes.
#[derive(Debug)]
pub struct Lock {
    owner: String,
}

struct Conn {
    manager: ConnectionManager,
    password: Option<Secret>,
}

/// Records an operation that was dropped before it finished as a timeout.
struct Pending<'a> {
    op: &'a str,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            metrics::shared_cache_op(self.op, "timeout");
        }
    }
}

/// The shared cache: one per process, shared by every refresher.
pub struct SharedCache {
    pub config: SharedCacheConfig,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// No new connection is set up before this instant.
    pause_until: Mutex<Option<Instant>>,
    cad: Script,
    cap: Script,
    rng: SystemRandom,
    /// The class of the problem last logged; `None` while Redis answers.
    problem: Mutex<Option<String>>,
    undecryptable_logged: AtomicBool,
}

impl SharedCache {
    pub fn new(config: SharedCacheConfig) -> Self {
        metrics::shared_cache_configured();
        SharedCache {
            config,
            conn: tokio::sync::Mutex::new(None),
            pause_until: Mutex::new(None),
            cad: Script::new(COMPARE_AND_DELETE),
            cap: Script::new(COMPARE_AND_PEXPIRE),
            rng: SystemRandom::new(),
            problem: Mutex::new(None),
            undecryptable_logged: AtomicBool::new(false),
        }
    }

    /// The current token under `keys`, if one is there and opens with our keys. A value that
    /// does not open counts as a miss (logged once).
    pub async fn get(&self, keys: &RedisKeys) -> Result<Option<Found>, CacheError> {
        let raw: Option<Vec<u8>> = self
            .run("get", |mut c| async move {
                redis::cmd("GET").arg(&keys.value).query_async(&mut c).await
            })
            .await
            .inspect_err(|e| self.record("get", e.outcome()))?;
        let Some(sealed) = raw else {
            self.record("get", "miss");
            return Ok(None);
        };
        match self.config.keyring.open(&sealed, keys.value.as_bytes()) {
            Some(token) => {
                self.record("get", "hit");
                Ok(Some(Found { token, sealed }))
            }
            None => {
                self.record("get", "miss");
                if !self.undecryptable_logged.swap(true, Ordering::Relaxed) {
                    warn!(
                        key = %keys.value,
                        "shared cache: a value does not decrypt with any key of shared_cache.encryption_key_file (another key, or tampering); treated as a miss (logged once)"
                    );
                } else {
                    debug!(key = %keys.value, "shared cache: a value does not decrypt; treated as a miss");
                }
                Ok(None)
            }
        }
    }

    /// Seals `token` and stores it for `ttl`. Returns the stored bytes.
    pub async fn set(
        &self,
        keys: &RedisKeys,
        token: &SharedToken,
        ttl: Duration,
    ) -> Result<Vec<u8>, CacheError> {
        let sealed = self.config.keyring.seal(token, keys.value.as_bytes())?;
        let ms = u64::try_from(ttl.as_millis().max(1)).unwrap_or(u64::MAX);
        let bytes = sealed.clone();
        self.run("set", |mut c| async move {
            redis::cmd("SET")
                .arg(&keys.value)
                .arg(bytes)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .inspect_err(|e| self.record("set", e.outcome()))?;
        self.record("set", "ok");
        Ok(sealed)
    }

    /// Tries to take the fetch lock of `keys` for `lock_ttl`: `Some` when taken, `None` when
    /// another replica holds it.
    pub async fn lock(&self, keys: &RedisKeys) -> Result<Option<Lock>, CacheError> {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id).map_err(|_| CacheError::Redis {
            class: "random".into(),
            message: "no random lock owner".into(),
        })?;
        let owner: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let ms = u64::try_from(self.config.lock_ttl.as_millis()).unwrap_or(u64::MAX);
        let value = owner.clone();
        let taken: Option<String> = self
            .run("lock", |mut c| async move {
                redis::cmd("SET")
                    .arg(&keys.lock)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await
            .inspect_err(|e| self.record("lock", e.outcome()))?;
        if taken.is_some() {
            self.record("lock", "ok");
            Ok(Some(Lock { owner }))
        } else {
            self.record("lock", "contended");
            Ok(None)
        }
    }

    /// Releases `lock` if this replica still holds it.
    pub async fn unlock(&self, keys: &RedisKeys, lock: Lock) -> Result<(), CacheError> {
        self.compare_and_delete(&keys.lock, lock.owner.into_bytes())
            .await
            .map(|_| ())
    }

    /// Keeps `lock` for `hold` from now (after a failed fetch: the fleet waits as long as this
    /// replica's backoff before another replica asks the IdP).
    pub async fn hold(
        &self,
        keys: &RedisKeys,
        lock: Lock,
        hold: Duration,
    ) -> Result<(), CacheError> {
        let ms = u64::try_from(hold.as_millis().max(1)).unwrap_or(u64::MAX);
        let script = &self.cap;
        let owner = lock.owner;
        self.run("lock", |mut c| async move {
            script
                .key(&keys.lock)
                .arg(owner)
                .arg(ms)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .inspect_err(|e| self.record("lock", e.outcome()))?;
        self.record("lock", "ok");
        Ok(())
    }

    /// Deletes the token under `keys` only if it is still `sealed` (the rejected token).
    /// Returns whether it was deleted.
    pub async fn delete_if(&self, keys: &RedisKeys, sealed: &[u8]) -> Result<bool, CacheError> {
        self.compare_and_delete(&keys.value, sealed.to_vec()).await
    }

    async fn compare_and_delete(&self, key: &str, expected: Vec<u8>) -> Result<bool, CacheError> {
        let script = &self.cad;
        let deleted: i64 = self
            .run("delete", |mut c| async move {
                script.key(key).arg(expected).invoke_async(&mut c).await
            })
            .await
            .inspect_err(|e| self.record("delete", e.outcome()))?;
        self.record("delete", if deleted > 0 { "ok" } else { "miss" });
        Ok(deleted > 0)
    }

    fn record(&self, op: &str, outcome: &str) {
        metrics::shared_cache_op(op, outcome);
    }

    /// Runs one operation, connection set-up included, within the timeout, and logs the first
    /// failure of each kind and the recovery.
    async fn run<T, F, Fut>(&self, op: &str, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.config.timeout;
        // An operation cut short by the refresher's own deadline counts as a timeout too.
        let mut pending = Pending { op, done: false };
        let result = match tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            match f(conn).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    if !(e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout())
                    {
                        // Not a transport problem (say a wrong password): set up again later.
                        self.drop_connection().await;
                    }
                    if e.is_timeout() {
                        // The connection's own timer (the same timeout) can fire first.
                        Err(CacheError::Timeout(timeout))
                    } else {
                        Err(CacheError::from(e))
                    }
                }
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(CacheError::Timeout(timeout)),
        };
        pending.done = true;
        let mut problem = self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => {
                if problem.take().is_some() {
                    info!("shared cache: redis answers again; tokens are shared again");
                }
            }
            Err(e) => {
                // One warning per outage, whatever mix of failures it shows; the rest at debug.
                if problem.is_none() {
                    warn!(op, error = %e, "shared cache: redis unavailable; tokens are fetched from the IdP directly until it answers (logged once until then)");
                    *problem = Some(e.class());
                } else {
                    debug!(op, error = %e, "shared cache: redis still unavailable");
                }
            }
        }
        result
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
        *self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + RECONNECT_PAUSE);
    }

    /// The connection manager, set up on first use and again when the password file changed or
    /// after an error that a reconnect of the manager does not cure.
    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        let password = match &self.config.password {
            None => None,
            Some(source) => Some(
                source
                    .read()
                    .map_err(|e| CacheError::Password(e.to_string()))?,
            ),
        };
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.password == password {
                return Ok(c.manager.clone());
            }
            debug!("shared cache: the redis password file changed; connecting again");
        }
        {
            let mut pause = self
                .pause_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pause.is_some_and(|p| Instant::now() < p) {
                return Err(CacheError::Paused);
            }
            *pause = None;
        }
        let manager = self.connect(password.as_ref()).map_err(CacheError::from)?;
        *guard = Some(Conn {
            manager: manager.clone(),
            password,
        });
        Ok(manager)
    }

    fn connect(&self, password: Option<&Secret>) -> redis::RedisResult<ConnectionManager> {
        let cfg = &self.config;
        let info = cfg.url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &cfg.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = password {
            settings = settings.set_password(p.expose());
        }
        let info = info.set_redis_settings(settings);
        let client = match &cfg.ca_file {
            None => redis::Client::open(info)?,
            Some(ca) => {
                let pem = std::fs::read(&ca.path)?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )?
            }
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            // One attempt per operation: the refresher falls back at once, and the next
            // operation tries again.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        ConnectionManager::new_lazy_with_config(client, manager_config)
    }
}

/// How long a value for a token usable until `usable_until` stays in Redis, from `now`: until the
/// token stops being usable. `None` when that has passed.
pub fn ttl(usable_until: SystemTime, now: SystemTime) -> Option<Duration> {
    usable_until
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
}
