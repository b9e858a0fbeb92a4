//! Config reload on SIGHUP and on a change to the config file (polled, so that the symlink swap
//! of a Kubernetes ConfigMap is seen), and a nudge to failing refreshers when a secret file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::App;
use crate::config::Config;
use crate::metrics;

/// How often the config and secret files are checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What identifies a file's current content cheaply: the target's identity and times.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // metadata() follows symlinks, so a swapped link shows as a new inode.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}

/// Runs until `stop` fires.
pub async fn watch(app: Arc<App>, stop: CancellationToken) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot install the SIGHUP handler; reload only on file change");
            None
        }
    };
    let path = app.config_path.clone();
    let mut config_stamp = path.as_deref().and_then(stamp);
    let mut config_digest = path.as_deref().and_then(digest);
    let mut secrets = secret_stamps(&app.config.load());
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_signal = tokio::select! {
            _ = stop.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tick.tick() => false,
        };
        if let Some(path) = path.as_deref() {
            if by_signal {
                info!(path = %path.display(), "SIGHUP: reloading the config");
                reload(&app, path).await;
                config_stamp = stamp(path);
                config_digest = digest(path);
            } else {
                let now = stamp(path);
                if now != config_stamp {
                    config_stamp = now;
                    let d = digest(path);
                    if d.is_some() && d != config_digest {
                        config_digest = d;
                        info!(path = %path.display(), "config file changed: reloading");
                        reload(&app, path).await;
                    }
                }
            }
        } else if by_signal {
            info!("SIGHUP ignored: this config was not loaded from a file");
        }
        // Secret files: a new secret is read at the next fetch anyway; a refresher that is
        // failing (say with invalid_client) is woken to try the new one now.
        let now = secret_stamps(&app.config.load());
        for ((provider, file), s) in &now {
            if secrets.get(&(provider.clone(), file.clone())) != Some(s) {
                info!(provider = %provider, file = %file.display(), "credential file changed");
                app.tokens.wake_failing(provider);
            }
        }
        secrets = now;
    }
}

type SecretStamps = HashMap<(String, PathBuf), Option<Stamp>>;

/// Every credential file (secret, key, certificate, assertion) by provider.
fn secret_stamps(config: &Config) -> SecretStamps {
    config
        .providers
        .iter()
        .flat_map(|(name, p)| {
            p.credential
                .files()
                .into_iter()
                .map(move |f| ((name.clone(), f.to_path_buf()), stamp(f)))
        })
        .collect()
}

/// Loads and applies the file at `path`; on any error the running config stays.
pub async fn reload(app: &App, path: &Path) {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            metrics::config_loaded(false);
            error!(error = %e, "config reload rejected; the running config stays");
            return;
        }
    };
    let old = app.config.load_full();
    // `:0` asks for any port: the one it got at start-up is still what it asks for.
    let same_admin = config.admin_listen == old.admin_listen
        || (config.admin_listen.port() == 0 && config.admin_listen.ip() == old.admin_listen.ip());
    if !same_admin {
        warn!(old = %old.admin_listen, new = %config.admin_listen, "admin.listen changed: takes effect after a restart");
    }
    let same_cache = match (&config.shared_cache, &old.shared_cache) {
        (Some(a), Some(b)) => a.same_as(b),
        (None, None) => true,
        _ => false,
    };
    if !same_cache {
        warn!("shared_cache changed: takes effect after a restart");
    }
    if config.threads != old.threads {
        warn!("threads changed: takes effect after a restart");
    }
    if config.log != old.log {
        warn!("log.level/log.format changed: takes effect after a restart (RUST_LOG still applies); log.access applies now");
    }
    match app.reload(config).await {
        Ok(unbound) => {
            for r in unbound {
                warn!(route = %r, "route has a new listen address: it is served after a restart");
            }
            metrics::config_loaded(true);
            info!("config reloaded");
        }
        Err(e) => {
            metrics::config_loaded(false);
            error!(error = %e, "config reload rejected; the running config stays");
        }
    }
}
