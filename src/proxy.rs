//! The pingora `ProxyHttp` implementation: find the route for the listener, attach the cached
//! token, rewrite Host and path, forward; fail closed with a JSON error when there is no token.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use tracing::info;

use crate::config::Existing;
use crate::metrics::METRICS;
use crate::routes::{RouteState, RouteTable};
use crate::shutdown::InFlight;

pub struct TokenProxy {
    pub routes: Arc<RouteTable>,
}

/// Per-request state.
pub struct RequestCtx {
    route: Option<Arc<RouteState>>,
    /// The header value to inject; `None` when the caller's own header is kept.
    token: Option<HeaderValue>,
    started: StdInstant,
    /// The status this proxy answered with itself, if it did.
    local_status: Option<u16>,
    _in_flight: InFlight,
}

/// Why a request was not forwarded, as the JSON `error` field the caller gets.
fn json_error(error: &str, route: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": error, "route": route }).to_string())
}

async fn respond_json(session: &mut Session, status: u16, body: Bytes) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The upstream error kind for metrics and the JSON error, with the status the caller gets.
fn classify(e: &Error) -> (u16, &'static str, &'static str) {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => (504, "timeout", "upstream_timeout"),
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError
        | ErrorType::BindError => (502, "connect", "upstream_connect_failed"),
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => (502, "tls", "upstream_tls_failed"),
        _ => (502, "other", "upstream_error"),
    }
}

#[async_trait]
impl ProxyHttp for TokenProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: None,
            token: None,
            started: StdInstant::now(),
            local_status: None,
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
            ctx.local_status = Some(503);
            respond_json(session, 503, json_error("route_not_configured", "")).await?;
            return Ok(true);
        };
        let keep_callers = route.route.existing == Existing::Keep
            && session
                .req_header()
                .headers
                .contains_key(&route.route.header);
        if !keep_callers {
            match route
                .slot
                .header_value(route.format_index, tokio::time::Instant::now())
            {
                Some(v) => ctx.token = Some(v),
                None => {
                    METRICS
                        .token_unavailable
                        .with_label_values(&[&route.route.name])
                        .inc();
                    ctx.local_status = Some(503);
                    let body = json_error("token_unavailable", &route.route.name);
                    ctx.route = Some(route);
                    respond_json(session, 503, body).await?;
                    return Ok(true);
                }
            }
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
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
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
        req.insert_header(http::header::HOST, &up.authority)?;
        // Only the path and query go upstream, whatever form the caller's request target had.
        let path_and_query = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if !up.base_path.is_empty() || req.uri.scheme().is_some() {
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
        if let Some(value) = ctx.token.take() {
            let name = route.route.header.clone();
            req.remove_header(&name);
            req.insert_header(name, value)?;
        }
        Ok(())
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
        let code = match e.esource() {
            ErrorSource::Upstream => {
                let (status, kind, error) = classify(e);
                METRICS
                    .upstream_errors
                    .with_label_values(&[route_name, kind])
                    .inc();
                if session.response_written().is_none() {
                    let _ = respond_json(session, status, json_error(error, route_name)).await;
                }
                status
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => {
                    let _ = session.respond_error(400).await;
                    400
                }
            },
            ErrorSource::Internal | ErrorSource::Unset => {
                if session.response_written().is_none() {
                    let _ =
                        respond_json(session, 500, json_error("internal_error", route_name)).await;
                }
                500
            }
        };
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
        let elapsed = ctx.started.elapsed();
        let name = route.route.name.as_str();
        let mut code_buf = itoa::Buffer::new();
        METRICS
            .requests
            .with_label_values(&[name, code_buf.format(status)])
            .inc();
        METRICS
            .request_duration
            .with_label_values(&[name])
            .observe(elapsed.as_secs_f64());
        if self.routes.access_log() {
            let req = session.req_header();
            info!(
                target: "tokenproxy::access",
                route = name,
                method = %req.method,
                path = req.uri.path(),
                status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream = %route.target.upstream.authority,
                "request"
            );
        }
    }
}
