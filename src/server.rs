//! Wiring of a running proxy: the control runtime (refreshers, admin, reload), the route table,
//! and the pingora server that carries the traffic.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;
use crate::config::{is_loopback, Config, ConfigError};
use crate::routes::RouteTable;
use crate::shared_cache::SharedCache;
use crate::shutdown::Signals;
use crate::token::manager::TokenManager;
use crate::{admin, h1, listeners, metrics, proxy, reload};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the control runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs the proxy until SIGTERM or SIGINT. Returns once shut down.
/// With `ready`, the listen addresses in force are told there once every listener accepts
/// connections ([`listeners::ready_json`]).
pub fn run(
    mut config: Config,
    config_path: Option<PathBuf>,
    ready: Option<listeners::ReadyTo>,
) -> Result<(), StartError> {
    for r in &config.routes {
        // A verify route is meant to be reached by other hosts; it lets through only valid tokens.
        if !is_loopback(&r.listen) && r.verify.is_none() {
            warn!(route = %r.name, listen = %r.listen, "route listens on a non-loopback address: anyone who can reach it uses its credentials");
        }
    }
    // Bind-check every address first, so that a taken port is reported with its key instead of
    // failing inside pingora. Port 0 becomes the port the kernel gave.
    let admin_std = bind(&config.admin_listen, "admin.listen")?;
    config.admin_listen = admin_std.local_addr().map_err(|source| StartError::Bind {
        key: "admin.listen".into(),
        addr: config.admin_listen,
        source,
    })?;
    for (i, r) in config.routes.iter().enumerate() {
        if r.listen.port() != 0 {
            drop(bind(&r.listen, &format!("routes[{i}].listen"))?);
        }
    }
    let reserved = listeners::resolve(&mut config).map_err(|source| StartError::Bind {
        key: "routes[].listen".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;

    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tokenproxy-control")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let app = Arc::new(App {
        config_path,
        resolved_listens: reserved.resolved.clone(),
        config: ArcSwap::from_pointee(config.clone()),
        tokens: TokenManager::with_shared_cache(
            config
                .shared_cache
                .clone()
                .map(|c| Arc::new(SharedCache::new(c))),
        ),
        keys: crate::verify::keys::KeyStore::default(),
        routes: Arc::new(RouteTable::new(&config)),
    });
    let stop = CancellationToken::new();
    let threads = config.threads;
    let grace = config.shutdown_grace;
    control.block_on(async {
        app.apply(config).await?;
        metrics::config_loaded_at_start();
        let admin_listener =
            tokio::net::TcpListener::from_std(admin_std).map_err(|source| StartError::Bind {
                key: "admin.listen".into(),
                addr: app.config.load().admin_listen,
                source,
            })?;
        info!(addr = %app.config.load().admin_listen, "admin listener up");
        tokio::spawn(admin::run(admin_listener, app.routes.clone(), stop.clone()));
        tokio::spawn(reload::watch(app.clone(), stop.clone()));
        Ok::<_, StartError>(())
    })?;

    let mut conf = ServerConf {
        threads,
        // One current-thread runtime per worker thread: no cross-thread queues or atomics on the
        // request path, which a 1-thread sidecar pays for with nothing in return.
        work_stealing: false,
        // pingora sleeps the whole grace period; the drain watch in `shutdown` exits earlier.
        grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
        graceful_shutdown_timeout_seconds: Some(1),
        // pingora's fast timeouts share a clock thread that wakes every 10 ms for the life of the
        // process, once any of them is armed; pingora arms one for every accepted connection.
        // Timeouts of a second or more on tokio's timer keep an idle sidecar's core asleep, and a
        // busy one's worker from being preempted 100 times a second. pingora's h2 client still
        // starts the clock thread, on the first request to an upstream that selects h2.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    };
    conf.daemon = false;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let pingora_proxy = pingora::proxy::http_proxy(
        &server.configuration,
        proxy::TokenProxy {
            routes: app.routes.clone(),
        },
    );
    let mut service = Service::new(
        "tokenproxy".to_string(),
        h1::H1App::new(pingora_proxy, app.routes.clone()),
    );
    for addr in app.routes.listen_addrs() {
        if reserved.resolved.values().any(|a| a == addr) {
            // The reserving socket holds the port with SO_REUSEPORT until this one listens.
            let mut options = TcpSocketOptions::default();
            options.so_reuseport = Some(true);
            service.add_tcp_with_settings(&addr.to_string(), options);
        } else {
            service.add_tcp(&addr.to_string());
        }
    }
    server.add_service(service);
    log_routes(&app.config.load());
    let ready = ready.map(|to| (to, listeners::ready_json(&app.config.load())));
    control.spawn(mark_listening(app.routes.clone(), reserved, ready));
    let on_exit = {
        let app = app.clone();
        Arc::new(move || {
            app.tokens.shutdown();
            app.keys.shutdown();
        }) as Arc<dyn Fn() + Send + Sync>
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            control: control.handle().clone(),
            on_exit,
        }),
    });
    warn!(
        in_flight = crate::shutdown::in_flight(),
        "shutdown grace period over; exiting"
    );
    stop.cancel();
    app.tokens.shutdown();
    app.keys.shutdown();
    control.shutdown_background();
    Ok(())
}

/// One log line per route: what it injects, or which issuer it verifies against.
fn log_routes(config: &Config) {
    for r in &config.routes {
        match (&r.token, &r.verify) {
            (Some(token), _) => {
                info!(route = %r.name, listen = %r.listen, upstream = %r.upstream.authority, token = %token, "route");
            }
            (None, Some(v)) => {
                info!(route = %r.name, listen = %r.listen, upstream = %r.upstream.authority, issuer = %v.issuer, "verify route");
            }
            (None, None) => {}
        }
    }
}

/// Waits until every proxy listener accepts a connection (pingora binds them on its own
/// runtime), then marks the route table as listening for `/readyz`.
async fn mark_listening(
    routes: Arc<RouteTable>,
    reserved: listeners::Reserved,
    ready: Option<(listeners::ReadyTo, String)>,
) {
    let addrs: Vec<SocketAddr> = routes.listen_addrs().copied().collect();
    for addr in addrs {
        let target = if addr.ip().is_unspecified() {
            let ip = if addr.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(Ipv6Addr::LOCALHOST)
            };
            SocketAddr::new(ip, addr.port())
        } else {
            addr
        };
        // Another process may have taken the port since the bind check: pingora then retries
        // its bind, and the connection would reach the other process. Only our socket counts.
        while tokio::net::TcpStream::connect(target).await.is_err() || !owns_listener(&addr) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    routes.set_listening();
    drop(reserved);
    info!("proxy listeners up");
    if let Some((to, content)) = ready {
        to.tell(content);
    }
}

/// Whether this process holds a listening TCP socket bound to `addr`: the socket inodes among
/// `/proc/self/fd` against the LISTEN entries of `/proc/self/net/tcp` (or `tcp6`). Where `/proc`
/// cannot be read, assume so.
fn owns_listener(addr: &SocketAddr) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return true;
    };
    let sockets: HashSet<u64> = fds
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inode.parse().ok()
        })
        .collect();
    let table = if addr.is_ipv4() {
        "/proc/self/net/tcp"
    } else {
        "/proc/self/net/tcp6"
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return true;
    };
    text.lines()
        .skip(1)
        .filter_map(listening_entry)
        .any(|(a, inode)| a == *addr && sockets.contains(&inode))
}

/// The address and socket inode of a LISTEN line of `/proc/net/tcp` or `tcp6`, where addresses
/// are hex words in host byte order and the port is hex.
fn listening_entry(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if *fields.get(3)? != "0A" {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::from(w.to_ne_bytes()),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), fields.get(9)?.parse().ok()?))
}

fn bind(addr: &SocketAddr, key: &str) -> Result<std::net::TcpListener, StartError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind {
        key: key.to_string(),
        addr: *addr,
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| StartError::Bind {
        key: key.to_string(),
        addr: *addr,
        source,
    })?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listen_entries_of_proc_net_tcp() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            listening_entry(v4),
            Some(("127.0.0.1:8080".parse().unwrap(), 4242))
        );
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(listening_entry(&established), None);
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_entry(v6), Some(("[::1]:80".parse().unwrap(), 77)));
        assert_eq!(listening_entry("garbage"), None);
    }

    #[test]
    fn a_listener_counts_only_while_this_process_holds_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(owns_listener(&addr));
        drop(l);
        assert!(!owns_listener(&addr));
    }
}
