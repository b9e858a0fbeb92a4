//! The token manager: keeps one slot and one refresher task per distinct token key in the config,
//! and on reload keeps the tokens whose source did not change.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ConfigError, Endpoint};
use crate::shared_cache::{self, SharedCache};
use crate::token::cache::TokenSlot;
use crate::token::client::TokenClient;
use crate::token::refresher::{self, Source};
use crate::token::TokenKey;

struct Entry {
    slot: Arc<TokenSlot>,
    source: Arc<ArcSwap<Source>>,
    cancel: CancellationToken,
}

#[derive(Default)]
pub struct TokenManager {
    entries: Mutex<HashMap<TokenKey, Entry>>,
    /// When set, refreshers share tokens through Redis.
    shared: Option<Arc<SharedCache>>,
}

impl TokenManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// A manager whose refreshers share tokens through `shared` (`None`: each fetches its own).
    pub fn with_shared_cache(shared: Option<Arc<SharedCache>>) -> Self {
        TokenManager {
            shared,
            ..Self::default()
        }
    }

    /// Makes the set of refreshers match `config`: starts the new keys (each fetches at once,
    /// concurrently), stops the removed ones, and for kept keys swaps in the new provider settings.
    /// A key whose provider now asks for tokens differently gets a fresh slot. Must run inside the
    /// control runtime. Returns the slots by key.
    pub fn apply(&self, config: &Config) -> Result<HashMap<TokenKey, Arc<TokenSlot>>, ConfigError> {
        let mut clients = HashMap::new();
        for (name, p) in &config.providers {
            let client = TokenClient::new(p).map_err(|e| {
                ConfigError::key(
                    format!("providers.{name}"),
                    format!("cannot build the token client: {e}"),
                )
            })?;
            clients.insert(name.clone(), client);
        }
        let wanted: BTreeSet<&TokenKey> = config
            .routes
            .iter()
            .filter_map(|r| r.token.as_ref())
            .collect();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|key, entry| {
            let keep = wanted.contains(key)
                && config
                    .providers
                    .get(&key.provider)
                    .is_some_and(|p| p.same_token_source(&entry.source.load().provider));
            if !keep {
                entry.cancel.cancel();
                info!(token = %key, "token no longer used; refresher stopped");
            }
            keep
        });
        for key in wanted {
            let provider = config.providers[&key.provider].clone();
            let method = provider.auth_method.as_str();
            // Known before the first fetch: the method, and the endpoint unless discovery names it.
            let endpoint = match &provider.endpoint {
                Endpoint::TokenUrl(u) => Some(u.to_string()),
                Endpoint::Issuer(_) => None,
            };
            let source = Source {
                client: clients[&key.provider].clone(),
                provider,
            };
            match entries.get(key) {
                Some(entry) => entry.source.store(Arc::new(source)),
                None => {
                    let entry = Entry {
                        slot: Arc::new(TokenSlot::new(key.clone())),
                        source: Arc::new(ArcSwap::from_pointee(source)),
                        cancel: CancellationToken::new(),
                    };
                    let (slot, source, cancel) = (
                        entry.slot.clone(),
                        entry.source.clone(),
                        entry.cancel.clone(),
                    );
                    match &self.shared {
                        Some(cache) => tokio::spawn(shared_cache::refresher::run(
                            slot,
                            source,
                            cache.clone(),
                            cancel,
                        )),
                        None => tokio::spawn(refresher::run(slot, source, cancel)),
                    };
                    entries.insert(key.clone(), entry);
                }
            }
            if let Some(entry) = entries.get(key) {
                entry.slot.update_status(|s| {
                    s.auth_method = Some(method);
                    if endpoint.is_some() {
                        s.token_endpoint = endpoint;
                    }
                });
            }
        }
        Ok(entries
            .iter()
            .map(|(k, e)| (k.clone(), e.slot.clone()))
            .collect())
    }

    /// Makes the refreshers of `provider` that are failing try again now.
    pub fn wake_failing(&self, provider: &str) {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, entry) in entries.iter() {
            if key.provider == provider && entry.slot.status().consecutive_failures > 0 {
                entry.slot.request_refresh();
            }
        }
    }

    /// Stops every refresher.
    pub fn shutdown(&self) {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for entry in entries.values() {
            entry.cancel.cancel();
        }
    }
}
