//! A real Prometheus (Debian's package, installed by scripts/setup.sh) scrapes the admin
//! listener; its HTTP API must show the request and token-fetch series with the right labels, and
//! `promtool check metrics` must accept the exposition.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::idp::{Idp, Mode};
use common::proxy::Proxy;
use common::upstream::Upstream;
use common::{client, wait_for};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/setup.sh (Debian package prometheus)"
    );
    name.to_string()
}

/// The port of Prometheus's `msg="Listening on" address=127.0.0.1:PORT` log line, once logged.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("msg=\"Listening on\""))
        .find_map(|l| {
            l.split("address=127.0.0.1:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

async fn query(port: u16, q: &str) -> Vec<serde_json::Value> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let Ok(r) = client().get(url).query(&[("query", q)]).send().await else {
        return Vec::new();
    };
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_scrapes_the_metrics_with_their_labels() {
    let idp = Idp::start(Mode::Ok {
        lifetime: Duration::from_secs(300),
    })
    .await;
    let up = Upstream::http(None).await;
    let closed = common::ClosedPort::new();
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
providers:
  auth0: {{ token_url: "{url}", client_id: cid, client_secret: prom-secret }}
routes:
  - name: orders
    listen: 127.0.0.1:0
    upstream: http://{up}
    token: {{ provider: auth0, audience: "https://orders/" }}
  - name: broken
    listen: 127.0.0.1:0
    upstream: http://127.0.0.1:{closed_port}
    token: {{ provider: auth0, audience: "https://orders/" }}
"#,
        closed_port = closed.port,
        url = idp.token_url(),
        up = up.addr,
    );
    let mut proxy = Proxy::start(&yaml, 0, &[("RUST_LOG", "info")]);
    proxy.ready().await;
    let (admin, port) = (proxy.admin, proxy.port("orders"));
    for _ in 0..3 {
        assert_eq!(common::get(port, "/a/b?c=d").await.status(), 200);
    }

    // promtool on the exposition as served.
    let text = common::metrics_text(admin).await;
    tool("promtool");
    common::assert_promtool_accepts(&text);
    for name in [
        "tokenproxy_requests_total",
        "tokenproxy_request_duration_seconds_bucket",
        "tokenproxy_token_fetches_total",
        "tokenproxy_token_fetch_duration_seconds_bucket",
        "tokenproxy_token_expiry_timestamp_seconds",
        "tokenproxy_token_last_success_timestamp_seconds",
        "tokenproxy_config_last_reload_success_timestamp_seconds",
        "tokenproxy_build_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(!text.contains("prom-secret") && !text.contains(&idp.issued_tokens()[0]));

    // A real Prometheus scraping every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tokenproxy\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Any port: Prometheus logs the one it got.
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = dir.path().join("prometheus.log");
    let mut prom_port = 0;
    let listening = wait_for(Duration::from_secs(30), || {
        let port = listening_port(&std::fs::read_to_string(&log).unwrap_or_default());
        prom_port = port.unwrap_or(0);
        async move { port.is_some() }
    })
    .await;
    assert!(
        listening,
        "Prometheus did not say where it listens; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let q = r#"tokenproxy_requests_total{route="orders",code="200"}"#;
    let scraped = wait_for(Duration::from_secs(30), || async {
        !query(prom_port, q).await.is_empty()
    })
    .await;
    assert!(
        scraped,
        "Prometheus did not scrape; its log:\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    let requests = query(prom_port, "tokenproxy_requests_total").await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["metric"]["route"], "orders");
    assert_eq!(requests[0]["metric"]["code"], "200");
    assert_eq!(requests[0]["value"][1], "3");

    let fetches = query(prom_port, "tokenproxy_token_fetches_total").await;
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    let m = &fetches[0]["metric"];
    assert_eq!(
        (
            m["provider"].as_str(),
            m["audience"].as_str(),
            m["outcome"].as_str()
        ),
        (Some("auth0"), Some("https://orders/"), Some("success"))
    );
    assert_eq!(
        fetches[0]["value"][1], "1",
        "two routes share one token: one fetch"
    );

    let up_errors = {
        client()
            .get(format!("http://127.0.0.1:{}/x", proxy.port("broken")))
            .send()
            .await
            .unwrap();
        let q = r#"tokenproxy_upstream_errors_total{route="broken",kind="connect"}"#;
        wait_for(Duration::from_secs(15), || async {
            !query(prom_port, q).await.is_empty()
        })
        .await
    };
    assert!(up_errors, "upstream connect errors not counted");
}
