//! The command line: `run`, `check`, `demo` and `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::listeners::ReadyTo;
use crate::{demo, logging, server};

#[derive(Parser)]
#[command(
    name = "tokenproxy",
    version,
    about = "Injects OAuth2 client-credentials tokens into the requests of services that have no token logic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file [default: $TOKENPROXY_CONFIG, then ./config.yaml]
        #[arg(long, env = "TOKENPROXY_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
        /// Once every listener accepts connections, write the listen addresses in force (port 0
        /// resolved) to this file as JSON: {"admin": "IP:port", "routes": {"NAME": "IP:port"}}
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Load and validate a config file; bind nothing, fetch nothing.
    Check {
        /// Config file [default: $TOKENPROXY_CONFIG, then ./config.yaml]
        #[arg(long, env = "TOKENPROXY_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// A self-contained demo on loopback: token issuer, echo API and the proxy between them.
    Demo {
        #[command(subcommand)]
        part: Option<demo::Part>,
    },
    /// Exit 0 if URL answers 200 (for container health checks without a shell).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9901/readyz")]
        url: String,
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: {}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(1)
            }
        },
        Command::Run {
            config: path,
            ready_file,
        } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tokenproxy: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            logging::init(&config.log);
            match server::run(config, Some(path), ready_file.map(ReadyTo::File)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("tokenproxy: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Demo { part } => demo::main(part),
        Command::Healthcheck { url, timeout } => healthcheck(&url, timeout),
    }
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        client.get(url).send().await
    });
    match result {
        Ok(r) if r.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("healthcheck: {url} answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
