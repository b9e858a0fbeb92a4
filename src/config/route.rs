//! `routes[]`: each route's listen address, upstream URL, token, header and replay settings,
//! checked into a [`Route`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderName;
use url::Url;

use super::file::{FileRoute, FileRouteToken, Http2};
use super::model::*;
use super::validate::{check_name, load_ca_file, opt_duration};
use super::ConfigError;
use crate::token::TokenKey;

pub(super) fn validate_route(
    prefix: &str,
    r: FileRoute,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    check_name(&key("name"), "route", &r.name)?;
    let listen = parse_listen(&key("listen"), &r.listen)?;
    let upstream = parse_upstream(&key("upstream"), &r.upstream)?;
    let (token, verify) = match (r.token, r.verify) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ConfigError::key(
                prefix,
                "a route has exactly one of token (inject) and verify (check inbound tokens)",
            ))
        }
        (Some(t), None) => (Some(validate_token(prefix, t, providers)?), None),
        (None, Some(v)) => {
            for (k, set) in [
                ("header", r.header.is_some()),
                ("format", r.format.is_some()),
                ("retry_on_status", r.retry_on_status.is_some()),
                ("replay", r.replay.is_some()),
                ("replay_buffer", r.replay_buffer.is_some()),
            ] {
                if set {
                    return Err(ConfigError::key(
                        key(k),
                        "applies to token injection only; a verify route injects no token",
                    ));
                }
            }
            let v = super::verify::validate(&key("verify"), v)?;
            (None, Some(Arc::new(v)))
        }
    };
    let header_name = r.header.as_deref().unwrap_or("Authorization");
    let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ConfigError::key(
            key("header"),
            format!("invalid header name \"{header_name}\""),
        )
    })?;
    if [
        http::header::HOST,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
        http::header::UPGRADE,
        http::header::TE,
    ]
    .contains(&header)
    {
        return Err(ConfigError::key(
            key("header"),
            format!("\"{header_name}\" cannot carry the token"),
        ));
    }
    let format = HeaderFormat::parse(r.format.as_deref().unwrap_or("Bearer {token}"))
        .map_err(|m| ConfigError::key(key("format"), m))?;
    let existing = r.existing;
    let ca_file = r
        .ca_file
        .as_deref()
        .map(|f| load_ca_file(&key("ca_file"), f))
        .transpose()?;
    let connect_timeout =
        opt_duration(&key("connect_timeout"), r.connect_timeout.as_deref(), 5_000)?;
    let read_timeout = opt_duration(&key("read_timeout"), r.read_timeout.as_deref(), 60_000)?;
    for (k, v) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
    ] {
        if v.is_zero() {
            return Err(ConfigError::key(key(k), "must be greater than 0"));
        }
    }
    let on_status = r.retry_on_status.unwrap_or_else(|| vec![401]);
    for code in &on_status {
        if !(400..=599).contains(code) {
            return Err(ConfigError::key(
                key("retry_on_status"),
                format!("{code} is not an error status (400-599)"),
            ));
        }
    }
    let max_body = r.replay_buffer.unwrap_or(MAX_REPLAY_BUFFER);
    if max_body > MAX_REPLAY_BUFFER {
        return Err(ConfigError::key(
            key("replay_buffer"),
            format!("{max_body} is more than {MAX_REPLAY_BUFFER} bytes, the most a request body is kept for a replay"),
        ));
    }
    let replay = match r.replay {
        _ if verify.is_some() => None,
        Some(false) => None,
        _ if on_status.is_empty() => None,
        _ => Some(Replay {
            on_status,
            max_body,
        }),
    };
    let http2 = r.http2 == Http2::Auto;
    Ok(Route {
        replay,
        http2,
        name: r.name,
        listen,
        upstream,
        token,
        verify,
        header,
        format,
        existing,
        ca_file,
        connect_timeout,
        read_timeout,
    })
}

fn validate_token(
    prefix: &str,
    t: FileRouteToken,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<TokenKey, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let provider = providers.get(&t.provider).ok_or_else(|| {
        ConfigError::key(
            key("token.provider"),
            format!("unknown provider \"{}\"", t.provider),
        )
    })?;
    let non_empty = |k: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.is_empty() => Err(ConfigError::key(
                key(k),
                "must not be empty (omit it instead)",
            )),
            other => Ok(other),
        }
    };
    Ok(TokenKey {
        provider: provider.name.clone(),
        audience: non_empty("token.audience", t.audience)?,
        scope: non_empty("token.scope", t.scope)?,
        resource: non_empty("token.resource", t.resource)?,
    })
}

pub(super) fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        ConfigError::key(
            key,
            format!("\"{value}\" is not an IP:port address (e.g. 127.0.0.1:8081 or [::1]:8081)"),
        )
    })?;
    Ok(addr)
}

fn parse_upstream(key: &str, value: &str) -> Result<Upstream, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::key(key, format!("invalid URL \"{value}\": {e}")))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(ConfigError::key(
                key,
                format!("unsupported scheme \"{other}\" (use http or https)"),
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(ConfigError::key(key, format!("\"{value}\" has no host"))),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(
            key,
            "credentials in the URL are not allowed",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(
            key,
            "a query or fragment is not allowed in the upstream URL",
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ConfigError::key(key, "no port"))?;
    let host_part = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(p) => format!("{host_part}:{p}"),
        None => host_part.to_string(),
    };
    Ok(Upstream {
        tls,
        host,
        port,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}
