//! What a caller connection may take of the proxy: a place among its listener's
//! `max_connections`, and a write towards it within `client_write_timeout`.
//! (`client_header_timeout` is kept where heads are read: the lean path reads every head whole,
//! for both paths, in `read_more`.)

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::Stream;
use prometheus::IntGauge;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::debug;

use super::timer::LazyTimer;
use crate::metrics::RouteMetrics;
use crate::routes::Listener;

/// A caller connection's place on its listener: counted while it lives, whichever path serves
/// the connection.
pub struct ConnSlot {
    open: Arc<AtomicUsize>,
    gauge: Option<IntGauge>,
}

impl ConnSlot {
    /// Takes a place on `listener`, or `None` when `max` connections are open there already.
    /// `metrics` are those of the route the listener serves, if it has one.
    pub fn take(
        listener: &Listener,
        max: usize,
        metrics: Option<&RouteMetrics>,
    ) -> Option<ConnSlot> {
        let taken = listener
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return None;
        }
        let gauge = metrics.map(RouteMetrics::connections_open);
        if let Some(g) = &gauge {
            g.inc();
        }
        Some(ConnSlot {
            open: listener.open.clone(),
            gauge,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// Writes `parts` to the caller and flushes, failing with `TimedOut` (counted as a `write`
/// timeout of the route, when there is one) if that takes longer than `timeout`: a caller that stops reading must
/// not hold its connection, and the upstream's, for ever.
pub(super) async fn write_to_caller(
    io: &mut Stream,
    timer: &mut LazyTimer,
    timeout: Duration,
    metrics: Option<&RouteMetrics>,
    parts: &[&[u8]],
) -> io::Result<()> {
    let write = async {
        for part in parts {
            io.write_all(part).await?;
        }
        io.flush().await
    };
    match timer.run(Instant::now() + timeout, write).await {
        Some(done) => done,
        None => {
            debug!("the caller did not read its response within client_write_timeout; closing");
            if let Some(m) = metrics {
                m.write_timeout();
            }
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the caller did not read its response within client_write_timeout",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_listener_and_given_back_on_drop() {
        let listener = Listener::default();
        let a = ConnSlot::take(&listener, 2, None).expect("first");
        let b = ConnSlot::take(&listener, 2, None).expect("second");
        assert!(ConnSlot::take(&listener, 2, None).is_none());
        assert_eq!(listener.open.load(Ordering::SeqCst), 2);
        drop(a);
        let c = ConnSlot::take(&listener, 2, None).expect("a place came free");
        // A lower cap (after a reload) refuses new connections until enough have closed.
        assert!(ConnSlot::take(&listener, 1, None).is_none());
        drop((b, c));
        assert_eq!(listener.open.load(Ordering::SeqCst), 0);
    }
}
