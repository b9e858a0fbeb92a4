//! tokenproxy: a sidecar that obtains OAuth2 client-credentials tokens, keeps them fresh in the
//! background, and injects them into the requests a legacy service sends through it.
//!
//! - [`config`]: the YAML file, `${VAR}` substitution, validation into [`config::Config`].
//! - [`credentials`]: client authentication: secrets, signed and external assertions, TLS client certificates.
//! - [`secret`]: newtypes that keep secrets and tokens out of `Debug` and logs.
//! - [`token`]: token keys, the token client and the reading of its answers, discovery, the
//!   cache, the schedule rules and the refreshers.
//! - [`upstream`]: upstream address resolution, trust roots, what is known of the upstream's
//!   HTTP version, and the pingora peer.
//! - [`routes`]: the live route table, swapped atomically on reload.
//! - [`forward`]: the request and response policy both request paths apply, and the table of
//!   answers the proxy gives itself.
//! - [`verify`]: verify routes: inbound bearer tokens checked against the issuer's keys (the
//!   JWKS document in `verify::jwks`, the keys as fetched in `verify::keys`), decided once for
//!   both request paths.
//! - [`proxy`]: pingora's path: the `ProxyHttp` hooks that inject the token, the policy on
//!   pingora's types (`proxy::policy`), and the record of a finished request (`proxy::record`).
//! - [`h1`]: the lean HTTP/1.1 path that serves plain requests itself, in front of [`proxy`]:
//!   the connection (`h1::conn`), the decision on a head (`h1::decide`), the exchange with the
//!   upstream (`h1::exchange`), the relay to the caller (`h1::relay`), wire format and body
//!   framing (`h1::wire`, `h1::body`), its upstream pool and TLS client (`h1::pool`,
//!   `h1::tls`), and the limits on caller connections (`h1::limits`) that hold on both paths.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/tokens`, `/keys`.
//! - [`metrics`]: every Prometheus metric, in one registry.
//! - [`reload`]: SIGHUP and file-change reload, secret file watching.
//! - [`shutdown`]: in-flight accounting and graceful exit on SIGTERM/SIGINT.
//! - [`shared_cache`]: the optional fleet-wide token cache on Redis (encrypted, lock-elected fetch).
//! - [`app`]: the running proxy's shared state, and putting a config in force.
//! - [`server`]: wiring of a running proxy.
//! - [`listeners`]: port 0 resolved and reserved, and the `--ready-file`.
//! - [`logging`]: tracing set-up.
//! - [`serve`]: a small hyper server loop for the admin and demo listeners.
//! - [`demo`]: the self-contained demo: a token issuer and an echo API.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]
// A few of clippy's pedantic lints that the team agreed on (CI runs clippy with -D warnings):
// casts that can truncate or change sign, Instant/Duration subtraction that can panic, very long
// functions (the threshold is in clippy.toml), and two consistency lints.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::unchecked_time_subtraction,
    clippy::too_many_lines,
    clippy::semicolon_if_nothing_returned,
    clippy::redundant_closure_for_method_calls
)]

pub(crate) mod admin;
pub(crate) mod app;
pub mod cli;
pub mod config;
pub(crate) mod credentials;
pub mod demo;
pub mod forward;
pub mod h1;
pub(crate) mod listeners;
pub(crate) mod logging;
pub(crate) mod metrics;
pub mod proxy;
pub(crate) mod reload;
pub(crate) mod routes;
pub mod secret;
pub(crate) mod serve;
pub(crate) mod server;
pub mod shared_cache;
pub(crate) mod shutdown;
pub mod token;
pub(crate) mod upstream;
pub(crate) mod verify;
