//! A real `redis-server` (Debian's package) for a test: its own loopback port, no persistence,
//! and the faults the shared cache must survive (kill, restart on the same port, SIGSTOP).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{port_for_external_server, wait_for};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// Further `redis-server` arguments (TLS, ACL users); with TLS, `redis-cli` is not used.
    extra: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port with `--save ""`, and waits until it answers.
    pub async fn start(password: Option<&str>) -> Self {
        let mut r = RedisServer {
            child: None,
            port: port_for_external_server(),
            password: password.map(str::to_string),
            dir: tempfile::tempdir().unwrap(),
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
        let port = port_for_external_server();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
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
            port,
            password: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: true,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if !self.tls {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(&self.extra)
            .args(["--bind", "127.0.0.1"])
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
        self.child = Some(cmd.spawn().expect(
            "redis-server not found: scripts/setup.sh installs Debian's redis-server package",
        ));
        let port = self.port;
        let ok = wait_for(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(ok, "redis-server did not listen on {port}");
        if self.tls {
            return;
        }
        let ok = wait_for(Duration::from_secs(10), || async {
            self.cli(&["PING"]).starts_with(b"PONG")
        })
        .await;
        assert!(ok, "redis-server on {port} does not answer PING");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli --raw` with `args` and returns its stdout bytes.
    pub fn cli(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"]);
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

    /// Starts it again on the same port, empty.
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
