//! The TLS sessions the lean path keeps for one route's upstream: enough TLS 1.3 tickets that a
//! pool refilling at once (after the upstream or the idle timer closed its connections) resumes
//! every connection instead of the first eight, which is all rustls' own cache keeps per server.
//!
//! Only storage: the tickets and sessions are rustls' values, opaque here, and rustls decides
//! whether one is still good. Nothing of them reaches `Debug` output.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// TLS 1.3 tickets kept per route: up to this many connections opened at once resume. A ticket
/// holds the session's secret, the server's ticket and its certificate chain (shared by the
/// tickets of one connection): a few KiB per connection for a busy route, nothing for an idle one.
const TICKETS: usize = 64;

/// A bounded stack: the newest value is taken first (the one furthest from expiring), each at
/// most once; when full, the oldest goes.
struct Newest<T> {
    values: VecDeque<T>,
    cap: usize,
}

impl<T> Newest<T> {
    fn new(cap: usize) -> Self {
        Newest {
            values: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, value: T) {
        if self.cap == 0 {
            return;
        }
        if self.values.len() == self.cap {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    fn take(&mut self) -> Option<T> {
        self.values.pop_back()
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

struct Sessions {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: Newest<Tls13ClientSessionValue>,
}

/// The session store of one route's TLS configuration. A configuration verifies one server name,
/// so the store keeps the sessions of that name and ignores any other (which a configuration
/// never asks for): sessions never cross to another name or another route's trust roots.
pub struct RouteSessions {
    name: ServerName<'static>,
    inner: Mutex<Sessions>,
}

impl RouteSessions {
    pub fn new(name: ServerName<'static>) -> Self {
        RouteSessions {
            name,
            inner: Mutex::new(Sessions {
                kx_hint: None,
                tls12: None,
                tls13: Newest::new(TICKETS),
            }),
        }
    }

    /// The sessions, when `name` is this store's.
    fn of(&self, name: &ServerName<'_>) -> Option<MutexGuard<'_, Sessions>> {
        if *name != self.name {
            return None;
        }
        Some(self.sessions())
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // Each critical section is one assignment or push: a poisoned lock holds whole values.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientSessionStore for RouteSessions {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        if let Some(mut s) = self.of(&name) {
            s.kx_hint = Some(group);
        }
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.of(name)?.kx_hint
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(mut s) = self.of(&name) {
            s.tls12 = Some(value);
        }
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.of(name)?.tls12.clone()
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        if let Some(mut s) = self.of(name) {
            s.tls12 = None;
        }
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        if let Some(mut s) = self.of(&name) {
            s.tls13.insert(value);
        }
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.of(name)?.tls13.take()
    }
}

/// How many sessions are kept, never what they hold.
impl fmt::Debug for RouteSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.sessions();
        f.debug_struct("RouteSessions")
            .field("name", &self.name)
            .field("tls13_tickets", &s.tls13.len())
            .field("tls12_session", &s.tls12.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_value_is_taken_first_and_each_only_once() {
        let mut n = Newest::new(3);
        for v in 1..=2 {
            n.insert(v);
        }
        assert_eq!(n.take(), Some(2));
        n.insert(3);
        assert_eq!((n.take(), n.take(), n.take()), (Some(3), Some(1), None));
    }

    #[test]
    fn a_full_stack_drops_its_oldest_value() {
        let mut n = Newest::new(TICKETS);
        for v in 0..TICKETS + 6 {
            n.insert(v);
        }
        assert_eq!(n.len(), TICKETS);
        let taken: Vec<usize> = std::iter::from_fn(|| n.take()).collect();
        assert_eq!(taken.len(), TICKETS);
        assert_eq!(taken.first(), Some(&(TICKETS + 5)));
        assert_eq!(taken.last(), Some(&6), "the six oldest went");
        let mut none = Newest::new(0);
        none.insert(1);
        assert_eq!(none.take(), None);
    }

    #[test]
    fn another_name_gets_nothing_and_debug_shows_counts_only() {
        let name = ServerName::try_from("api.example").unwrap();
        let store = RouteSessions::new(name.clone());
        store.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::X25519));
        let other = ServerName::try_from("other.example").unwrap();
        assert_eq!(store.kx_hint(&other), None);
        store.set_kx_hint(other.clone(), NamedGroup::secp256r1);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::X25519));
        assert!(store.take_tls13_ticket(&other).is_none());
        assert_eq!(
            format!("{store:?}"),
            r#"RouteSessions { name: DnsName("api.example"), tls13_tickets: 0, tls12_session: false }"#
        );
    }
}
