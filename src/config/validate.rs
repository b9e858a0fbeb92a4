//! From the file as written ([`super::file`]) to the checked [`Config`]: every value parsed and
//! checked, every error naming its key.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::file::{FileConfig, FileProvider, FileRefresh};
use super::model::*;
use super::route::{self, parse_listen};
use super::{credentials, parse_duration, shared_cache, ConfigError};
use crate::token::schedule::RefreshPolicy;

/// Token-request parameters that come from the provider or the route, never from `params`.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "audience",
    "scope",
    "resource",
];

/// Bounds of `client_header_timeout` and `client_write_timeout`.
const CALLER_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));
/// Bounds of `max_connections`.
const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 1_000_000);

/// Provider and route names end up in logs and metric labels: letters, digits, `-`, `_`, `.`.
pub(super) fn check_name(key: &str, what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::key(
            key,
            format!("\"{name}\" is not a valid {what} name (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

pub(super) fn validate(raw: FileConfig) -> Result<Config, ConfigError> {
    let admin_listen = match raw.admin.listen {
        Some(s) => parse_listen("admin.listen", &s)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };
    let log = LogConfig {
        level: raw.log.level.unwrap_or_else(|| "info".into()),
        format: raw.log.format,
        access: raw.log.access,
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        return Err(ConfigError::key(
            "log.level",
            format!("invalid level \"{}\": {e}", log.level),
        ));
    }
    let shutdown_grace = opt_duration("shutdown_grace", raw.shutdown_grace.as_deref(), 10_000)?;
    let threads = raw.threads.unwrap_or(1);
    if !(1..=64).contains(&threads) {
        return Err(ConfigError::key(
            "threads",
            format!("{threads} is not in 1..=64"),
        ));
    }

    let callers = validate_callers(
        raw.client_header_timeout.as_deref(),
        raw.client_write_timeout.as_deref(),
        raw.max_connections,
    )?;

    let mut providers = BTreeMap::new();
    for (name, p) in raw.providers {
        let provider = validate_provider(&name, p)?;
        providers.insert(name, Arc::new(provider));
    }

    if raw.routes.is_empty() {
        return Err(ConfigError::key("routes", "at least one route is required"));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    listens.insert(admin_listen);
    for (i, r) in raw.routes.into_iter().enumerate() {
        let route = route::validate_route(&format!("routes[{i}]"), r, &providers)?;
        if !names.insert(route.name.clone()) {
            return Err(ConfigError::key(
                format!("routes[{i}].name"),
                format!("duplicate route name \"{}\"", route.name),
            ));
        }
        // Port 0 asks for a port of the kernel's choosing: each such route gets its own.
        if route.listen.port() != 0 && !listens.insert(route.listen) {
            return Err(ConfigError::key(
                format!("routes[{i}].listen"),
                format!(
                    "address {} is already used by another route or the admin listener",
                    route.listen
                ),
            ));
        }
        routes.push(route);
    }
    let shared_cache = raw.shared_cache.map(shared_cache::validate).transpose()?;
    Ok(Config {
        admin_listen,
        log,
        shutdown_grace,
        threads,
        lean_path: raw.lean_path.unwrap_or(true),
        callers,
        providers,
        routes,
        shared_cache,
    })
}

fn validate_callers(
    header_timeout: Option<&str>,
    write_timeout: Option<&str>,
    max_connections: Option<usize>,
) -> Result<CallerLimits, ConfigError> {
    let d = CallerLimits::default();
    let (min, max) = CALLER_TIMEOUT_RANGE;
    let timeout = |key: &str, value: Option<&str>, default: Duration| {
        let v = match value {
            None => default,
            Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key, m))?,
        };
        if !(min..=max).contains(&v) {
            return Err(ConfigError::key(key, "must be between 1s and 10m"));
        }
        Ok(v)
    };
    let header_timeout = timeout("client_header_timeout", header_timeout, d.header_timeout)?;
    let write_timeout = timeout("client_write_timeout", write_timeout, d.write_timeout)?;
    let max_connections = max_connections.unwrap_or(d.max_connections);
    let (lo, hi) = MAX_CONNECTIONS_RANGE;
    if !(lo..=hi).contains(&max_connections) {
        return Err(ConfigError::key(
            "max_connections",
            format!("{max_connections} is not in {lo}..={hi}"),
        ));
    }
    Ok(CallerLimits {
        header_timeout,
        write_timeout,
        max_connections,
    })
}

fn validate_provider(name: &str, mut p: FileProvider) -> Result<Provider, ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    check_name(&format!("providers.{name}"), "provider", name)?;
    let endpoint = credentials::validate_endpoint(name, &p)?;
    if p.client_id.is_empty() {
        return Err(ConfigError::key(key("client_id"), "must not be empty"));
    }
    let (auth_method, credential) = credentials::validate_credential(name, &mut p, &endpoint)?;
    let body = p.body;
    for k in p.params.keys() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            return Err(ConfigError::key(
                format!("providers.{name}.params.{k}"),
                format!("\"{k}\" cannot be set in params (it is set from the provider or the route's token)"),
            ));
        }
    }
    let timeout = opt_duration(&key("timeout"), p.timeout.as_deref(), 10_000)?;
    if timeout.is_zero() {
        return Err(ConfigError::key(key("timeout"), "must be greater than 0"));
    }
    let ca_file = p
        .ca_file
        .as_deref()
        .map(|f| load_ca_file(&key("ca_file"), f))
        .transpose()?;
    let refresh = validate_refresh(&format!("providers.{name}.refresh"), p.refresh)?;
    Ok(Provider {
        name: name.to_string(),
        endpoint,
        client_id: p.client_id,
        credential,
        auth_method,
        body,
        params: p.params.into_iter().collect(),
        timeout,
        ca_file,
        refresh,
    })
}

fn validate_refresh(prefix: &str, r: FileRefresh) -> Result<RefreshPolicy, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let d = RefreshPolicy::default();
    let ratio = r.ratio.unwrap_or(d.ratio);
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(ConfigError::key(
            key("ratio"),
            format!("{ratio} is not in (0, 1]"),
        ));
    }
    let jitter = r.jitter.unwrap_or(d.jitter);
    if !(0.0..ratio).contains(&jitter) {
        return Err(ConfigError::key(
            key("jitter"),
            format!("{jitter} is not in [0, ratio) = [0, {ratio})"),
        ));
    }
    let dur = |k: &str, v: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key(k), m)),
        }
    };
    let expiry_skew = dur("expiry_skew", r.expiry_skew.as_deref(), d.expiry_skew)?;
    let retry_initial = dur("retry_initial", r.retry_initial.as_deref(), d.retry_initial)?;
    let retry_max = dur("retry_max", r.retry_max.as_deref(), d.retry_max)?;
    let default_lifetime = dur(
        "default_lifetime",
        r.default_lifetime.as_deref(),
        d.default_lifetime,
    )?;
    if retry_initial.is_zero() {
        return Err(ConfigError::key(
            key("retry_initial"),
            "must be greater than 0",
        ));
    }
    if retry_max < retry_initial {
        return Err(ConfigError::key(
            key("retry_max"),
            "must be at least retry_initial",
        ));
    }
    if default_lifetime.is_zero() {
        return Err(ConfigError::key(
            key("default_lifetime"),
            "must be greater than 0",
        ));
    }
    Ok(RefreshPolicy {
        ratio,
        jitter,
        expiry_skew,
        retry_initial,
        retry_max,
        default_lifetime,
    })
}

pub(super) fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

pub(super) fn opt_duration(
    key: &str,
    value: Option<&str>,
    default_ms: u64,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(Duration::from_millis(default_ms)),
        Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key, m)),
    }
}

pub(super) fn load_ca_file(key: &str, path: &str) -> Result<Arc<CaFile>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read \"{path}\": {e}")))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert =
            item.map_err(|e| ConfigError::key(key, format!("\"{path}\" is not valid PEM: {e}")))?;
        // pingora parses these again when it connects and panics on a bad one: check them here.
        if x509_parser::parse_x509_certificate(&cert).is_err() {
            return Err(ConfigError::key(
                key,
                format!("\"{path}\" contains a certificate that cannot be parsed"),
            ));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(ConfigError::key(
            key,
            format!("\"{path}\" contains no certificate"),
        ));
    }
    Ok(Arc::new(CaFile {
        path: PathBuf::from(path),
        certs,
    }))
}
