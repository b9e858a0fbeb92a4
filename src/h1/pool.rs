//! Idle upstream connections of one route's upstream, kept for reuse by the lean path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per upstream; more are closed when returned.
const MAX_IDLE: usize = 128;

pub struct Pool {
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    /// Idle connections older than this are closed instead of reused.
    max_idle_time: Duration,
}

impl Pool {
    pub fn new(max_idle_time: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle_time,
        }
    }

    /// The most recently used idle connection that is still open, if any.
    pub fn take(&self, now: Instant) -> Option<TcpStream> {
        loop {
            let (conn, since) = self.lock().pop()?;
            if self.reusable(&conn, since, now) {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last exchange finished cleanly.
    pub fn put(&self, conn: TcpStream, now: Instant) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Closes the connections that timed out or that the upstream closed.
    pub fn sweep(&self, now: Instant) {
        self.lock()
            .retain(|(conn, since)| self.reusable(conn, *since, now));
    }

    /// Idle for less than the limit, and not closed by the upstream meanwhile.
    fn reusable(&self, conn: &TcpStream, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) < self.max_idle_time && still_open(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(TcpStream, Instant)>> {
        // The critical sections cannot panic; a poisoned pool is still a valid Vec.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An idle connection has nothing to read: a byte, an EOF or an error means the upstream closed
/// it or broke the protocol. This is a readiness check, not a system call, when nothing arrived.
fn still_open(conn: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
