//! The floor for `bench/run.sh`: a bare pingora proxy that forwards every request to one
//! upstream and adds one static header. No token logic, no metrics, no route table, so the
//! distance between this and tokenproxy is what tokenproxy itself costs.
//!
//! ```text
//! cargo run --release --example bare_pingora -- \
//!     --listen 127.0.0.1:18084 --upstream 127.0.0.1:18080 --threads 1 \
//!     --authorization "Bearer <token>"
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

/// Used when `--authorization` is not given; the bench passes a real token from the demo
/// issuer so that every proxy row forwards a header of the same size.
const DEFAULT_AUTHORIZATION: &str = "Bearer bare-pingora-static-token";

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
    authorization: HeaderValue,
}

struct Bare {
    upstream: SocketAddr,
    authorization: HeaderValue,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        req.insert_header(http::header::AUTHORIZATION, self.authorization.clone())
    }
}

fn usage() -> String {
    "usage: bare_pingora --listen ADDR --upstream ADDR [--threads N] [--authorization VALUE]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 1;
    let mut authorization = HeaderValue::from_static(DEFAULT_AUTHORIZATION);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--upstream" => {
                let v = value()?;
                upstream = Some(v.parse().map_err(|e| format!("--upstream {v}: {e}"))?);
            }
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|e| format!("--threads {v}: {e}"))?;
            }
            "--authorization" => {
                let v = value()?;
                authorization =
                    HeaderValue::try_from(v).map_err(|e| format!("--authorization: {e}"))?;
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(usage)?,
        upstream: upstream.ok_or_else(usage)?,
        threads,
        authorization,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads: args.threads,
        daemon: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare {
            upstream: args.upstream,
            authorization: args.authorization,
        },
        "bare_pingora",
    );
    service.add_tcp(&args.listen.to_string());
    server.add_service(service);
    println!(
        "bare_pingora: {} -> {} ({} thread(s))",
        args.listen, args.upstream, args.threads
    );
    server.run_forever()
}
