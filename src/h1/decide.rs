//! What the lean path does with a whole request head: the request policy's decision
//! ([`crate::forward`]) and a verify route's check, then one of three steps: refuse it, leave it
//! to pingora's proxy (and why), or take it, with its upstream head written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;

use super::body::ChunkedScanner;
use super::conn::Conn;
use super::exchange::Exchange;
use super::wire::{self, Rewrite};
use crate::forward::{self, Answer, Plan};
use crate::routes::{RouteState, RouteTable};
use crate::verify::Check;

/// What the bytes at the front of `conn.buf` are.
pub(super) enum Step {
    /// Not yet a whole head.
    Partial,
    /// The proxy answers the request itself, and the connection closes.
    Refuse(Refusal),
    /// The lean path serves it: its upstream head is in `conn.out`, its head consumed.
    Lean(Exchange, Arc<RouteState>),
    /// pingora serves it; `len` bytes of `conn.buf` are this request's (the rest, pipelined
    /// requests, stay for after it).
    Pingora {
        reason: &'static str,
        len: usize,
        route: Arc<RouteState>,
    },
}

/// A request refused by the policy.
pub(super) struct Refusal {
    pub(super) answer: Answer,
    pub(super) route: Option<Arc<RouteState>>,
    pub(super) method_path: Option<(String, String)>,
    /// The body's `reason` and the `WWW-Authenticate` challenge, for a refused token.
    pub(super) reason: Option<&'static str>,
    pub(super) challenge: Option<http::HeaderValue>,
}

/// Looks at the head at the front of `conn.buf`: refuses it, leaves it to pingora, or, when
/// this path takes it, writes the upstream head into `conn.out` and consumes the head from
/// `conn.buf` (the body stays).
pub(super) fn prepare(routes: &RouteTable, conn: &mut Conn, local: Option<SocketAddr>) -> Step {
    let mut headers = forward::header_slots();
    let refuse = |answer, route, method_path| {
        Step::Refuse(Refusal {
            answer,
            route,
            method_path,
            reason: None,
            challenge: None,
        })
    };
    let (head_len, req) = match forward::parse_head(&conn.buf, &mut headers) {
        Ok(Some(head)) => head,
        Ok(None) => return Step::Partial,
        Err(answer) => {
            return refuse(answer, local.and_then(|l| routes.lookup(&l)), None);
        }
    };
    let Some(route) = local.and_then(|l| routes.lookup(&l)) else {
        return refuse(Answer::RouteNotConfigured, None, None);
    };
    let method_path = routes.access_log().then(|| {
        let path = req.path.unwrap_or("/");
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        (req.method.unwrap_or("").to_string(), path.to_string())
    });
    let view = route.view();
    let plan = match forward::plan(&req, &view) {
        Ok(plan) => plan,
        Err(answer) => return refuse(answer, Some(route.clone()), method_path),
    };
    let started = Instant::now();
    let r = &route.route;
    let lean = lean_refusal(routes, &plan, &route);
    // A verify route's check ([`crate::verify`]), for the requests this path serves; pingora's
    // path makes the same check on the others.
    let mut claims = Vec::new();
    if let (None, Some(v)) = (lean, route.verifier.as_ref()) {
        match v.check(req.headers, plan.method, plan.path_and_query, true) {
            Check::Allowed(ok) => claims = v.claim_fields(&ok),
            Check::Denied(d) => {
                return Step::Refuse(Refusal {
                    answer: d.answer(),
                    challenge: d.challenge(&route.route.name),
                    reason: Some(d.description()),
                    route: Some(route),
                    method_path,
                })
            }
            // pingora's path waits for the keys to be fetched.
            Check::NeedKeys => {
                let len = request_len(&conn.buf, head_len, &plan);
                return Step::Pingora {
                    reason: "jwks_refetch",
                    len,
                    route,
                };
            }
        }
    }
    let injection = match lean {
        Some(reason) => None.ok_or(reason),
        None if !plan.inject => Ok(None),
        None => match route.slot.as_ref() {
            // A verify route that strips the caller's token injects none.
            None => Ok(None),
            Some(slot) => {
                let now = tokio::time::Instant::from_std(started);
                // pingora's path waits for a token being replaced, or answers 503.
                slot.header_value(route.format_index, now)
                    .map(Some)
                    .ok_or("no_token")
            }
        },
    };
    let injection = match injection {
        Ok(injection) => injection,
        Err(reason) => {
            let len = request_len(&conn.buf, head_len, &plan);
            return Step::Pingora { reason, len, route };
        }
    };
    let up = &route.target.upstream;
    let rewrite = Rewrite {
        host: route.target.host_header.as_bytes(),
        base_path: up.base_path.as_bytes(),
        inject: injection.as_ref().map(|i| (&r.header, i.value.as_bytes())),
        claims: &claims,
    };
    conn.token_at = wire::write_upstream_head(&req, &plan, &rewrite, &mut conn.out);
    let exchange = Exchange {
        started,
        sent_at: started,
        idempotent: plan.idempotent,
        is_head: plan.is_head,
        close: plan.close,
        generation: injection.as_ref().map(|i| i.generation),
        body_len: match plan.body {
            forward::Body::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 0,
        },
        method_path,
        replayed: false,
        replay_outcome: None,
    };
    conn.buf.advance(head_len);
    Step::Lean(exchange, route)
}

/// Why the lean path leaves an accepted request to pingora, as a metric label; `None` when
/// it serves it.
fn lean_refusal(routes: &RouteTable, plan: &Plan<'_>, route: &RouteState) -> Option<&'static str> {
    if !routes.lean_path() {
        return Some("disabled");
    }
    if let Some(reason) = route.target.lean_refusal() {
        return Some(reason);
    }
    Some(if plan.http10 {
        "http_version"
    } else if plan.absolute_form {
        "absolute_form"
    } else if plan.has_upgrade {
        "upgrade"
    } else if plan.expect_continue {
        "expect"
    } else {
        match plan.body {
            forward::Body::Chunked => "transfer_encoding",
            forward::Body::Length(n) if n > wire::MAX_BODY as u64 => "large_body",
            _ => return None,
        }
    })
}

/// How many bytes at the front of `buf` belong to the request whose head is `head_len` long: the
/// head and as much of its body as has come. An upgrade takes everything after it.
fn request_len(buf: &[u8], head_len: usize, plan: &Plan<'_>) -> usize {
    if plan.has_upgrade {
        return buf.len();
    }
    let body = &buf[head_len..];
    head_len
        + match plan.body {
            forward::Body::None => 0,
            forward::Body::Length(n) => body.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
            forward::Body::Chunked => {
                let mut scanner = ChunkedScanner::default();
                scanner.scan(body).unwrap_or(body.len())
            }
        }
}
