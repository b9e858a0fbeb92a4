//! The pingora `ProxyHttp` implementation: find the route for the listener, attach the cached
//! token, rewrite Host and path, forward; replay once with a fresh token when the upstream rejects
//! it; fail closed with a JSON error when there is no token.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use tracing::debug;

mod policy;
mod record;

pub use policy::Forward;
use policy::{classify, decide, replayable, unfold_fields, Refused};
pub(crate) use record::record;

use crate::forward::{self, Answer};
use crate::metrics;
use crate::routes::{RouteState, RouteTable};
use crate::shutdown::InFlight;

pub struct TokenProxy {
    pub routes: Arc<RouteTable>,
}

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
    /// The upstream connection of this attempt was opened for it (not reused).
    new_connection: bool,
    /// The plan for this request, once it was accepted.
    forward: Option<Forward>,
    _in_flight: InFlight,
}

async fn respond_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    challenge: Option<HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(5))?;
    if let Some(c) = challenge {
        resp.insert_header(http::header::WWW_AUTHENTICATE, c)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers the request here with a JSON error; returns `Ok(true)` (handled) for `request_filter`.
async fn reject(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Option<Arc<RouteState>>,
    answer: Answer,
    reason: Option<&str>,
    challenge: Option<HeaderValue>,
) -> Result<bool> {
    let name = route.as_ref().map_or("", |r| r.route.name.as_str());
    let body = answer.body(name, reason);
    ctx.local_status = Some(answer.status());
    ctx.route = route;
    respond_json(session, answer.status(), body, challenge).await?;
    Ok(true)
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
            new_connection: false,
            forward: None,
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
            return reject(session, ctx, None, Answer::RouteNotConfigured, None, None).await;
        };
        let mut may_refetch = true;
        let plan = loop {
            match decide(session, &route, may_refetch) {
                Ok(plan) => break plan,
                Err(Refused::Answer(answer)) => {
                    return reject(session, ctx, Some(route), answer, None, None).await
                }
                Err(Refused::Token(d)) => {
                    let challenge = d.challenge(&route.route.name);
                    let reason = Some(d.description());
                    return reject(session, ctx, Some(route), d.answer(), reason, challenge).await;
                }
                Err(Refused::NeedKeys) => {
                    if let Some(v) = route.verifier.as_ref() {
                        v.keys.refetch_for_miss().await;
                    }
                    may_refetch = false;
                }
            }
        };
        if let (true, Some(slot)) = (plan.inject, route.slot.as_ref()) {
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
                let answer = Answer::TokenUnavailable;
                return reject(session, ctx, Some(route), answer, Some(reason), None).await;
            };
            ctx.token = Some(injection.value);
            ctx.generation = Some(injection.generation);
        }
        ctx.forward = Some(plan);
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
            let fresh = match route.slot.as_ref() {
                Some(slot) => {
                    slot.wait_newer(carried, route.format_index, route.fetch_timeout)
                        .await
                }
                None => None,
            };
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

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.new_connection = !reused;
        if let (false, Some(route)) = (reused, ctx.route.as_ref()) {
            metrics::upstream_connection_opened(&route.route.name, "pingora");
        }
        Ok(())
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
        let Some(plan) = ctx.forward.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no plan in context");
        };
        // pingora's own request policy is switched off (`HttpUpstreamRequestPolicy::preserve`,
        // see `crate::upstream`): the plan is all of it. This runs again for every retry and
        // replay, each time with the token of that attempt.
        let token = ctx.token.clone().map(|v| (&route.route.header, v));
        let host = route.target.host_header.clone();
        plan.render(req, host, &route.target.upstream.base_path, token)
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
        let websocket = ctx.forward.as_ref().is_some_and(|f| f.websocket);
        if forward::response::check_status(resp.status.as_u16(), websocket).is_err() {
            let e = Error::explain(ErrorType::InvalidHTTPHeader, "status cannot be relayed");
            return Err(e.into_up());
        }
        unfold_fields(resp)?;
        if ctx.new_connection {
            // What the upstream selected when offered `h2, http/1.1`: decides whether the lean
            // path can take the route's next requests (see `UpstreamTarget::lean_refusal`).
            route.target.learn_version(resp.version);
        }
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
        let Some(plan) = ctx.forward.as_ref() else {
            return Ok(());
        };
        if !replayable(session, plan, replay.max_body) {
            ctx.replay_outcome = Some("not_replayable");
            return Ok(());
        }
        if let Some(slot) = route.slot.as_ref() {
            slot.invalidate(generation);
        }
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
        } else if !ctx.forward.as_ref().is_some_and(|f| f.idempotent)
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
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // One more try on a new connection for requests that are safe to send twice.
        if !ctx.connect_retried && ctx.forward.as_ref().is_some_and(|f| f.idempotent) {
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
        // The answer, when the caller can still be answered, and its reason.
        let (answer, reason) = if e.etype() == &NO_TOKEN {
            let reason = ctx.route.as_ref().and_then(|r| {
                r.metrics.token_unavailable();
                r.slot.as_ref().map(|s| s.unavailable_reason())
            });
            (Some(Answer::TokenUnavailable), reason)
        } else {
            match e.esource() {
                ErrorSource::Upstream => {
                    let failure = classify(e);
                    failure.count_upstream(route_name);
                    (Some(failure), None)
                }
                ErrorSource::Downstream => match e.etype() {
                    // The caller is gone: nobody to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (None, None)
                    }
                    // The caller stopped reading (client_write_timeout): the status recorded is
                    // the one it was being sent, as on the lean path.
                    ErrorType::WriteTimedout => {
                        if let Some(r) = ctx.route.as_ref() {
                            debug!(route = route_name, "the caller did not read its response within client_write_timeout; closing");
                            r.metrics.write_timeout();
                        }
                        (None, None)
                    }
                    _ => (Some(Answer::BadRequest), None),
                },
                ErrorSource::Internal | ErrorSource::Unset => (Some(Answer::Internal), None),
            }
        };
        let code = answer.map_or(0, Answer::status);
        if let Some(answer) = answer {
            if session.response_written().is_none() {
                let _ = respond_json(session, code, answer.body(route_name, reason), None).await;
            }
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
