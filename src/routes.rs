//! The live route table: for each listen address, the route now in force with its token slot and
//! upstream target. Reload swaps a route atomically; requests in flight keep the one they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::{Config, Existing, Route};
use crate::forward::RouteView;
use crate::metrics::RouteMetrics;
use crate::token::cache::TokenSlot;
use crate::token::TokenKey;
use crate::upstream::UpstreamTarget;

/// A route with everything the request path needs.
pub struct RouteState {
    pub route: Route,
    pub slot: Arc<TokenSlot>,
    pub format_index: usize,
    pub target: Arc<UpstreamTarget>,
    /// How long a request may wait for a token being fetched (the provider's timeout).
    pub fetch_timeout: std::time::Duration,
    pub metrics: RouteMetrics,
}

impl RouteState {
    /// What the request policy ([`crate::forward::plan`]) needs to know about this route.
    pub fn view(&self) -> RouteView<'_> {
        RouteView {
            token_header: &self.route.header,
            keep_callers: self.route.existing == Existing::Keep,
            upstream_authority: &self.target.upstream.authority,
            upstream_port: self.target.upstream.port,
            listen: self.route.listen,
        }
    }
}

/// Listen addresses are fixed for the process's life; what they serve is not.
pub struct RouteTable {
    listeners: HashMap<SocketAddr, ArcSwapOption<RouteState>>,
    access_log: AtomicBool,
    lean_path: AtomicBool,
    /// Set once every listener has been seen accepting connections.
    listening: AtomicBool,
}

impl RouteTable {
    /// An empty table with one listener per route of `config`.
    pub fn new(config: &Config) -> Self {
        RouteTable {
            listeners: config
                .routes
                .iter()
                .map(|r| (r.listen, ArcSwapOption::empty()))
                .collect(),
            access_log: AtomicBool::new(config.log.access),
            lean_path: AtomicBool::new(config.lean_path),
            listening: AtomicBool::new(false),
        }
    }

    pub fn listen_addrs(&self) -> impl Iterator<Item = &SocketAddr> {
        self.listeners.keys()
    }

    /// Puts the routes of `config` in force. Routes whose listen address is not bound are
    /// returned (they need a restart); listeners that lost their route stop serving.
    pub async fn apply(
        &self,
        config: &Config,
        slots: &HashMap<TokenKey, Arc<TokenSlot>>,
    ) -> Vec<String> {
        let mut states = HashMap::new();
        let mut unbound = Vec::new();
        for route in &config.routes {
            if !self.listeners.contains_key(&route.listen) {
                unbound.push(format!("{} ({})", route.name, route.listen));
                continue;
            }
            let (Some(slot), Some(provider)) = (
                slots.get(&route.token),
                config.providers.get(&route.token.provider),
            ) else {
                continue;
            };
            let state = RouteState {
                metrics: RouteMetrics::new(&route.name),
                fetch_timeout: provider.timeout,
                format_index: slot.format_index(&route.format),
                slot: slot.clone(),
                target: UpstreamTarget::new(route, config.threads).await,
                route: route.clone(),
            };
            states.insert(route.listen, Arc::new(state));
        }
        for (addr, cell) in &self.listeners {
            cell.store(states.remove(addr));
        }
        self.access_log.store(config.log.access, Ordering::Relaxed);
        self.lean_path.store(config.lean_path, Ordering::Relaxed);
        unbound
    }

    /// The route serving the listener that accepted a connection on `local`. A listener bound to
    /// a wildcard address sees the connection's concrete local address, so fall back to it.
    pub fn lookup(&self, local: &SocketAddr) -> Option<Arc<RouteState>> {
        let cell = self.listeners.get(local).or_else(|| {
            let any = match local {
                SocketAddr::V4(_) => SocketAddr::new([0, 0, 0, 0].into(), local.port()),
                SocketAddr::V6(_) => {
                    SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port())
                }
            };
            self.listeners.get(&any)
        })?;
        cell.load_full()
    }

    /// All routes now in force.
    pub fn routes(&self) -> Vec<Arc<RouteState>> {
        self.listeners
            .values()
            .filter_map(|c| c.load_full())
            .collect()
    }

    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// True once the proxy accepts connections on every listen address.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Whether plain requests take the lean path ([`crate::h1`]) rather than pingora's proxy.
    pub fn lean_path(&self) -> bool {
        self.lean_path.load(Ordering::Relaxed)
    }
}
