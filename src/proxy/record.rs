//! The record of a finished request, from either path: its metrics and, when it is on, its
//! access log line.

use tracing::info;

use crate::metrics::METRICS;
use crate::routes::{RouteState, RouteTable};

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
