//! Configuration: loading the YAML file, `${VAR}` substitution, and validation into a [`Config`]
//! that the rest of the program uses. Every error names the key that is wrong.
//!
//! - `file`: the file as written (serde structs, nothing checked yet).
//! - `env`: `${VAR}` substitution.
//! - `validate`: from the file to the checked model, naming the key of every error; `route`
//!   does it for each route.
//! - `model`: the checked [`Config`] the program uses.
//! - `credentials`, `shared_cache`, `verify`: the validation of those blocks.

mod credentials;
mod duration;
mod env;
mod file;
mod model;
mod route;
mod shared_cache;
mod validate;
mod verify;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::token::TokenKey;
use file::FileConfig;

pub use credentials::{check_url, Endpoint, Issuer};
pub use duration::parse as parse_duration;
pub use model::*;
pub use shared_cache::SharedCacheConfig;
pub use verify::{ScopeRule, VerifyConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("{key}: environment variable {var} is not set")]
    UnsetEnv { key: String, var: String },
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads, substitutes and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text, taking `${VAR}` values from `lookup`.
    pub fn from_yaml(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if value.is_null() {
            return Err(ConfigError::Syntax("the file is empty".into()));
        }
        env::substitute(&mut value, "", lookup)?;
        let raw: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                "(top level)".to_string()
            } else {
                path
            };
            ConfigError::key(key, e.into_inner().to_string())
        })?;
        validate::validate(raw)
    }

    /// A one-line description for `tokenproxy check`.
    pub fn summary(&self) -> String {
        let tokens: HashSet<&TokenKey> = self
            .routes
            .iter()
            .filter_map(|r| r.token.as_ref())
            .collect();
        let verify = self.routes.iter().filter(|r| r.verify.is_some()).count();
        format!(
            "config ok: {} provider(s), {} route(s) ({} verify), {} distinct token(s), admin on {}",
            self.providers.len(),
            self.routes.len(),
            verify,
            tokens.len(),
            self.admin_listen
        )
    }
}

/// True when `addr` is reachable only from this host.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests;
