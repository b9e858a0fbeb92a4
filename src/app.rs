//! The running proxy's state that the control plane shares: the config in force, the token
//! manager, the verify routes' key store and the route table, and how a new config is put in force (at start-up and on
//! reload). [`crate::server`] builds it; [`crate::reload`] and [`crate::admin`] use it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::listeners;
use crate::routes::RouteTable;
use crate::token::manager::TokenManager;
use crate::verify::keys::{KeyStore, Keys};

/// The state shared by the control plane.
pub struct App {
    /// The file to reload from; `None` for a config built in memory (the demo).
    pub config_path: Option<PathBuf>,
    pub config: ArcSwap<Config>,
    /// What each port-0 route's address became at start-up, for reloads.
    pub resolved_listens: BTreeMap<String, SocketAddr>,
    pub tokens: TokenManager,
    /// The signing keys of the verify routes' issuers.
    pub keys: KeyStore,
    pub routes: Arc<RouteTable>,
}

impl App {
    /// Puts `config` in force: tokens first, so that every route finds its slot, then routes.
    /// Returns the routes that need a restart to be served (new listen addresses).
    pub async fn apply(&self, config: Config) -> Result<Vec<String>, ConfigError> {
        let slots = self.tokens.apply(&config)?;
        let keys = self.apply_keys(&config)?;
        let unbound = self.routes.apply(&config, &slots, &keys).await;
        self.config.store(Arc::new(config));
        Ok(unbound)
    }

    /// Like [`App::apply`], for a reload: a route that moves to a token not in force before
    /// waits (up to its provider's timeout) for that token before taking over, so that the switch
    /// does not turn into 503s while the first fetch is under way.
    pub async fn reload(&self, mut config: Config) -> Result<Vec<String>, ConfigError> {
        config.admin_listen = self.config.load().admin_listen;
        listeners::apply_resolved(&mut config, &self.resolved_listens);
        let in_force: Vec<_> = self
            .routes
            .routes()
            .into_iter()
            .filter_map(|r| r.slot.clone())
            .collect();
        let slots = self.tokens.apply(&config)?;
        let keys = self.apply_keys(&config)?;
        // Only tokens new to this reload are waited for; a kept token that is failing does not
        // hold the reload up.
        let waits = config.routes.iter().filter_map(|r| {
            let token = r.token.as_ref()?;
            let slot = slots.get(token)?.clone();
            if in_force.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                return None;
            }
            let timeout = config.providers.get(&token.provider)?.timeout;
            Some(async move { slot.wait_usable(timeout).await })
        });
        futures_util::future::join_all(waits).await;
        let unbound = self.routes.apply(&config, &slots, &keys).await;
        self.config.store(Arc::new(config));
        Ok(unbound)
    }

    /// Starts the key refreshers the verify routes of `config` need, stops the unused ones.
    fn apply_keys(
        &self,
        config: &Config,
    ) -> Result<std::collections::HashMap<String, Arc<Keys>>, ConfigError> {
        let verify = config.routes.iter().filter_map(|r| r.verify.as_deref());
        self.keys
            .apply(verify)
            .map_err(|e| ConfigError::key("routes", format!("cannot build the JWKS client: {e}")))
    }
}
