//! The request policy ([`crate::forward`]) applied to pingora's types: the decision on the head
//! pingora read, the plan kept between pingora's phases and rendered into the `RequestHeader`
//! that goes upstream, whether a request may be sent again, and how an upstream failure and an
//! upstream response head are treated; the lean path ([`crate::h1`]) applies the same rules to
//! bytes.

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::forward::{self, Answer, Plan};
use crate::routes::RouteState;
use crate::verify::{Check, Denial};

/// A plan ([`crate::forward::Plan`]) as pingora's path keeps it between its phases, and its
/// rendering into the `RequestHeader` pingora sends upstream.
pub struct Forward {
    /// Names of the caller's fields that do not go upstream as they are.
    dropped: Vec<http::HeaderName>,
    path_and_query: String,
    pub(super) inject: bool,
    pub(super) websocket: bool,
    pub(super) idempotent: bool,
    body: forward::Body,
    /// A verify route's verified claim fields, set after the caller's copies are removed.
    claims: Vec<(http::HeaderName, HeaderValue)>,
}

impl Forward {
    /// Keeps what pingora's later phases need of `plan`; `names` are the request's field names.
    pub fn new<'n>(plan: &Plan<'_>, names: impl Iterator<Item = &'n http::HeaderName>) -> Self {
        Forward {
            dropped: names
                .filter(|name| !plan.forwards(name.as_str().as_bytes()))
                .cloned()
                .collect(),
            path_and_query: plan.path_and_query.to_string(),
            inject: plan.inject,
            websocket: plan.websocket,
            idempotent: plan.idempotent,
            body: plan.body,
            claims: Vec::new(),
        }
    }

    /// Sets the verified claim fields a verify route forwards.
    pub fn with_claims(mut self, claims: Vec<(http::HeaderName, HeaderValue)>) -> Self {
        self.claims = claims;
        self
    }

    pub(super) fn replayable(&self, max_body: usize, buffered: Option<usize>) -> bool {
        forward::replayable(self.body, max_body, buffered)
    }

    /// Turns the caller's request header into the one that goes upstream, as the lean path's
    /// [`crate::h1::wire::write_upstream_head`] does in bytes: fields the plan drops removed,
    /// `Host` replaced, a verify route's claim fields set, the WebSocket pair written anew, the
    /// base path prefixed, and the token header (when given) replacing whatever the caller sent
    /// under that name.
    pub fn render(
        &self,
        req: &mut RequestHeader,
        host: http::HeaderValue,
        base_path: &str,
        token: Option<(&http::HeaderName, HeaderValue)>,
    ) -> Result<()> {
        for name in &self.dropped {
            req.remove_header(name);
        }
        req.insert_header(http::header::HOST, host)?;
        for (name, value) in &self.claims {
            req.insert_header(name.clone(), value.clone())?;
        }
        if self.websocket {
            req.insert_header(http::header::CONNECTION, "Upgrade")?;
            req.insert_header(http::header::UPGRADE, "websocket")?;
        }
        if !base_path.is_empty() || req.raw_path() != self.path_and_query.as_bytes() {
            let mut target = Vec::with_capacity(base_path.len() + self.path_and_query.len());
            target.extend_from_slice(base_path.as_bytes());
            target.extend_from_slice(self.path_and_query.as_bytes());
            req.set_raw_path(&target)?;
        }
        // insert_header replaces every value the caller sent under that name.
        if let Some((name, value)) = token {
            req.insert_header(name.clone(), value)?;
        }
        Ok(())
    }
}

/// Why [`decide`] does not let a request through.
pub(super) enum Refused {
    Answer(Answer),
    /// A verify route refused the caller's token.
    Token(Denial),
    /// A verify route must fetch the issuer's keys before it can decide.
    NeedKeys,
}

/// The request policy's decision ([`crate::forward::plan`], and on a verify route
/// [`crate::verify`]) on the request pingora read, from the same bytes the lean path decides on.
pub(super) fn decide(
    session: &Session,
    route: &RouteState,
    may_refetch: bool,
) -> std::result::Result<Forward, Refused> {
    let raw = session
        .as_downstream()
        .as_http1()
        .map(pingora::protocols::http::v1::server::HttpSession::get_headers_raw_bytes)
        .ok_or(Refused::Answer(Answer::BadRequest))?;
    let mut headers = forward::header_slots();
    let (_, req) = forward::parse_head(&raw, &mut headers)
        .map_err(Refused::Answer)?
        .ok_or(Refused::Answer(Answer::BadRequest))?;
    let view = route.view();
    let plan = forward::plan(&req, &view).map_err(Refused::Answer)?;
    let forward = Forward::new(&plan, session.req_header().headers.keys());
    let Some(verifier) = route.verifier.as_ref() else {
        return Ok(forward);
    };
    match verifier.check(req.headers, plan.method, plan.path_and_query, may_refetch) {
        Check::Allowed(v) => Ok(forward.with_claims(verifier.claim_fields(&v))),
        Check::Denied(d) => Err(Refused::Token(d)),
        Check::NeedKeys => Err(Refused::NeedKeys),
    }
}

/// Which answer an upstream failure gets, from pingora's error type.
pub(super) fn classify(e: &Error) -> Answer {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => Answer::UpstreamTimeout,
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::SocketError
        | ErrorType::BindError => Answer::UpstreamConnect,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSWantX509Lookup
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => Answer::UpstreamTls,
        _ => Answer::UpstreamOther,
    }
}

/// Whether the request can be sent again: pingora keeps what it has read of the body (at most
/// 64 KiB); the plan's rule decides with how much of a chunked body was kept.
pub(super) fn replayable(session: &mut Session, forward: &Forward, max_body: usize) -> bool {
    if session.as_ref().retry_buffer_truncated() {
        return false;
    }
    let buffered = session
        .as_mut()
        .is_body_done()
        .then(|| session.as_ref().get_retry_buffer().map_or(0, |b| b.len()));
    forward.replayable(max_body, buffered)
}

/// Puts each folded field value of an upstream response on one line, as the lean path does
/// ([`forward::response::unfold`]).
pub(super) fn unfold_fields(resp: &mut ResponseHeader) -> Result<()> {
    let folded: Vec<_> = resp
        .headers
        .iter()
        .filter(|(_, v)| forward::response::is_folded(v.as_bytes()))
        .map(|(n, _)| n.clone())
        .collect();
    for name in folded {
        let values: Vec<HeaderValue> = resp
            .headers
            .get_all(&name)
            .iter()
            .map(|v| {
                let mut out = Vec::with_capacity(v.len());
                forward::response::unfold(v.as_bytes(), &mut out);
                HeaderValue::from_bytes(&out).or_err(ErrorType::InvalidHTTPHeader, "field value")
            })
            .collect::<Result<_>>()?;
        resp.remove_header(&name);
        for v in values {
            resp.append_header(name.clone(), v)?;
        }
    }
    Ok(())
}
