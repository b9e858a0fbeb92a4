//! Every Prometheus metric tokenproxy exports, defined in one registry, with small recording
//! functions called at the edges (proxy logging phase, refresher outcome, reload).

use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::token::client::{ErrorClass, FetchError, QuotaBucket};
use crate::token::TokenKey;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub token_unavailable: IntCounterVec,
    pub token_fetches: IntCounterVec,
    pub token_fetch_duration: HistogramVec,
    pub token_expiry: GaugeVec,
    pub token_last_success: GaugeVec,
    pub upstream_replays: IntCounterVec,
    pub pingora_handoffs: IntCounterVec,
    pub upstream_connections: IntCounterVec,
    pub upstream_tls_handshakes: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    pub client_timeouts: IntCounterVec,
    pub idp_quota_remaining: GaugeVec,
    pub idp_quota_limit: GaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: Gauge,
    pub shared_cache_requests: IntCounterVec,
    pub shared_cache_up: IntGauge,
    pub inbound_requests: IntCounterVec,
    pub jwks_refreshes: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
}

/// The process-wide metrics. Registered once: prometheus refuses a second registration.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let config_last_reload_success = Gauge::new(
            "tokenproxy_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load or reload.",
        )
        .expect("static metric definition");
        r.register(Box::new(config_last_reload_success.clone()))
            .expect("metric registered once");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "tokenproxy_build_info",
                "Always 1; the version is in the label.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        r.register(Box::new(build_info.clone()))
            .expect("metric registered once");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let shared_cache_up = IntGauge::new(
            "tokenproxy_shared_cache_up",
            "1 while the shared token cache (Redis) answered its last operation, 0 otherwise; absent without shared_cache.",
        )
        .expect("static metric definition");
        Metrics {
            requests: counter(&r, "tokenproxy_requests_total", "Proxied requests by the HTTP status the caller got.", &["route", "code"]),
            request_duration: histogram(&r, "tokenproxy_request_duration_seconds", "Request duration as the caller saw it.", &["route"]),
            upstream_errors: counter(&r, "tokenproxy_upstream_errors_total", "Requests that failed talking to the upstream, by kind (connect, timeout, tls, other).", &["route", "kind"]),
            token_unavailable: counter(&r, "tokenproxy_token_unavailable_total", "Requests refused with 503 because no valid token was available.", &["route"]),
            token_fetches: counter(&r, "tokenproxy_token_fetches_total", "Token requests to the IdP by outcome (success, error, rate_limited).", &["provider", "audience", "outcome"]),
            token_fetch_duration: histogram(&r, "tokenproxy_token_fetch_duration_seconds", "Duration of token requests to the IdP.", &["provider"]),
            token_expiry: gauge(&r, "tokenproxy_token_expiry_timestamp_seconds", "Unix time at which the current token expires.", &["provider", "audience"]),
            token_last_success: gauge(&r, "tokenproxy_token_last_success_timestamp_seconds", "Unix time of the last successful token fetch.", &["provider", "audience"]),
            upstream_replays: counter(&r, "tokenproxy_upstream_replays_total", "Requests replayed with a fresh token after the upstream rejected theirs, by outcome.", &["route", "outcome"]),
            pingora_handoffs: counter(&r, "tokenproxy_pingora_handoffs_total", "Requests the lean HTTP/1.1 path left to pingora's general proxy, by reason.", &["route", "reason"]),
            upstream_connections: counter(&r, "tokenproxy_upstream_connections_opened_total", "Connections opened to the upstream, by the path that opened it (lean, pingora); for an https upstream each is one TLS handshake.", &["route", "path"]),
            upstream_tls_handshakes: counter(&r, "tokenproxy_upstream_tls_handshakes_total", "TLS handshakes with the upstream on the lean path, by outcome (full, resumed: with a session from an earlier connection, failed).", &["route", "outcome"]),
            connections_open: int_gauge(&r, "tokenproxy_connections_open", "Caller connections open on the route's listener.", &["route"]),
            connections_refused: counter(&r, "tokenproxy_connections_refused_total", "Caller connections closed when accepted because the listener had max_connections open.", &["route"]),
            client_timeouts: counter(&r, "tokenproxy_client_timeouts_total", "Caller connections closed for slowness, by kind (header: no whole request head within client_header_timeout; write: the caller did not read its response within client_write_timeout).", &["route", "kind"]),
            idp_quota_remaining: gauge(&r, "tokenproxy_idp_quota_remaining", "Remaining token quota reported by the IdP (Auth0-Client-Quota-Limit), per bucket.", &["provider", "bucket"]),
            idp_quota_limit: gauge(&r, "tokenproxy_idp_quota_limit", "Token quota limit reported by the IdP (Auth0-Client-Quota-Limit), per bucket.", &["provider", "bucket"]),
            config_reloads: counter(&r, "tokenproxy_config_reloads_total", "Config reloads by outcome (success, error).", &["outcome"]),
            shared_cache_requests: counter(&r, "tokenproxy_shared_cache_requests_total", "Operations on the shared token cache by op (get, set, lock, delete) and outcome (hit, miss, ok, contended, error, timeout).", &["op", "outcome"]),
            inbound_requests: counter(&r, "tokenproxy_inbound_requests_total", "Requests on verify routes by outcome of the token check (allowed, missing, invalid, expired, wrong_issuer, wrong_audience, insufficient_scope).", &["route", "outcome"]),
            jwks_refreshes: counter(&r, "tokenproxy_jwks_refreshes_total", "Fetches of an issuer's signing keys (JWKS) by outcome (success, failure).", &["issuer", "outcome"]),
            jwks_keys: int_gauge(&r, "tokenproxy_jwks_keys", "Signing keys in the issuer's key set now in use.", &["issuer"]),
            config_last_reload_success,
            shared_cache_up,
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A route's request metrics with their labels resolved once, so that the request path does no
/// label lookup: the status counters are resolved the first time each status is seen.
pub struct RouteMetrics {
    route: String,
    duration: Histogram,
    unavailable: IntCounter,
    connections_open: IntGauge,
    connections_refused: IntCounter,
    header_timeouts: IntCounter,
    write_timeouts: IntCounter,
    /// Index `status - 100` for statuses 100..=599.
    codes: Box<[OnceLock<IntCounter>]>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let m = &*METRICS;
        RouteMetrics {
            route: route.to_string(),
            duration: m.request_duration.with_label_values(&[route]),
            unavailable: m.token_unavailable.with_label_values(&[route]),
            connections_open: m.connections_open.with_label_values(&[route]),
            connections_refused: m.connections_refused.with_label_values(&[route]),
            header_timeouts: m.client_timeouts.with_label_values(&[route, "header"]),
            write_timeouts: m.client_timeouts.with_label_values(&[route, "write"]),
            codes: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records a finished request: the status the caller got (0 when it got none) and how long
    /// it took.
    pub fn request(&self, status: u16, took: Duration) {
        let mut buf = itoa::Buffer::new();
        match status
            .checked_sub(100)
            .and_then(|i| self.codes.get(usize::from(i)))
        {
            Some(cell) => cell
                .get_or_init(|| {
                    METRICS
                        .requests
                        .with_label_values(&[&self.route, buf.format(status)])
                })
                .inc(),
            None => METRICS
                .requests
                .with_label_values(&[&self.route, buf.format(status)])
                .inc(),
        }
        self.duration.observe(took.as_secs_f64());
    }

    pub fn token_unavailable(&self) {
        self.unavailable.inc();
    }

    /// The gauge of open caller connections, for a connection to hold until it closes.
    pub fn connections_open(&self) -> IntGauge {
        self.connections_open.clone()
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A caller did not send a whole request head within `client_header_timeout`.
    pub fn header_timeout(&self) {
        self.header_timeouts.inc();
    }

    /// A caller did not read its response within `client_write_timeout`.
    pub fn write_timeout(&self) {
        self.write_timeouts.inc();
    }

    /// The lean path opened a connection to the upstream.
    pub fn upstream_connection_opened(&self) {
        upstream_connection_opened(&self.route, "lean");
    }

    /// A TLS handshake of the lean path: `outcome` is `full`, `resumed` or `failed`.
    pub fn tls_handshake(&self, outcome: &'static str) {
        METRICS
            .upstream_tls_handshakes
            .with_label_values(&[&self.route, outcome])
            .inc();
    }
}

/// A connection to `route`'s upstream opened by `path` (`lean` or `pingora`).
pub fn upstream_connection_opened(route: &str, path: &'static str) {
    METRICS
        .upstream_connections
        .with_label_values(&[route, path])
        .inc();
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Records a token fetch outcome: `error` is `None` on success.
pub fn token_fetched(key: &TokenKey, took: Duration, error: Option<&FetchError>) {
    let m = &*METRICS;
    let audience = key.audience.as_deref().unwrap_or("");
    let outcome = match error {
        None => "success",
        Some(e) if e.class == ErrorClass::RateLimited => "rate_limited",
        Some(_) => "error",
    };
    m.token_fetches
        .with_label_values(&[&key.provider, audience, outcome])
        .inc();
    m.token_fetch_duration
        .with_label_values(&[&key.provider])
        .observe(took.as_secs_f64());
}

/// Records the expiry and fetch time of a newly stored token.
pub fn token_stored(key: &TokenKey, fetched_at: SystemTime, expires_at: SystemTime) {
    let m = &*METRICS;
    let audience = key.audience.as_deref().unwrap_or("");
    m.token_expiry
        .with_label_values(&[&key.provider, audience])
        .set(unix_secs(expires_at));
    m.token_last_success
        .with_label_values(&[&key.provider, audience])
        .set(unix_secs(fetched_at));
}

/// Records the IdP quota buckets an answer carried.
pub fn idp_quota(provider: &str, buckets: &[QuotaBucket]) {
    let m = &*METRICS;
    for b in buckets {
        m.idp_quota_remaining
            .with_label_values(&[provider, &b.bucket])
            .set(b.remaining as f64);
        m.idp_quota_limit
            .with_label_values(&[provider, &b.bucket])
            .set(b.limit as f64);
    }
}

/// Records the config loaded at start-up (not counted as a reload).
pub fn config_loaded_at_start() {
    METRICS
        .config_last_reload_success
        .set(unix_secs(SystemTime::now()));
}

/// Records a config reload.
pub fn config_loaded(ok: bool) {
    let m = &*METRICS;
    m.config_reloads
        .with_label_values(&[if ok { "success" } else { "error" }])
        .inc();
    if ok {
        m.config_last_reload_success
            .set(unix_secs(SystemTime::now()));
    }
}

/// Records one shared-cache operation and whether Redis answered it.
pub fn shared_cache_op(op: &str, outcome: &str) {
    let m = &*METRICS;
    m.shared_cache_requests
        .with_label_values(&[op, outcome])
        .inc();
    let up = !matches!(outcome, "error" | "timeout");
    m.shared_cache_up.set(i64::from(up));
}

/// Registers the shared-cache up gauge, so that it is exported only when the cache is configured.
pub fn shared_cache_configured() {
    let m = &*METRICS;
    // A second registration (never happens: the cache is built once) is harmless.
    let _ = m.registry.register(Box::new(m.shared_cache_up.clone()));
}

/// Records the outcome of a verify route's token check.
pub fn inbound(route: &str, outcome: &str) {
    METRICS
        .inbound_requests
        .with_label_values(&[route, outcome])
        .inc();
}

/// Records a JWKS fetch; `keys` is the size of the new set on success.
pub fn jwks_refreshed(issuer: &str, outcome: &str, keys: Option<usize>) {
    let m = &*METRICS;
    m.jwks_refreshes.with_label_values(&[issuer, outcome]).inc();
    if let Some(n) = keys {
        m.jwks_keys
            .with_label_values(&[issuer])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
