//! An issuer's signing keys as the running proxy holds them: fetched at start-up (through
//! discovery when no `jwks_url` is set), refreshed in the background as `Cache-Control: max-age`
//! says within bounds, and fetched again for an unknown `kid` at most once per
//! [`super::jwks::MISS_REFETCH_EVERY`], one fetch at a time. The document's parsing and the timing rules are
//! in [`super::jwks`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use super::jwks::{miss_refetch_allowed, parse_jwks, refresh_after, KeySet};
use crate::config::VerifyConfig;
use crate::metrics;

/// Retry delays after a failed fetch: doubling from the first to the second.
const RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 512 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An issuer's keys, shared by the verify routes that name the same issuer and JWKS source.
pub struct Keys {
    pub issuer: String,
    jwks_url: Option<Url>,
    client: reqwest::Client,
    current: ArcSwapOption<KeySet>,
    /// When the last kid-miss fetch started.
    last_miss_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// A kid-miss fetch is under way: other tokens with unknown kids wait for it.
    miss_in_flight: AtomicBool,
    /// The JWKS URL found by discovery.
    discovered: Mutex<Option<Url>>,
    pub last_error: Mutex<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Document { url: String, message: String },
}

impl Keys {
    pub fn new(config: &VerifyConfig) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tokenproxy/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            for cert in &ca.certs {
                builder = builder.add_root_certificate(reqwest::Certificate::from_der(cert)?);
            }
        }
        Ok(Keys {
            issuer: config.issuer.clone(),
            jwks_url: config.jwks_url.clone(),
            client: builder.build()?,
            current: ArcSwapOption::empty(),
            last_miss_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            miss_in_flight: AtomicBool::new(false),
            discovered: Mutex::new(None),
            last_error: Mutex::new(None),
        })
    }

    /// The key set now in force, `None` before the first good fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Whether a token naming an unknown `kid` may make us fetch the keys now, or wait for the
    /// kid-miss fetch under way.
    pub fn miss_refetch_allowed(&self, now: Instant) -> bool {
        self.miss_in_flight.load(Ordering::Acquire)
            || miss_refetch_allowed(*lock(&self.last_miss_fetch), now)
    }

    /// Fetches the keys again for a token whose `kid` is not in the set: one fetch at a time,
    /// at most once per [`super::jwks::MISS_REFETCH_EVERY`]. Callers that came while a fetch was under way
    /// wait for it and use its result (single flight).
    pub async fn refetch_for_miss(&self) {
        let _one = self.fetching.lock().await;
        let now = Instant::now();
        {
            let mut last = lock(&self.last_miss_fetch);
            if !miss_refetch_allowed(*last, now) {
                return;
            }
            *last = Some(now);
        }
        self.miss_in_flight.store(true, Ordering::Release);
        // Cleared however this ends, a caller that went away included.
        let _clear = ClearOnDrop(&self.miss_in_flight);
        let _ = self.fetch_and_store("kid_miss").await;
    }

    /// Fetches and stores the keys; on failure keeps the set in force. Returns the refresh delay
    /// the answer asked for.
    async fn fetch_and_store(&self, why: &'static str) -> Result<Duration, FetchError> {
        let result = self.fetch().await;
        match &result {
            Ok((set, _)) => {
                metrics::jwks_refreshed(&self.issuer, "success", Some(set.keys.len()));
                let kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                info!(issuer = %self.issuer, keys = set.keys.len(), kids = ?kids, why, "signing keys fetched");
                *lock(&self.last_error) = None;
            }
            Err(e) => {
                metrics::jwks_refreshed(&self.issuer, "failure", None);
                warn!(issuer = %self.issuer, error = %e, why, "cannot fetch the signing keys; keeping the last good set");
                *lock(&self.last_error) = Some(e.to_string());
            }
        }
        result.map(|(set, after)| {
            self.current.store(Some(Arc::new(set)));
            after
        })
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), FetchError> {
        let url = match &self.jwks_url {
            Some(u) => u.clone(),
            None => self.discover().await?,
        };
        let (body, cache_control) = self.get(&url).await?;
        let set = parse_jwks(&body, SystemTime::now()).map_err(|message| FetchError::Document {
            url: url.to_string(),
            message,
        })?;
        Ok((set, refresh_after(cache_control.as_deref())))
    }

    /// The `jwks_uri` of the issuer's discovery document (OIDC's, then RFC 8414's), whose
    /// `issuer` must equal ours.
    async fn discover(&self) -> Result<Url, FetchError> {
        let doc_err = |url: &Url, message: String| FetchError::Document {
            url: url.to_string(),
            message,
        };
        let issuer = Url::parse(&self.issuer).map_err(|e| FetchError::Document {
            url: self.issuer.clone(),
            message: e.to_string(),
        })?;
        let mut last = None;
        for url in crate::token::discovery::metadata_urls(&issuer) {
            let body = match self.get(&url).await {
                Ok((body, _)) => body,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| doc_err(&url, format!("not JSON: {e}")))?;
            if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                return Err(doc_err(&url, "its issuer is not the configured one".into()));
            }
            let jwks = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| doc_err(&url, "no jwks_uri".into()))?;
            let jwks = Url::parse(jwks).map_err(|e| doc_err(&url, format!("jwks_uri: {e}")))?;
            if jwks.scheme() != "https" && issuer.scheme() == "https" {
                return Err(doc_err(&url, "jwks_uri is not https".into()));
            }
            *lock(&self.discovered) = Some(jwks.clone());
            return Ok(jwks);
        }
        Err(last.unwrap_or_else(|| doc_err(&issuer, "no discovery document".into())))
    }

    async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<String>), FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_string(),
            source,
        };
        let mut resp = self.client.get(url.clone()).send().await.map_err(http)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        let cache_control = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(FetchError::Document {
                    url: url.to_string(),
                    message: format!("larger than {MAX_DOCUMENT} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, cache_control))
    }

    /// The JWKS URL in use: configured, or found by discovery.
    pub fn jwks_url(&self) -> Option<String> {
        self.jwks_url
            .as_ref()
            .or(lock(&self.discovered).as_ref())
            .map(Url::to_string)
    }
}

/// Keeps `keys` fresh until `cancel`: fetches at once, then as the answers' `max-age` says; a
/// failure is retried with a doubling delay, keeping the last good set.
pub async fn run(keys: Arc<Keys>, cancel: CancellationToken) {
    let mut retry = RETRY.0;
    loop {
        let wait = {
            let _one = keys.fetching.lock().await;
            match keys.fetch_and_store("refresh").await {
                Ok(after) => {
                    retry = RETRY.0;
                    after
                }
                Err(_) => {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY.1);
                    wait
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key sources of the config: one [`Keys`] per issuer and JWKS source, kept across reloads
/// while unchanged.
#[derive(Default)]
pub struct KeyStore {
    entries: Mutex<HashMap<String, (Arc<Keys>, CancellationToken)>>,
}

impl KeyStore {
    /// Starts a refresher for each new source of `configs`, stops those no longer named, and
    /// returns the keys by source. Must run inside the control runtime.
    pub fn apply<'a>(
        &self,
        configs: impl Iterator<Item = &'a VerifyConfig>,
    ) -> Result<HashMap<String, Arc<Keys>>, reqwest::Error> {
        let mut wanted = HashMap::new();
        for c in configs {
            wanted.insert(source_id(c), c);
        }
        let mut entries = lock(&self.entries);
        entries.retain(|id, (_, cancel)| {
            let keep = wanted.contains_key(id);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for (id, c) in wanted {
            if entries.contains_key(&id) {
                continue;
            }
            let keys = Arc::new(Keys::new(c)?);
            let cancel = CancellationToken::new();
            tokio::spawn(run(keys.clone(), cancel.clone()));
            entries.insert(id, (keys, cancel));
        }
        Ok(entries
            .iter()
            .map(|(id, (k, _))| (id.clone(), k.clone()))
            .collect())
    }

    pub fn shutdown(&self) {
        for (_, cancel) in lock(&self.entries).values() {
            cancel.cancel();
        }
    }
}

/// What makes two verify blocks share keys: the issuer, the JWKS URL and the trust roots.
pub fn source_id(c: &VerifyConfig) -> String {
    format!(
        "{}|{}|{}",
        c.issuer,
        c.jwks_url.as_ref().map_or("", Url::as_str),
        c.ca_file
            .as_ref()
            .map_or(String::new(), |f| f.path.display().to_string())
    )
}
