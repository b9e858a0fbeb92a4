//! The real `tokenproxy` binary as a child process, with its stderr kept for assertions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::wait_for;

pub struct Proxy {
    child: Option<Child>,
    /// The admin port: as given, or (given 0) as the proxy reported it in its ready file.
    pub admin: u16,
    /// Route name → the port it listens on, from the ready file (see [`Proxy::port`]).
    ports: BTreeMap<String, u16>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    stderr_path: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tokenproxy")
}

impl Proxy {
    /// Writes `yaml` to a temporary config file and runs `tokenproxy run` on it with
    /// `RUST_LOG=debug` (or the `RUST_LOG` in `env`). `admin` is the port of `admin.listen`, or 0
    /// when the config asks for any port: then [`Proxy::ready`] and [`Proxy::listening`] learn
    /// the ports the proxy got from its `--ready-file`.
    pub fn start(yaml: &str, admin: u16, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml, admin, env)
    }

    /// Like [`Proxy::start`], in a directory the test already put files in.
    pub fn start_in(dir: tempfile::TempDir, yaml: &str, admin: u16, env: &[(&str, &str)]) -> Self {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(dir.path().join("ready.json"))
            .env("RUST_LOG", "debug")
            .env_remove("TOKENPROXY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Proxy {
            child: Some(child),
            admin,
            ports: BTreeMap::new(),
            dir,
            config_path,
            stderr_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "tokenproxy exited early with {status}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Waits for the ready file the proxy writes once its listeners are up, and takes the ports
    /// it names. Done once; [`Proxy::ready`] and [`Proxy::listening`] call it.
    pub async fn bound(&mut self) {
        if !self.ports.is_empty() {
            return;
        }
        let path = self.dir.path().join("ready.json");
        let deadline = Instant::now() + Duration::from_secs(20);
        let text = loop {
            self.assert_running();
            if let Ok(text) = std::fs::read_to_string(&path) {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "no ready file in 20s; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ready: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
        let port = |addr: &serde_json::Value| -> u16 {
            let addr: std::net::SocketAddr = addr.as_str().unwrap().parse().unwrap();
            addr.port()
        };
        self.admin = port(&ready["admin"]);
        for (name, addr) in ready["routes"].as_object().expect("routes") {
            self.ports.insert(name.clone(), port(addr));
        }
    }

    /// The port route `name` listens on (after [`Proxy::ready`] or [`Proxy::listening`]).
    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("no route {name} in the ready file (call ready() first)"))
    }

    /// Waits until `/readyz` answers 200: tokens fetched and listeners up.
    pub async fn ready(&mut self) {
        self.bound().await;
        let url = self.admin_url("/readyz");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.assert_running();
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready in 20s; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the admin listener answers and every proxy listener is up, tokens or not.
    pub async fn listening(&mut self) {
        self.bound().await;
        let url = self.admin_url("/readyz");
        let client = reqwest::Client::new();
        let ok = wait_for(Duration::from_secs(20), || {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client.get(&url).send().await {
                    Ok(r) => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        body.get("reason").is_none()
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        self.assert_running();
        assert!(ok, "proxy not listening in 20s; stderr:\n{}", self.stderr());
    }

    pub fn signal(&self, sig: i32) {
        super::send_signal(self.pid() as u32, sig);
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Panics if any of `secrets` appears in the proxy's stderr.
    pub fn assert_log_free_of(&self, secrets: &[String]) {
        let log = self.stderr();
        assert!(!log.is_empty(), "expected some log output");
        for s in secrets {
            assert!(!s.is_empty());
            assert!(
                !log.contains(s.as_str()),
                "secret {s:?} found in the log:\n{log}"
            );
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
