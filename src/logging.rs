//! Log set-up: `tracing` to stderr as text or JSON, level from `RUST_LOG` or `log.level`, with
//! the `log` records of pingora and other crates captured into the same stream.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// pingora logs request and response headers and body chunks at debug and trace, which would put
/// tokens in the log: its crates are capped at info whatever the configured level.
const CAPS: &[&str] = &[
    "pingora_core=info",
    "pingora_proxy=info",
    "pingora_http=info",
    "pingora_pool=info",
    "pingora_runtime=info",
    "pingora_error=info",
    "pingora_timeout=info",
];

/// Installs the global subscriber. A second call (tests, the demo) is a no-op.
pub fn init(log: &LogConfig) {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("tokenproxy: ignoring invalid RUST_LOG={v:?}: {e}; using log.level");
            EnvFilter::new(&log.level)
        }),
        _ => EnvFilter::new(&log.level),
    };
    for cap in CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        // tracing-subscriber's default features bridge `log` records once a subscriber is set.
        let _ = tracing_log::LogTracer::init();
    }
}
