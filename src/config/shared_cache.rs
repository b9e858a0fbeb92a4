//! Validation of the `shared_cache` block: the Redis connection, the encryption key file and the
//! timings, each error naming its key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::file::FileSharedCache;
use super::validate::{load_ca_file, opt_duration};
use super::{CaFile, ConfigError, SecretSource};
use crate::shared_cache::seal::Keyring;

/// The validated `shared_cache` block.
#[derive(Debug, Clone)]
pub struct SharedCacheConfig {
    /// `redis://` or `rediss://` with host, port and database; never credentials.
    pub url: Url,
    pub username: Option<String>,
    /// Read again whenever a connection is made, so a rotated password is picked up.
    pub password: Option<SecretSource>,
    pub ca_file: Option<Arc<CaFile>>,
    pub key_prefix: String,
    pub encryption_key_file: PathBuf,
    pub keyring: Arc<Keyring>,
    /// Per Redis operation; a slower answer counts as a failure.
    pub timeout: Duration,
    /// How long one replica may hold the right to fetch a token.
    pub lock_ttl: Duration,
}

impl SharedCacheConfig {
    /// True when a running cache can keep serving `other` (a reload that changes the block
    /// needs a restart).
    pub fn same_as(&self, other: &SharedCacheConfig) -> bool {
        self.url == other.url
            && self.username == other.username
            && self.password == other.password
            && self.ca_file == other.ca_file
            && self.key_prefix == other.key_prefix
            && self.encryption_key_file == other.encryption_key_file
            && self.timeout == other.timeout
            && self.lock_ttl == other.lock_ttl
    }
}

pub(super) fn validate(raw: FileSharedCache) -> Result<SharedCacheConfig, ConfigError> {
    let url_key = "shared_cache.redis.url";
    let r = raw.redis;
    let url = Url::parse(&r.url)
        .map_err(|e| ConfigError::key(url_key, format!("invalid URL \"{}\": {e}", r.url)))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(ConfigError::key(
                url_key,
                format!("unsupported scheme \"{other}\" (use redis:// or rediss:// for TLS)"),
            ))
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::key(url_key, "the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(
            url_key,
            "credentials in the URL are not allowed; use shared_cache.redis.username and password_file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(
            url_key,
            "a query or fragment is not allowed",
        ));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(ConfigError::key(
            url_key,
            format!("\"/{db}\" is not a database number"),
        ));
    }
    if r.username.as_deref() == Some("") {
        return Err(ConfigError::key(
            "shared_cache.redis.username",
            "must not be empty (omit it instead)",
        ));
    }
    let password = match r.password_file {
        None => None,
        Some(path) => {
            let source = SecretSource::File(PathBuf::from(&path));
            if let Err(e) = source.read() {
                return Err(ConfigError::key(
                    "shared_cache.redis.password_file",
                    format!("cannot read \"{path}\": {e}"),
                ));
            }
            Some(source)
        }
    };
    let ca_file = match r.ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(ConfigError::key(
                "shared_cache.redis.ca_file",
                "only used with a rediss:// URL",
            ))
        }
        Some(f) => Some(load_ca_file("shared_cache.redis.ca_file", &f)?),
    };
    let key_prefix = r.key_prefix.unwrap_or_else(|| "tokenproxy:".into());
    if key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::key(
            "shared_cache.redis.key_prefix",
            "must not contain spaces or control characters",
        ));
    }
    let key_file_key = "shared_cache.encryption_key_file";
    let text = std::fs::read_to_string(&raw.encryption_key_file).map_err(|e| {
        ConfigError::key(
            key_file_key,
            format!("cannot read \"{}\": {e}", raw.encryption_key_file),
        )
    })?;
    let keyring = Keyring::parse(&text).map_err(|m| {
        ConfigError::key(
            key_file_key,
            format!("\"{}\": {m}", raw.encryption_key_file),
        )
    })?;
    let timeout = opt_duration("shared_cache.timeout", raw.timeout.as_deref(), 250)?;
    let lock_ttl = opt_duration("shared_cache.lock_ttl", raw.lock_ttl.as_deref(), 15_000)?;
    for (k, v) in [
        ("shared_cache.timeout", timeout),
        ("shared_cache.lock_ttl", lock_ttl),
    ] {
        if v.is_zero() {
            return Err(ConfigError::key(k, "must be greater than 0"));
        }
    }
    if lock_ttl < timeout * 2 {
        return Err(ConfigError::key(
            "shared_cache.lock_ttl",
            "must be at least twice shared_cache.timeout",
        ));
    }
    Ok(SharedCacheConfig {
        url,
        username: r.username,
        password,
        ca_file,
        key_prefix,
        encryption_key_file: PathBuf::from(raw.encryption_key_file),
        keyring: Arc::new(keyring),
        timeout,
        lock_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use base64::Engine as _;
    use std::time::Duration;

    const ROUTES: &str = "providers:\n  p:\n    token_url: https://idp.example/oauth/token\n    client_id: cid\n    client_secret: s\nroutes:\n  - name: r\n    listen: 127.0.0.1:8081\n    upstream: http://127.0.0.1:9\n    token: { provider: p }\n";

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
            std::fs::write(dir.path().join("key"), format!("{key}\n")).unwrap();
            std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn load(&self, block: &str) -> Result<Config, String> {
            let yaml = format!(
                "{ROUTES}shared_cache:\n{}",
                block
                    .replace("KEY", &self.path("key"))
                    .replace("PW", &self.path("pw"))
            );
            Config::from_yaml(&yaml, &|_| None).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn defaults_and_a_full_block() {
        let f = Files::new();
        let c = f
            .load("  redis: { url: redis://127.0.0.1:6379/0 }\n  encryption_key_file: KEY\n")
            .unwrap();
        let sc = c.shared_cache.unwrap();
        assert_eq!(sc.key_prefix, "tokenproxy:");
        assert_eq!(sc.timeout, Duration::from_millis(250));
        assert_eq!(sc.lock_ttl, Duration::from_secs(15));
        assert!(sc.password.is_none() && sc.username.is_none());
        let c = f
            .load("  redis:\n    url: redis://redis.svc:6380/2\n    username: tp\n    password_file: PW\n    key_prefix: \"a:b:\"\n  encryption_key_file: KEY\n  timeout: 100ms\n  lock_ttl: 5s\n")
            .unwrap();
        let sc = c.shared_cache.unwrap();
        assert_eq!(sc.username.as_deref(), Some("tp"));
        assert_eq!(sc.password.unwrap().read().unwrap().expose(), "hunter2");
        assert_eq!(
            (sc.timeout, sc.lock_ttl),
            (Duration::from_millis(100), Duration::from_secs(5))
        );
        assert!(
            !format!("{:?}", sc.keyring).contains("BQUF"),
            "no key in Debug"
        );
        assert!(Config::from_yaml(ROUTES, &|_| None)
            .unwrap()
            .shared_cache
            .is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let f = Files::new();
        let key = "  encryption_key_file: KEY\n";
        let cases = [
            (
                "  redis: { url: \"http://x:1\" }\n".to_string() + key,
                "shared_cache.redis.url: unsupported scheme \"http\"",
            ),
            (
                "  redis: { url: \"redis://:pw@x:1\" }\n".to_string() + key,
                "shared_cache.redis.url: credentials in the URL",
            ),
            (
                "  redis: { url: \"redis://x:1/db\" }\n".to_string() + key,
                "shared_cache.redis.url: \"/db\" is not a database number",
            ),
            (
                "  redis: { url: \"redis://x:1\", password_file: /nonexistent/pw }\n".to_string()
                    + key,
                "shared_cache.redis.password_file: cannot read",
            ),
            (
                "  redis: { url: \"redis://x:1\", ca_file: /x.pem }\n".to_string() + key,
                "shared_cache.redis.ca_file: only used with a rediss:// URL",
            ),
            (
                "  redis: { url: \"redis://x:1\", prefix: a }\n".to_string() + key,
                "shared_cache.redis.prefix: unknown field `prefix`",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n  encryption_key_file: /nonexistent/key\n"
                    .to_string(),
                "shared_cache.encryption_key_file: cannot read",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n  encryption_key_file: PW\n".to_string(),
                "shared_cache.encryption_key_file: ",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n".to_string() + key + "  timeout: 0ms\n",
                "shared_cache.timeout: must be greater than 0",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n".to_string() + key + "  timeout: fast\n",
                "shared_cache.timeout: invalid duration",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n".to_string()
                    + key
                    + "  timeout: 1s\n  lock_ttl: 1s\n",
                "shared_cache.lock_ttl: must be at least twice",
            ),
            (
                "  redis: { url: \"redis://x:1\" }\n".to_string(),
                "shared_cache: missing field `encryption_key_file`",
            ),
        ];
        for (block, want) in cases {
            let e = f.load(&block).expect_err(&block);
            assert!(e.contains(want), "{block}\n got: {e}\nwant: {want}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
