//! Listen addresses as the running proxy holds them: a route listening on port 0 gets a free port
//! of the kernel's choosing, reserved from start-up until pingora listens on it, and the
//! addresses in force are written to the `--ready-file` once every listener accepts connections.
//! So a test or a supervisor binds `127.0.0.1:0` and reads back what it got, without racing for
//! a port it guessed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpSocket;

use crate::config::Config;

/// Ports of port-0 routes, each held by a bound socket that does not listen (so no connection
/// reaches it) until pingora's listener, bound to the same port with `SO_REUSEPORT`, has taken
/// over. Dropping it gives the reservation up.
pub(crate) struct Reserved {
    _sockets: Vec<TcpSocket>,
    /// Route name → the address its `:0` stands for; reloads map `:0` the same way.
    pub(crate) resolved: BTreeMap<String, SocketAddr>,
}

/// Puts a concrete port in place of every route's port 0, reserving each.
pub(crate) fn resolve(config: &mut Config) -> std::io::Result<Reserved> {
    let mut sockets = Vec::new();
    let mut resolved = BTreeMap::new();
    for route in config.routes.iter_mut().filter(|r| r.listen.port() == 0) {
        let socket = if route.listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseport(true)?;
        socket.bind(route.listen)?;
        route.listen = socket.local_addr()?;
        resolved.insert(route.name.clone(), route.listen);
        sockets.push(socket);
    }
    Ok(Reserved {
        _sockets: sockets,
        resolved,
    })
}

/// Gives each route of a reloaded `config` that listens on port 0 the address its name got at
/// start-up (a new route on port 0 keeps it, and is reported as needing a restart).
pub(crate) fn apply_resolved(config: &mut Config, resolved: &BTreeMap<String, SocketAddr>) {
    for route in config.routes.iter_mut().filter(|r| r.listen.port() == 0) {
        if let Some(addr) = resolved.get(&route.name) {
            route.listen = *addr;
        }
    }
}

/// Where the running proxy tells which addresses it listens on (as [`ready_json`]), once every
/// listener accepts connections.
pub enum ReadyTo {
    /// `--ready-file`: written whole or not at all.
    File(PathBuf),
    /// In-process (the demo, which starts the proxy on port 0 and then prints where it is).
    Channel(tokio::sync::oneshot::Sender<String>),
}

impl ReadyTo {
    pub(crate) fn tell(self, content: String) {
        match self {
            ReadyTo::File(path) => {
                if let Err(e) = write_atomically(&path, &content) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the ready file");
                }
            }
            ReadyTo::Channel(tx) => {
                let _ = tx.send(content);
            }
        }
    }
}

/// The ready file's content: `{"admin": "IP:port", "routes": {"NAME": "IP:port", ...}}`.
pub(crate) fn ready_json(config: &Config) -> String {
    let routes: serde_json::Map<String, serde_json::Value> = config
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.listen.to_string().into()))
        .collect();
    serde_json::json!({ "admin": config.admin_listen.to_string(), "routes": routes }).to_string()
}

/// Writes `content` to `path` whole or not at all (a temporary file renamed over it), so that a
/// reader that sees the file sees all of it.
pub(crate) fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listens: &[&str]) -> Config {
        let routes: String = listens
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "  - name: r{i}\n    listen: {l}\n    upstream: http://127.0.0.1:9\n    token: {{ provider: p }}\n"
                )
            })
            .collect();
        let yaml = format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nproviders:\n  p:\n    token_url: http://127.0.0.1:9/t\n    client_id: c\n    client_secret: s\nroutes:\n{routes}"
        );
        Config::from_yaml(&yaml, &|_| None).unwrap()
    }

    #[test]
    fn port_zero_routes_get_distinct_reserved_ports_and_reloads_map_them_by_name() {
        let mut c = config(&["127.0.0.1:0", "127.0.0.1:0"]);
        let reserved = resolve(&mut c).unwrap();
        let (a, b) = (c.routes[0].listen, c.routes[1].listen);
        assert!(a.port() != 0 && b.port() != 0 && a != b);
        // Reserved: a plain bind of the same port fails while the reservation lives.
        assert!(std::net::TcpListener::bind(a).is_err());
        let mut reloaded = config(&["127.0.0.1:0", "127.0.0.1:0"]);
        apply_resolved(&mut reloaded, &reserved.resolved);
        assert_eq!(
            (reloaded.routes[0].listen, reloaded.routes[1].listen),
            (a, b)
        );
        drop(reserved);
        assert!(std::net::TcpListener::bind(a).is_ok());
    }

    #[test]
    fn the_ready_file_names_every_listener() {
        let mut c = config(&["127.0.0.1:0"]);
        c.admin_listen = "127.0.0.1:9901".parse().unwrap();
        let _reserved = resolve(&mut c).unwrap();
        let v: serde_json::Value = serde_json::from_str(&ready_json(&c)).unwrap();
        assert_eq!(v["admin"], "127.0.0.1:9901");
        assert_eq!(v["routes"]["r0"], c.routes[0].listen.to_string());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        write_atomically(&path, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
    }
}
