//! Builds the YAML configs the tests start the proxy with: one provider `idp`, any routes.

use std::fmt::Write as _;

pub struct Cfg {
    admin: u16,
    top: String,
    provider: String,
    routes: String,
}

impl Cfg {
    /// Admin on `127.0.0.1:admin`; provider `idp` at `token_url` with client `cid` and `secret`.
    pub fn new(admin: u16, token_url: &str, secret: &str) -> Self {
        Cfg {
            admin,
            top: String::new(),
            provider: format!(
                "    token_url: \"{token_url}\"\n    client_id: cid\n    client_secret: \"{secret}\"\n"
            ),
            routes: String::new(),
        }
    }

    /// Admin on `127.0.0.1:admin`; provider `idp` opens with `head` (where to get tokens and how
    /// the client authenticates) instead of a token URL, `cid` and a secret.
    pub fn with_head(admin: u16, head: &[&str]) -> Self {
        let mut provider = String::new();
        for line in head {
            let _ = writeln!(provider, "    {line}");
        }
        Cfg {
            admin,
            top: String::new(),
            provider,
            routes: String::new(),
        }
    }

    /// A top-level line, e.g. `shutdown_grace: 10s`.
    pub fn top(mut self, line: &str) -> Self {
        let _ = writeln!(self.top, "{line}");
        self
    }

    /// A line under the provider, e.g. `refresh: { retry_initial: 100ms }`.
    pub fn provider(mut self, line: &str) -> Self {
        let _ = writeln!(self.provider, "    {line}");
        self
    }

    /// A route using provider `idp` with no audience; `extra` lines go under the route (a
    /// `verify:` line makes it a verify route, with no token).
    pub fn route(mut self, name: &str, port: u16, upstream: &str, extra: &[&str]) -> Self {
        let _ = writeln!(
            self.routes,
            "  - name: {name}\n    listen: 127.0.0.1:{port}\n    upstream: {upstream}"
        );
        let mut token = false;
        for line in extra {
            token |= line.starts_with("token:") || line.starts_with("verify:");
            let _ = writeln!(self.routes, "    {line}");
        }
        if !token {
            let _ = writeln!(self.routes, "    token: {{ provider: idp }}");
        }
        self
    }

    pub fn build(&self) -> String {
        format!(
            "admin: {{ listen: 127.0.0.1:{} }}\n{}providers:\n  idp:\n{}routes:\n{}",
            self.admin, self.top, self.provider, self.routes
        )
    }
}
