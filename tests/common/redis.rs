//! A real `redis-server` (Debian's package) for a test: no persistence, and the faults the shared
//! cache must survive (kill, restart at the same address, SIGSTOP). A plain server listens on a
//! unix socket only and is reached through a TCP relay bound to `127.0.0.1:0`, so no test guesses
//! a free port; a TLS server (which Redis does not offer on a unix socket) gets a port the kernel
//! chose a moment before, and is started again on another if that port was taken meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub struct RedisServer {
    child: Option<Child>,
    /// Where the proxy and the tests connect: the relay's port (plain) or the TLS port.
    pub port: u16,
    /// For a plain server: its unix socket and the relay in front of it.
    relay: Option<Relay>,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// Further `redis-server` arguments (TLS, ACL users); with TLS, `redis-cli` is not used.
    extra: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a unix socket with `--save ""`, behind a relay on a loopback
    /// port, and waits until it answers.
    pub async fn start(password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start(dir.path().join("redis.sock"));
        let mut r = RedisServer {
            child: None,
            port: relay.port,
            relay: Some(relay),
            password: password.map(str::to_string),
            dir,
            extra: Vec::new(),
            tls: false,
        };
        r.spawn().await;
        r
    }

    /// Starts it with TLS only (certificate from `ca`) and an ACL user `user` with password
    /// `password` limited to keys under `tokenproxy:`; the default user is off.
    pub async fn start_tls_acl(ca: &super::tls::TestCa, user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let cert = file("server.pem", &ca.server_cert_pem);
        let key = file("server.key", &ca.server_key_pem);
        let ca_file = file("ca.pem", &ca.ca_pem);
        let extra = [
            "--port",
            "0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~tokenproxy:*",
            "+@all",
        ];
        let mut r = RedisServer {
            child: None,
            port: 0,
            relay: None,
            password: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: true,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        if self.tls {
            // A port the kernel chose a moment ago may have been taken since: try another.
            for _ in 0..5 {
                self.port = kernel_chosen_port();
                let args = vec!["--tls-port".to_string(), self.port.to_string()];
                if self.spawn_with(&args).await {
                    return;
                }
            }
            panic!("redis-server (TLS) could not listen on any of 5 ports");
        }
        assert!(self.spawn_with(&[]).await, "redis-server did not start");
        let ok = wait_for(Duration::from_secs(10), || async {
            self.cli(&["PING"]).starts_with(b"PONG")
        })
        .await;
        assert!(ok, "redis-server does not answer PING");
    }

    /// Starts the server with `args` added; `false` if it exited before it listened.
    async fn spawn_with(&mut self, args: &[String]) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.relay {
            Some(relay) => {
                cmd.args(["--port", "0", "--unixsocket"]).arg(&relay.socket);
            }
            None => {
                cmd.args(["--bind", "127.0.0.1"]);
            }
        }
        cmd.args(&self.extra)
            .args(args)
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = cmd.spawn().expect(
            "redis-server not found: scripts/setup.sh installs Debian's redis-server package",
        );
        let port = self.port;
        let socket = self.relay.as_ref().map(|r| r.socket.clone());
        let mut exited = false;
        let up = wait_for(Duration::from_secs(10), || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            let gone = exited;
            let socket = socket.clone();
            async move {
                gone || match socket {
                    Some(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
                    None => tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok(),
                }
            }
        })
        .await;
        if !up || exited {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        self.child = Some(child);
        true
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli --raw` with `args` and returns its stdout bytes.
    pub fn cli(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("redis-cli");
        match &self.relay {
            Some(relay) => cmd.arg("-s").arg(&relay.socket),
            None => cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]),
        };
        cmd.arg("--raw");
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        out.stdout
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let out = self.cli(&["--scan", "--pattern", pattern]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// SIGKILLs the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again at the same address, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            super::send_signal(c.id(), sig);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped server must be woken before it can die of SIGKILL's reaping cleanly.
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// A port that was free a moment ago, for the TLS server, which cannot be given port 0 and say
/// what it got ([`RedisServer::spawn`] tries another when it was taken meanwhile).
fn kernel_chosen_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Relays each TCP connection on a loopback port of its own to the server's unix socket, on a
/// thread of its own (so a test that blocks does not stall the proxy's Redis traffic). While the
/// server is down, a connection is accepted and closed at once.
struct Relay {
    port: u16,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(socket: PathBuf) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((tcp, _)) = accepted {
                                tokio::spawn(pipe(tcp, path.clone()));
                            }
                        }
                    }
                }
            });
        });
        Relay {
            port,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

async fn pipe(mut tcp: tokio::net::TcpStream, socket: impl AsRef<Path>) {
    if let Ok(mut unix) = tokio::net::UnixStream::connect(socket).await {
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
