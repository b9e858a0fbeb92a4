//! Access tokens: what identifies one, how it is fetched, cached, scheduled and refreshed.

pub mod answer;
pub mod cache;
pub mod client;
pub mod discovery;
pub mod manager;
pub mod refresher;
pub mod schedule;

use std::fmt;

/// One token per distinct key: routes with the same key share the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    pub provider: String,
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider={}", self.provider)?;
        if let Some(a) = &self.audience {
            write!(f, " audience={a}")?;
        }
        if let Some(s) = &self.scope {
            write!(f, " scope=\"{s}\"")?;
        }
        if let Some(r) = &self.resource {
            write!(f, " resource={r}")?;
        }
        Ok(())
    }
}
