//! Upstream targets: the resolved address of a route's upstream, kept fresh in the background,
//! its trust roots, the lean path's TLS configuration and pool, what is known of the HTTP
//! version it selects, and the pingora peer built from them for each request.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora::utils::tls::WrappedX509;
use tracing::{debug, warn};

use crate::config::{CaFile, Route, Upstream};
use crate::h1::pool::Pool;
use crate::h1::tls::LeanTls;

/// How often a host name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How long the first resolution may hold up start-up or a reload.
const FIRST_RESOLVE_WAIT: Duration = Duration::from_secs(2);
/// Pooled upstream connections idle longer than this are closed.
const POOL_IDLE: Duration = Duration::from_secs(30);

type CaList = Arc<[WrappedX509]>;

/// What an `http2: auto` route knows of the HTTP version its upstream selects.
const VERSION_UNKNOWN: u8 = 0;
const VERSION_H1: u8 = 1;
const VERSION_H2: u8 = 2;

pub struct UpstreamTarget {
    pub upstream: Upstream,
    /// The `Host` header value, built once.
    pub host_header: http::HeaderValue,
    addr: ArcSwapOption<SocketAddr>,
    /// System roots plus the route's `ca_file`, when it has one; `None` means pingora's default
    /// (the system roots).
    ca: Option<CaList>,
    /// Keeps pooled connections apart by trust roots: pingora's reuse key ignores `ca`, so a
    /// connection verified under one route's roots could otherwise serve another route.
    trust_group: u64,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// Offer h2 in the TLS handshake (HTTP/1.1 stays the fallback).
    http2: bool,
    /// With `http2`: which version the upstream selected on the last connection pingora's path
    /// opened to it (`VERSION_*`). The lean path speaks HTTP/1.1 only, so it serves the route
    /// once the upstream is known to select HTTP/1.1.
    version: AtomicU8,
    /// How the lean path speaks TLS to the upstream; `None` for plain HTTP, or for a host TLS
    /// cannot verify by name (such a route stays on pingora's path).
    lean_tls: Option<LeanTls>,
    /// Idle connections of the lean path ([`crate::h1`]); pingora's proxy keeps its own pool.
    pub pool: Pool,
}

impl UpstreamTarget {
    /// Builds the target for `route`, resolving its host (for at most a short wait) and keeping
    /// it resolved in the background for as long as the target lives. Call inside a tokio runtime.
    /// `workers` is the number of proxy worker threads, one pool shard each.
    pub async fn new(route: &Route, workers: usize) -> Arc<Self> {
        let upstream = route.upstream.clone();
        let ip: Option<IpAddr> = upstream.host.parse().ok();
        // The authority comes from a parsed URL, so it is a valid header value.
        let host_header = http::HeaderValue::from_str(&upstream.authority)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        let target = Arc::new(UpstreamTarget {
            host_header,
            addr: ArcSwapOption::from_pointee(ip.map(|ip| SocketAddr::new(ip, upstream.port))),
            ca: route.ca_file.as_deref().map(trust_roots),
            trust_group: route.ca_file.as_deref().map_or(0, trust_group),
            connect_timeout: route.connect_timeout,
            read_timeout: route.read_timeout,
            http2: route.http2 && upstream.tls,
            version: AtomicU8::new(VERSION_UNKNOWN),
            lean_tls: upstream
                .tls
                .then(|| LeanTls::new(&upstream.host, route.ca_file.as_deref()))
                .flatten(),
            pool: Pool::new(POOL_IDLE, workers),
            upstream,
        });
        tokio::spawn(keep_swept(Arc::downgrade(&target)));
        if ip.is_none() {
            let _ = tokio::time::timeout(FIRST_RESOLVE_WAIT, target.resolve()).await;
            tokio::spawn(keep_resolved(Arc::downgrade(&target)));
        }
        target
    }

    async fn resolve(&self) {
        let host = (self.upstream.host.as_str(), self.upstream.port);
        match tokio::net::lookup_host(host).await {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => {
                    if self.addr.load().as_deref() != Some(&addr) {
                        debug!(host = %self.upstream.host, %addr, "upstream resolved");
                    }
                    self.addr.store(Some(Arc::new(addr)));
                }
                None => warn!(host = %self.upstream.host, "upstream host resolved to no address"),
            },
            Err(e) => {
                warn!(host = %self.upstream.host, error = %e, "cannot resolve upstream host; keeping the last address");
            }
        }
    }

    /// The address to connect to, or `None` while the host has never resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.load().as_deref().copied()
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The longest wait for the upstream to accept or send bytes.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// How the lean path speaks TLS to this upstream (`None` for plain HTTP).
    pub fn lean_tls(&self) -> Option<&LeanTls> {
        self.lean_tls.as_ref()
    }

    /// Why the lean path leaves this upstream's requests to pingora, as a metric label; `None`
    /// when it can serve them. With `http2: auto`, a TLS upstream is pingora's until pingora's
    /// path has seen it select HTTP/1.1 (`http2_unknown`), and stays pingora's while it selects
    /// h2 (`http2_upstream`); with `http2: off` it is the lean path's from the first request.
    pub fn lean_refusal(&self) -> Option<&'static str> {
        if !self.upstream.tls {
            return None;
        }
        if self.lean_tls.is_none() {
            return Some("tls_upstream");
        }
        if !self.http2 {
            return None;
        }
        match self.version.load(Ordering::Relaxed) {
            VERSION_H1 => None,
            VERSION_H2 => Some("http2_upstream"),
            _ => Some("http2_unknown"),
        }
    }

    /// Records the HTTP version of a response pingora's path got on a connection it had just
    /// opened, so offered `h2, http/1.1`: what the upstream selects now.
    pub fn learn_version(&self, version: http::Version) {
        if self.http2 {
            let v = if version == http::Version::HTTP_2 {
                VERSION_H2
            } else {
                VERSION_H1
            };
            if self.version.swap(v, Ordering::Relaxed) != v {
                debug!(host = %self.upstream.host, h2 = v == VERSION_H2, "upstream HTTP version learnt");
            }
        }
    }

    /// The peer to send a request to, or `None` while the host has never resolved.
    pub fn peer(&self) -> Option<HttpPeer> {
        let addr = **self.addr.load().as_ref()?;
        let sni = if self.upstream.tls {
            self.upstream.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.upstream.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.total_connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.read_timeout);
        o.idle_timeout = Some(POOL_IDLE);
        if self.http2 {
            o.set_http_version(2, 1);
        }
        o.ca = self.ca.clone();
        // What goes upstream is the request policy's decision (`crate::forward`), applied in
        // `upstream_request_filter` the same way the lean path applies it; pingora's own
        // stripping of fields would be a second policy.
        o.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        peer.group_key = self.trust_group;
        Some(peer)
    }
}

async fn keep_resolved(target: Weak<UpstreamTarget>) {
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        let Some(t) = target.upgrade() else { return };
        t.resolve().await;
    }
}

/// Closes the lean path's idle connections that timed out or that the upstream closed, so that
/// an idle sidecar does not hold them.
async fn keep_swept(target: Weak<UpstreamTarget>) {
    loop {
        tokio::time::sleep(POOL_IDLE / 3).await;
        let Some(t) = target.upgrade() else { return };
        t.pool.sweep(std::time::Instant::now());
    }
}

fn trust_group(ca: &CaFile) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in &ca.certs {
        c.as_ref().hash(&mut h);
    }
    h.finish() | 1
}

/// The system roots plus the certificates of `ca`. A per-peer list replaces pingora's default
/// store, so the system roots are added here to keep public CAs trusted too.
fn trust_roots(ca: &CaFile) -> CaList {
    let mut der: Vec<Vec<u8>> = match pingora::tls::load_native_certs() {
        Ok(certs) => certs.into_iter().map(|c| c.to_vec()).collect(),
        Err(e) => {
            warn!(error = %e, "cannot load the system trust roots; trusting only the ca_file");
            Vec::new()
        }
    };
    der.extend(ca.certs.iter().map(|c| c.to_vec()));
    der.into_iter()
        // pingora parses each one again and panics on a bad one: keep only those that parse.
        .filter(|d| x509_parser::parse_x509_certificate(d).is_ok())
        .map(|d| WrappedX509::new(d, pingora::utils::tls::parse_x509))
        .collect::<Vec<_>>()
        .into()
}
