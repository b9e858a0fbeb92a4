//! What tests do with a started [`Rig`]: requests through its routes, and the proxy's metrics.

use std::time::Duration;

use super::rig::Rig;
use super::upstream::{pattern, sha256_hex};
use super::{metric, metrics_text, wait_for};

impl Rig {
    /// `http://127.0.0.1:<route's port><path>`.
    pub fn url(&self, route: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(route))
    }

    /// `GET path` on `route`, on a new connection.
    pub async fn get(&self, route: &str, path: &str) -> reqwest::Response {
        super::get(self.port(route), path).await
    }

    /// A raw HTTP/1.1 connection to `route` (see `rawup`).
    pub async fn connect(&self, route: &str) -> super::rawup::Client {
        super::rawup::Client::connect(self.port(route)).await
    }

    /// `Bearer <token>` for the one token the IdP issued (panics unless exactly one).
    pub fn bearer(&self) -> String {
        let tokens = self.idp.issued_tokens();
        assert_eq!(tokens.len(), 1, "one token issued: {tokens:?}");
        format!("Bearer {}", tokens[0])
    }

    pub async fn metrics_text(&self) -> String {
        metrics_text(self.admin()).await
    }

    /// One sample from the admin port's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric(self.admin(), series).await
    }

    /// Waits until `series` has `value`; panics with the value last seen after 5 s.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let ok = wait_for(Duration::from_secs(5), || async {
            self.metric(series).await == value
        })
        .await;
        assert!(
            ok,
            "{series} stayed at {} instead of {value}",
            self.metric(series).await
        );
    }

    /// Writes `yaml` as the config, sends SIGHUP and waits for the successful reload.
    pub async fn reload(&self, yaml: &str) {
        let series = r#"tokenproxy_config_reloads_total{outcome="success"}"#;
        let want = self.metric(series).await + 1.0;
        std::fs::write(&self.proxy.config_path, yaml).unwrap();
        self.proxy.signal(libc::SIGHUP);
        let ok = wait_for(Duration::from_secs(10), || async {
            self.metric(series).await >= want
        })
        .await;
        assert!(ok, "no successful reload; stderr:\n{}", self.proxy.stderr());
    }

    /// `tokenproxy_pingora_handoffs_total` of `route` for `reason`.
    pub async fn handoffs(&self, route: &str, reason: &str) -> f64 {
        self.metric(&format!(
            r#"tokenproxy_pingora_handoffs_total{{route="{route}",reason="{reason}"}}"#
        ))
        .await
    }

    /// The sum of every handoff sample of `route`, whatever the reason.
    pub async fn all_handoffs(&self, route: &str) -> f64 {
        let text = self.metrics_text().await;
        let prefix = "tokenproxy_pingora_handoffs_total{";
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!(r#"route="{route}""#)))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// `tokenproxy_upstream_tls_handshakes_total` of `route` with `outcome`.
    pub async fn handshakes(&self, route: &str, outcome: &str) -> f64 {
        self.metric(&format!(
            r#"tokenproxy_upstream_tls_handshakes_total{{route="{route}",outcome="{outcome}"}}"#
        ))
        .await
    }

    /// `tokenproxy_upstream_connections_opened_total` of `route` on `path` (lean or pingora).
    pub async fn opened(&self, route: &str, path: &str) -> f64 {
        self.metric(&format!(
            r#"tokenproxy_upstream_connections_opened_total{{route="{route}",path="{path}"}}"#
        ))
        .await
    }

    /// `POST path` on `route` with the body `hello` and the caller's own `Host: caller.invalid`
    /// (which the upstream must never see).
    pub async fn post_hello(&self, route: &str, path: &str) -> reqwest::Response {
        super::client()
            .post(self.url(route, path))
            .header("host", "caller.invalid")
            .body("hello")
            .send()
            .await
            .unwrap()
    }

    /// `PUT path` on `route` with `data` as a streamed (chunked) body, not one buffer with a
    /// Content-Length.
    pub async fn put_streamed(&self, route: &str, path: &str, data: &[u8]) -> reqwest::Response {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            data.chunks(100_003).map(|c| Ok(c.to_vec())).collect();
        super::client()
            .put(self.url(route, path))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap()
    }

    /// `GET /big?bytes=n` on `route`: the upstream's `n`-byte pattern arrives whole and intact.
    pub async fn assert_big_download(&self, route: &str, n: usize) {
        let r = self.get(route, &format!("/big?bytes={n}")).await;
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), n);
        assert_eq!(sha256_hex(&body), sha256_hex(&pattern(n)));
    }
}
