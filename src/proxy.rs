//! The pingora `ProxyHttp` implementation: find the route for the listener, attach the cached
//! token, rewrite Host and path, forward; replay once with a fresh token when the upstream rejects
//! it; fail closed with a JSON error when there is no token.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use tracing::{debug, info};

use crate::config::Existing;
use crate::metrics::METRICS;
use crate::routes::{RouteState, RouteTable};
use crate::shutdown::InFlight;

pub struct TokenProxy {
    pub routes: Arc<RouteTable>,
}

/// Requests whose header fields add up to more than this are refused with 431.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The error type that carries "no token" out of `upstream_peer` to `fail_to_proxy`.
const NO_TOKEN: ErrorType = ErrorType::Custom("token_unavailable");
/// The error type that makes pingora send the request again, with a fresh token.
const REPLAY: ErrorType = ErrorType::Custom("replay_with_fresh_token");

/// Per-request state.
pub struct RequestCtx {
    route: Option<Arc<RouteState>>,
    /// The header value to inject; `None` when the caller's own header is kept.
    token: Option<HeaderValue>,
    /// Which token the request carries, so a rejection revokes only that one.
    generation: Option<u64>,
    started: StdInstant,
    /// The status this proxy answered with itself, if it did.
    local_status: Option<u16>,
    replay_pending: bool,
    replayed: bool,
    replay_outcome: Option<&'static str>,
    connect_retried: bool,
    _in_flight: InFlight,
}

/// The JSON body of an answer the proxy gives itself.
pub(crate) fn json_error(error: &str, route: &str, reason: Option<&str>) -> Bytes {
    let mut v = serde_json::json!({ "error": error, "route": route });
    if let Some(r) = reason {
        v["reason"] = serde_json::Value::from(r);
    }
    Bytes::from(v.to_string())
}

async fn respond_json(session: &mut Session, status: u16, body: Bytes) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// How an exchange with the upstream failed, whichever path saw it: one table for the caller's
/// status, the `kind` label of `tokenproxy_upstream_errors_total` and the JSON `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    Connect,
    Timeout,
    Tls,
    Other,
}

impl UpstreamError {
    pub(crate) fn status(self) -> u16 {
        match self {
            UpstreamError::Timeout => 504,
            _ => 502,
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Tls => "tls",
            UpstreamError::Other => "other",
        }
    }

    pub(crate) fn error(self) -> &'static str {
        match self {
            UpstreamError::Connect => "upstream_connect_failed",
            UpstreamError::Timeout => "upstream_timeout",
            UpstreamError::Tls => "upstream_tls_failed",
            UpstreamError::Other => "upstream_error",
        }
    }

    /// Counts the failure in `tokenproxy_upstream_errors_total`.
    pub(crate) fn count(self, route: &str) {
        METRICS
            .upstream_errors
            .with_label_values(&[route, self.kind()])
            .inc();
    }
}

fn classify(e: &Error) -> UpstreamError {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => UpstreamError::Timeout,
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError
        | ErrorType::BindError => UpstreamError::Connect,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => UpstreamError::Tls,
        _ => UpstreamError::Other,
    }
}

/// Whether the request can be sent again: pingora keeps what it has read of the body (at most
/// 64 KiB); a replay needs all of what was sent, within the route's limit.
fn replayable(session: &mut Session, max_body: usize) -> bool {
    if session.as_ref().retry_buffer_truncated() {
        return false;
    }
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    match (length, chunked) {
        (Some(n), false) => n <= max_body,
        (None, false) => true,
        (_, true) => {
            let buffered = session.as_ref().get_retry_buffer().map_or(0, |b| b.len());
            session.as_mut().is_body_done() && buffered <= max_body
        }
    }
}

/// Answers the request here with a JSON error; returns `Ok(true)` (handled) for `request_filter`.
async fn reject(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Option<Arc<RouteState>>,
    status: u16,
    error: &str,
    reason: Option<&str>,
) -> Result<bool> {
    let name = route.as_ref().map_or("", |r| r.route.name.as_str());
    let body = json_error(error, name, reason);
    ctx.local_status = Some(status);
    ctx.route = route;
    respond_json(session, status, body).await?;
    Ok(true)
}

/// Requests refused before anything is forwarded, with the status and error to answer.
fn refuse(session: &Session, route: &RouteState) -> Option<(u16, &'static str)> {
    let req = session.req_header();
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) && sent_content_length(session) {
        // RFC 9112 §6.1 allows either rejecting this or ignoring Content-Length; it is the
        // shape of a smuggling attempt, so refuse it.
        return Some((400, "conflicting_framing"));
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some((431, "request_headers_too_large"));
    }
    if let Some(authority) = absolute_form_authority(req.raw_path()) {
        if !is_own_authority(&authority, route) {
            // A request meant for another host must not reach this upstream with our token.
            return Some((421, "misdirected_request"));
        }
    }
    None
}

/// Whether the caller sent a Content-Length. pingora drops it from the parsed header when
/// Transfer-Encoding is present, so look at the raw header (only done for chunked requests).
fn sent_content_length(session: &Session) -> bool {
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    h1.get_headers_raw_bytes()
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// The authority of an absolute-form request target (`GET http://host:port/path`); `None` for
/// the usual origin form (`GET /path`). pingora keeps the authority off the parsed URI.
fn absolute_form_authority(target: &[u8]) -> Option<String> {
    if target.first().is_none_or(|b| *b == b'/' || *b == b'*') {
        return None;
    }
    let lower = String::from_utf8_lossy(target).to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .unwrap_or(&lower);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Whether an absolute-form request's authority names this route: its upstream, or the listener
/// itself.
fn is_own_authority(authority: &str, route: &RouteState) -> bool {
    let up = &route.target.upstream;
    if authority.eq_ignore_ascii_case(&up.authority)
        || authority.eq_ignore_ascii_case(&format!("{}:{}", up.authority, up.port))
    {
        return true;
    }
    let listen = route.route.listen;
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().ok() == Some(listen.port())
        && (host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                ip == listen.ip() || (ip.is_loopback() && listen.ip().is_loopback())
            }))
}

#[async_trait]
impl ProxyHttp for TokenProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: None,
            token: None,
            generation: None,
            started: StdInstant::now(),
            local_status: None,
            replay_pending: false,
            replayed: false,
            replay_outcome: None,
            connect_retried: false,
            _in_flight: InFlight::start(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let local = session
            .as_downstream()
            .server_addr()
            .and_then(|a| a.as_inet())
            .copied();
        let Some(route) = local.and_then(|a| self.routes.lookup(&a)) else {
            return reject(session, ctx, None, 503, "route_not_configured", None).await;
        };
        if let Some((status, error)) = refuse(session, &route) {
            return reject(session, ctx, Some(route), status, error, None).await;
        }
        let keep_callers = route.route.existing == Existing::Keep
            && session
                .req_header()
                .headers
                .contains_key(&route.route.header);
        if !keep_callers {
            let slot = &route.slot;
            let now = tokio::time::Instant::from_std(ctx.started);
            let mut injection = slot.header_value(route.format_index, now);
            if injection.is_none() && slot.is_revoked() {
                // The upstream just rejected the token and its replacement is on its way.
                if slot.wait_usable(route.fetch_timeout).await {
                    injection = slot.header_value(route.format_index, tokio::time::Instant::now());
                }
            }
            let Some(injection) = injection else {
                route.metrics.token_unavailable();
                let reason = slot.unavailable_reason();
                return reject(
                    session,
                    ctx,
                    Some(route),
                    503,
                    "token_unavailable",
                    Some(reason),
                )
                .await;
            };
            ctx.token = Some(injection.value);
            ctx.generation = Some(injection.generation);
        }
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        if ctx.replay_pending {
            ctx.replay_pending = false;
            ctx.replayed = true;
            let carried = ctx.generation.unwrap_or(0);
            let fresh = route
                .slot
                .wait_newer(carried, route.format_index, route.fetch_timeout)
                .await;
            match fresh {
                Some(i) => {
                    debug!(route = %route.route.name, "replaying with a fresh token");
                    ctx.token = Some(i.value);
                    ctx.generation = Some(i.generation);
                }
                None => {
                    ctx.replay_outcome = Some("no_token");
                    return Error::e_explain(NO_TOKEN, "no fresh token for the replay");
                }
            }
        }
        match route.target.peer() {
            Some(peer) => Ok(Box::new(peer)),
            None => Error::e_explain(ErrorType::ConnectNoRoute, "upstream host not resolved yet"),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route in context");
        };
        let up = &route.target.upstream;
        req.insert_header(http::header::HOST, route.target.host_header.clone())?;
        // Only the path and query go upstream, whatever form the caller's request target had.
        let path_and_query = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if !up.base_path.is_empty() || req.uri.scheme().is_some() || req.uri.authority().is_some() {
            let mut target = String::with_capacity(up.base_path.len() + path_and_query.len());
            target.push_str(&up.base_path);
            if !path_and_query.starts_with('/') {
                target.push('/');
            }
            target.push_str(path_and_query);
            let uri = Uri::try_from(target).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "rewriting the path", e)
            })?;
            req.set_uri(uri);
        }
        // Runs again for every retry and replay, each time with the token of that attempt.
        // insert_header replaces every value the caller sent under that name.
        if let Some(value) = ctx.token.clone() {
            req.insert_header(route.route.header.clone(), value)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        let Some(replay) = route.route.replay.as_ref() else {
            return Ok(());
        };
        let status = resp.status.as_u16();
        if !replay.on_status.contains(&status) {
            if ctx.replayed {
                ctx.replay_outcome = Some("success");
            }
            return Ok(());
        }
        if ctx.replayed {
            ctx.replay_outcome = Some("rejected_again");
            return Ok(());
        }
        let Some(generation) = ctx.generation else {
            // The caller's own credentials were forwarded: nothing of ours to refresh.
            return Ok(());
        };
        if !replayable(session, replay.max_body) {
            ctx.replay_outcome = Some("not_replayable");
            return Ok(());
        }
        route.slot.invalidate(generation);
        ctx.replay_pending = true;
        let mut e = Error::explain(REPLAY, "the upstream rejected the token");
        e.set_retry(true);
        Err(e.into_up())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.replay_pending && e.etype() == &REPLAY {
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // One more try on a new connection for requests that are safe to send twice.
        if !ctx.connect_retried && session.req_header().method.is_idempotent() {
            ctx.connect_retried = true;
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let route_name = ctx
            .route
            .as_ref()
            .map(|r| r.route.name.as_str())
            .unwrap_or("");
        // The status and, when the caller can still be answered, the JSON error to send.
        let (code, answer) = if e.etype() == &NO_TOKEN {
            let reason = ctx.route.as_ref().map(|r| {
                r.metrics.token_unavailable();
                r.slot.unavailable_reason()
            });
            (503, Some(("token_unavailable", reason)))
        } else {
            match e.esource() {
                ErrorSource::Upstream => {
                    let failure = classify(e);
                    failure.count(route_name);
                    (failure.status(), Some((failure.error(), None)))
                }
                ErrorSource::Downstream => match e.etype() {
                    // The caller is gone: nobody to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, None)
                    }
                    _ => (400, Some(("bad_request", None))),
                },
                ErrorSource::Internal | ErrorSource::Unset => (500, Some(("internal_error", None))),
            }
        };
        if let Some((error, reason)) = answer {
            if session.response_written().is_none() {
                let body = json_error(error, route_name, reason);
                let _ = respond_json(session, code, body).await;
            }
        }
        if code != 0 {
            ctx.local_status = Some(code);
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let method_path = self.routes.access_log().then(|| {
            let req = session.req_header();
            (req.method.to_string(), req.uri.path().to_string())
        });
        let took = ctx.started.elapsed();
        record(
            &self.routes,
            route,
            method_path.as_ref(),
            status,
            took,
            ctx.replay_outcome,
        );
    }
}

/// Records a finished request, from either path: metrics, and the access log line when it is on
/// (`method_path` is `Some` exactly then).
pub(crate) fn record(
    routes: &RouteTable,
    route: &RouteState,
    method_path: Option<&(String, String)>,
    status: u16,
    took: std::time::Duration,
    replay: Option<&'static str>,
) {
    let name = route.route.name.as_str();
    route.metrics.request(status, took);
    if let Some(outcome) = replay {
        METRICS
            .upstream_replays
            .with_label_values(&[name, outcome])
            .inc();
    }
    if let (true, Some((method, path))) = (routes.access_log(), method_path) {
        info!(
            target: "tokenproxy::access",
            route = name,
            method = method.as_str(),
            path = path.as_str(),
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            upstream = %route.target.upstream.authority,
            replay = replay.unwrap_or(""),
            "request"
        );
    }
}
