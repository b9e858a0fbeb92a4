//! Graceful shutdown: count requests in flight, and on SIGTERM or SIGINT stop accepting and exit
//! as soon as the last one is done, or when `shutdown_grace` runs out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Held by every request from its first phase to its last; counts it as in flight.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Release);
    }
}

pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// Tells pingora to shut down gracefully on SIGTERM and SIGINT, and starts the drain watch that
/// ends the process once nothing is in flight. pingora itself would wait out the whole grace
/// period even when idle.
pub struct Signals {
    pub control: tokio::runtime::Handle,
    /// Run just before the process exits (flush, stop refreshers).
    pub on_exit: Arc<dyn Fn() + Send + Sync>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                error!("cannot install the SIGTERM/SIGINT handlers; shutting down");
                return ShutdownSignal::FastShutdown;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            in_flight = in_flight(),
            "shutting down: no new connections; waiting for requests in flight"
        );
        let on_exit = self.on_exit.clone();
        // The drain watch runs on the control runtime, which pingora does not stop.
        self.control.spawn(async move {
            // pingora closes the listeners right after this returns; give a connection accepted
            // just before it the moment it needs to start its request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            info!("no requests in flight; exiting");
            on_exit();
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}
