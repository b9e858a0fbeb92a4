//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/tokens` and `/keys`. Never shows a
//! token or a secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;
use crate::routes::{RouteState, RouteTable};
use crate::serve::{self, Body};
use crate::token::cache::LastError;

/// Serves the admin endpoints on `listener` until `stop` fires.
pub async fn run(listener: TcpListener, routes: Arc<RouteTable>, stop: CancellationToken) {
    serve::serve(
        listener,
        move |req| {
            let routes = routes.clone();
            async move { handle(&req, &routes) }
        },
        stop,
    )
    .await;
}

fn handle(req: &Request<Incoming>, routes: &RouteTable) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return serve::json(405, &json!({ "error": "method_not_allowed" }));
    }
    match req.uri().path() {
        "/healthz" => serve::json(200, &json!({ "status": "ok" })),
        "/readyz" => readyz(routes),
        "/tokens" => serve::json(200, &tokens(routes)),
        "/keys" => serve::json(200, &keys(routes)),
        "/metrics" => serve::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            METRICS.encode(),
        ),
        _ => serve::json(404, &json!({ "error": "not_found" })),
    }
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn last_error(e: &LastError) -> Value {
    json!({
        "class": e.class.as_str(),
        "message": e.message,
        "error": e.idp_error,
        "error_description": e.idp_description,
        "at": time(e.at),
    })
}

fn readyz(routes: &RouteTable) -> Response<Body> {
    if !routes.listening() {
        return serve::json(
            503,
            &json!({ "ready": false, "reason": "proxy listeners not up yet" }),
        );
    }
    let now = tokio::time::Instant::now();
    let mut waiting = Vec::new();
    let mut all = routes.routes();
    all.sort_by(|a, b| a.route.name.cmp(&b.route.name));
    let mut no_keys = Vec::new();
    for r in &all {
        if let Some(slot) = r.slot.as_ref().filter(|s| !s.is_usable(now)) {
            let status = slot.status();
            waiting.push(json!({
                "route": r.route.name,
                "last_error": status.last_error.as_ref().map(last_error),
            }));
        }
        if let Some(v) = r.verifier.as_ref().filter(|v| v.keys.current().is_none()) {
            let error = v
                .keys
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            no_keys.push(
                json!({ "route": r.route.name, "issuer": v.keys.issuer, "last_error": error }),
            );
        }
    }
    if waiting.is_empty() && no_keys.is_empty() && !all.is_empty() {
        serve::json(200, &json!({ "ready": true }))
    } else {
        serve::json(
            503,
            &json!({ "ready": false, "routes_without_token": waiting, "routes_without_keys": no_keys }),
        )
    }
}

fn tokens(routes: &RouteTable) -> Value {
    let now = tokio::time::Instant::now();
    let mut by_key: BTreeMap<_, (Arc<RouteState>, Vec<String>)> = BTreeMap::new();
    for r in routes.routes() {
        let Some(slot) = r.slot.as_ref() else {
            continue;
        };
        let entry = by_key
            .entry(slot.key.clone())
            .or_insert_with(|| (r.clone(), Vec::new()));
        entry.1.push(r.route.name.clone());
    }
    let list: Vec<Value> = by_key
        .into_iter()
        .map(|(key, (state, mut names))| {
            names.sort();
            let Some(slot) = state.slot.as_ref() else {
                return Value::Null;
            };
            let status = slot.status();
            let current = slot.current();
            json!({
                "provider": key.provider,
                "auth_method": status.auth_method,
                "token_endpoint": status.token_endpoint,
                "audience": key.audience,
                "scope": key.scope,
                "resource": key.resource,
                "routes": names,
                "usable": slot.is_usable(now),
                "source": status.source,
                "fetched_at": current.as_ref().map(|t| time(t.fetched_at)),
                "expires_at": current.as_ref().map(|t| time(t.expires_at)),
                "next_refresh_at": status.next_refresh_at.map(time),
                "consecutive_failures": status.consecutive_failures,
                "last_error": status.last_error.as_ref().map(last_error),
                "idp_quota": status.quota.iter().map(|b| json!({
                    "bucket": b.bucket,
                    "limit": b.limit,
                    "remaining": b.remaining,
                    "reset_in_s": b.reset_in,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "tokens": list })
}

/// Each verify issuer's signing keys: key ids and algorithms, when fetched, the JWKS URL.
fn keys(routes: &RouteTable) -> Value {
    let mut by_issuer: BTreeMap<String, (Arc<crate::verify::keys::Keys>, Vec<String>)> =
        BTreeMap::new();
    for r in routes.routes() {
        let Some(v) = r.verifier.as_ref() else {
            continue;
        };
        let id = crate::verify::keys::source_id(&v.config);
        let entry = by_issuer
            .entry(id)
            .or_insert_with(|| (v.keys.clone(), Vec::new()));
        entry.1.push(r.route.name.clone());
    }
    let list: Vec<Value> = by_issuer
        .into_values()
        .map(|(keys, mut names)| {
            names.sort();
            let set = keys.current();
            let error = keys.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            json!({
                "issuer": keys.issuer,
                "jwks_url": keys.jwks_url(),
                "routes": names,
                "fetched_at": set.as_ref().map(|s| time(s.fetched_at)),
                "key_ids": set.as_ref().map(|s| s.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>()),
                "last_error": error,
            })
        })
        .collect();
    json!({ "issuers": list })
}
