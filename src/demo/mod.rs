//! The self-contained demo: a token issuer, an echo API that checks the token, and the proxy
//! between them, all on loopback. The issuer and the API can also run alone (for compose).

pub mod api;
pub mod issuer;
pub mod jwt;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogConfig, LogFormat};
use crate::listeners::ReadyTo;
use crate::secret::Secret;
use crate::{logging, serve, server};

const DEFAULT_CLIENT_ID: &str = "demo-client";
const DEFAULT_CLIENT_SECRET: &str = "demo-secret";
const DEFAULT_SIGNING_KEY: &str = "demo-signing-key";

#[derive(Subcommand)]
pub enum Part {
    /// Only the token issuer (env: TOKENPROXY_DEMO_CLIENT_ID, TOKENPROXY_DEMO_CLIENT_SECRET,
    /// TOKENPROXY_DEMO_SIGNING_KEY).
    Issuer {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Token lifetime.
        #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
        lifetime: Duration,
    },
    /// Only the echo API (env: TOKENPROXY_DEMO_SIGNING_KEY).
    Api {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn signing_key() -> Secret {
    Secret::new(env_or("TOKENPROXY_DEMO_SIGNING_KEY", DEFAULT_SIGNING_KEY))
}

fn quiet_logs() -> LogConfig {
    LogConfig {
        level: "tokenproxy=info,warn".into(),
        format: LogFormat::Text,
        access: false,
    }
}

pub fn main(part: Option<Part>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(&quiet_logs());
    let result = match part {
        Some(Part::Issuer { listen, lifetime }) => rt.block_on(run_issuer(listen, lifetime)),
        Some(Part::Api { listen }) => rt.block_on(run_api(listen)),
        None => all_in_one(&rt),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts an issuer on `listener`; returns it so callers can count what it issued.
pub fn spawn_issuer(listener: TcpListener, issuer: Arc<issuer::Issuer>, stop: CancellationToken) {
    tokio::spawn(serve::serve(
        listener,
        move |req| issuer.clone().handle(req),
        stop,
    ));
}

/// Starts an echo API on `listener`.
pub fn spawn_api(listener: TcpListener, api: Arc<api::Api>, stop: CancellationToken) {
    tokio::spawn(serve::serve(
        listener,
        move |req| api.clone().handle(req),
        stop,
    ));
}

async fn run_issuer(listen: SocketAddr, lifetime: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let issuer = Arc::new(issuer::Issuer::new(
        &env_or("TOKENPROXY_DEMO_CLIENT_ID", DEFAULT_CLIENT_ID),
        Secret::new(env_or(
            "TOKENPROXY_DEMO_CLIENT_SECRET",
            DEFAULT_CLIENT_SECRET,
        )),
        signing_key(),
        lifetime,
        format!("http://{listen}/"),
    ));
    println!("demo issuer: POST http://{listen}/oauth/token");
    serve::serve(
        listener,
        move |req| issuer.clone().handle(req),
        CancellationToken::new(),
    )
    .await;
    Ok(())
}

async fn run_api(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let api = Arc::new(api::Api {
        signing_key: signing_key(),
    });
    println!("demo API: http://{listen}/ (needs a bearer token from the demo issuer)");
    serve::serve(
        listener,
        move |req| api.clone().handle(req),
        CancellationToken::new(),
    )
    .await;
    Ok(())
}

fn all_in_one(rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (issuer_addr, api_addr, issuer) = rt.block_on(async {
        let il = TcpListener::bind("127.0.0.1:0").await?;
        let al = TcpListener::bind("127.0.0.1:0").await?;
        let (ia, aa) = (il.local_addr()?, al.local_addr()?);
        let issuer = Arc::new(issuer::Issuer::new(
            DEFAULT_CLIENT_ID,
            Secret::new(DEFAULT_CLIENT_SECRET),
            signing_key(),
            Duration::from_secs(30),
            format!("http://{ia}/"),
        ));
        spawn_issuer(il, issuer.clone(), stop.clone());
        spawn_api(
            al,
            Arc::new(api::Api {
                signing_key: signing_key(),
            }),
            stop.clone(),
        );
        Ok::<_, std::io::Error>((ia, aa, issuer))
    })?;
    // The proxy takes ports of the kernel's choosing and says which once it listens.
    let yaml = format!(
        r#"
admin:
  listen: 127.0.0.1:0
log:
  level: "tokenproxy=info,warn"
shutdown_grace: 2s
providers:
  demo:
    token_url: http://{issuer_addr}/oauth/token
    client_id: {DEFAULT_CLIENT_ID}
    client_secret: {DEFAULT_CLIENT_SECRET}
    body: json
routes:
  - name: demo
    listen: 127.0.0.1:0
    upstream: http://{api_addr}/api
    token:
      provider: demo
      audience: https://demo-api.example/
      scope: "read:demo"
"#
    );
    let config = Config::from_yaml(&yaml, &|_| None)?;
    println!("tokenproxy demo");
    println!("  token issuer  http://{issuer_addr}/oauth/token (HS256 JWTs, 30s lifetime)");
    println!("  echo API      http://{api_addr}/api (checks the bearer token)");
    let (ready, listening) = tokio::sync::oneshot::channel::<String>();
    rt.spawn(async move {
        // Dropped unanswered when the proxy did not start: its error is printed below.
        let Ok(listening) = listening.await else {
            return;
        };
        let Some((proxy, admin)) = demo_addrs(&listening) else {
            eprintln!("demo: cannot read the proxy's listen addresses from {listening}");
            return;
        };
        println!("  proxy         http://{proxy}/  ->  http://{api_addr}/api/");
        println!("  admin         http://{admin}/readyz /tokens /metrics");
        first_request(proxy, admin, issuer).await;
    });
    server::run(config, None, Some(ReadyTo::Channel(ready)))?;
    Ok(())
}

/// The demo route's and the admin listener's addresses, from what the proxy told once listening
/// ([`crate::listeners::ready_json`]).
fn demo_addrs(listening: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(listening).ok()?;
    let addr = |v: &serde_json::Value| v.as_str()?.parse::<SocketAddr>().ok();
    Some((addr(&v["routes"]["demo"])?, addr(&v["admin"])?))
}

/// Waits for readiness, sends one request through the proxy and prints what the API saw.
async fn first_request(proxy: SocketAddr, admin: SocketAddr, issuer: Arc<issuer::Issuer>) {
    let client = reqwest::Client::new();
    let ready = format!("http://{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(&ready).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!("demo: the proxy did not become ready within 10s (see the log above)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{proxy}/hello?name=demo");
    println!();
    println!("GET {url}  (the app sends no token; a stale one of its own would be replaced)");
    match client
        .get(&url)
        .header("authorization", "Bearer the-apps-own-stale-token")
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            println!("-> {status}; the API received:");
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        Err(e) => println!("-> request failed: {e}"),
    }
    println!();
    println!("tokens issued so far: {}", issuer.issued());
    println!("try:  curl -s http://{proxy}/anything?x=1");
    println!("      curl -s http://{admin}/tokens");
    println!("Ctrl-C to stop.");
}
