//! The live route table: for each listen address, the route now in force with its token slot and
//! upstream target, and the caller connections it has open. Reload swaps a route atomically;
//! requests in flight keep the one they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::{CallerLimits, Config, Existing, Route};
use crate::forward::RouteView;
use crate::metrics::RouteMetrics;
use crate::token::cache::TokenSlot;
use crate::token::TokenKey;
use crate::upstream::UpstreamTarget;
use crate::verify::keys::{source_id, Keys};
use crate::verify::Verifier;

/// A route with everything the request path needs.
pub struct RouteState {
    pub route: Route,
    /// The token injected; `None` on a verify route.
    pub slot: Option<Arc<TokenSlot>>,
    /// The inbound token check; `Some` exactly on a verify route.
    pub verifier: Option<Arc<Verifier>>,
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
            verify: self.route.verify.as_ref().map(|v| v.strip_authorization),
            claim_headers: self
                .route
                .verify
                .as_ref()
                .map_or(&[][..], |v| &v.forward_claims[..]),
        }
    }
}

/// One listen address: the route it serves now, and its caller connections.
#[derive(Default)]
pub struct Listener {
    route: ArcSwapOption<RouteState>,
    /// Caller connections open on this listener (see [`crate::h1::limits`]).
    pub open: Arc<AtomicUsize>,
}

impl Listener {
    pub fn route(&self) -> Option<Arc<RouteState>> {
        self.route.load_full()
    }
}

/// Listen addresses are fixed for the process's life; what they serve is not.
pub struct RouteTable {
    listeners: HashMap<SocketAddr, Listener>,
    access_log: AtomicBool,
    lean_path: AtomicBool,
    /// [`CallerLimits`], each part on its own: read once per accepted connection.
    header_timeout_ms: AtomicU64,
    write_timeout_ms: AtomicU64,
    max_connections: AtomicUsize,
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
                .map(|r| (r.listen, Listener::default()))
                .collect(),
            access_log: AtomicBool::new(config.log.access),
            lean_path: AtomicBool::new(config.lean_path),
            header_timeout_ms: AtomicU64::new(millis(config.callers.header_timeout)),
            write_timeout_ms: AtomicU64::new(millis(config.callers.write_timeout)),
            max_connections: AtomicUsize::new(config.callers.max_connections),
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
        keys: &HashMap<String, Arc<Keys>>,
    ) -> Vec<String> {
        let mut states = HashMap::new();
        let mut unbound = Vec::new();
        for route in &config.routes {
            if !self.listeners.contains_key(&route.listen) {
                unbound.push(format!("{} ({})", route.name, route.listen));
                continue;
            }
            let (slot, verifier, fetch_timeout) = match (&route.token, &route.verify) {
                (Some(token), _) => {
                    let (Some(slot), Some(provider)) =
                        (slots.get(token), config.providers.get(&token.provider))
                    else {
                        continue;
                    };
                    (Some(slot.clone()), None, provider.timeout)
                }
                (None, Some(v)) => {
                    let Some(k) = keys.get(&source_id(v)) else {
                        continue;
                    };
                    let verifier = Verifier::new(&route.name, v.clone(), k.clone());
                    (None, Some(Arc::new(verifier)), Duration::ZERO)
                }
                (None, None) => continue,
            };
            let state = RouteState {
                metrics: RouteMetrics::new(&route.name),
                fetch_timeout,
                format_index: slot.as_ref().map_or(0, |s| s.format_index(&route.format)),
                slot,
                verifier,
                target: UpstreamTarget::new(route, config.threads).await,
                route: route.clone(),
            };
            states.insert(route.listen, Arc::new(state));
        }
        for (addr, listener) in &self.listeners {
            listener.route.store(states.remove(addr));
        }
        self.access_log.store(config.log.access, Ordering::Relaxed);
        self.lean_path.store(config.lean_path, Ordering::Relaxed);
        let c = &config.callers;
        self.header_timeout_ms
            .store(millis(c.header_timeout), Ordering::Relaxed);
        self.write_timeout_ms
            .store(millis(c.write_timeout), Ordering::Relaxed);
        self.max_connections
            .store(c.max_connections, Ordering::Relaxed);
        unbound
    }

    /// The route serving the listener that accepted a connection on `local`. A listener bound to
    /// a wildcard address sees the connection's concrete local address, so fall back to it.
    pub fn lookup(&self, local: &SocketAddr) -> Option<Arc<RouteState>> {
        self.listener(local)?.route()
    }

    /// The listener that accepted a connection on `local` (see [`RouteTable::lookup`]).
    pub fn listener(&self, local: &SocketAddr) -> Option<&Listener> {
        self.listeners.get(local).or_else(|| {
            let any = match local {
                SocketAddr::V4(_) => SocketAddr::new([0, 0, 0, 0].into(), local.port()),
                SocketAddr::V6(_) => {
                    SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port())
                }
            };
            self.listeners.get(&any)
        })
    }

    /// All routes now in force.
    pub fn routes(&self) -> Vec<Arc<RouteState>> {
        self.listeners
            .values()
            .filter_map(Listener::route)
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

    /// The caller limits now in force, for a connection being accepted.
    pub fn callers(&self) -> CallerLimits {
        CallerLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms.load(Ordering::Relaxed)),
            write_timeout: Duration::from_millis(self.write_timeout_ms.load(Ordering::Relaxed)),
            max_connections: self.max_connections.load(Ordering::Relaxed),
        }
    }

    /// Whether plain requests take the lean path ([`crate::h1`]) rather than pingora's proxy.
    pub fn lean_path(&self) -> bool {
        self.lean_path.load(Ordering::Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
