//! Idle upstream connections of one route's upstream, kept for reuse by the lean path, one set
//! per worker thread.
//!
//! Each pingora worker thread runs its own runtime, and a connection stays registered with the
//! runtime that opened it: used from another thread, every readiness event would cross threads
//! (a wake-up through the other runtime's driver). So a thread takes back only the connections
//! it put: each worker has its own shard.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tls::UpStream;

/// Idle connections kept per upstream and worker thread; more are closed when returned.
const MAX_IDLE: usize = 128;

type Idle = Vec<(UpStream, Instant)>;

pub struct Pool {
    shards: Box<[Mutex<Idle>]>,
    /// Idle connections older than this are closed instead of reused.
    max_idle_time: Duration,
}

impl Pool {
    /// A pool for `workers` threads (at least one shard).
    pub fn new(max_idle_time: Duration, workers: usize) -> Self {
        Pool {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            max_idle_time,
        }
    }

    /// The calling thread's most recently used idle connection that is still open, if any.
    pub fn take(&self, now: Instant) -> Option<UpStream> {
        let shard = self.shard();
        loop {
            let (mut conn, since) = lock(shard).pop()?;
            if self.reusable(&mut conn, since, now) {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last exchange finished cleanly, to the calling thread's shard.
    pub fn put(&self, conn: UpStream, now: Instant) {
        let mut idle = lock(self.shard());
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Closes the connections that timed out or that the upstream closed, in every shard.
    pub fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            lock(shard).retain_mut(|(conn, since)| self.reusable(conn, *since, now));
        }
    }

    fn shard(&self) -> &Mutex<Idle> {
        &self.shards[thread_number() % self.shards.len()]
    }

    /// Idle for less than the limit, and not closed by the upstream meanwhile.
    fn reusable(&self, conn: &mut UpStream, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) < self.max_idle_time && conn.idle_and_open()
    }
}

fn lock(shard: &Mutex<Idle>) -> std::sync::MutexGuard<'_, Idle> {
    // The critical sections cannot panic; a poisoned pool is still a valid Vec.
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A number for the calling thread, given in the order threads first use a pool: the worker
/// threads, the only ones that do, get 0, 1, 2…
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
    }
    NUMBER.with(|n| {
        n.get().unwrap_or_else(|| {
            let next = NEXT.fetch_add(1, Ordering::Relaxed);
            n.set(Some(next));
            next
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};
    use tokio::net::TcpStream;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Two worker threads with a runtime each: a connection one of them put back is not handed
    /// to the other, and its own thread gets it again.
    #[test]
    fn a_thread_takes_back_only_its_own_connections() {
        // Enough shards that the two threads' numbers cannot share one, whatever other threads
        // of the test binary were numbered in between.
        let pool = Arc::new(Pool::new(Duration::from_secs(30), 64));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (put_done, wait_put) = mpsc::channel();
        let (other_done, wait_other) = mpsc::channel();

        let owner = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                runtime().block_on(async move {
                    let conn = TcpStream::connect(addr).await.unwrap();
                    let (_peer, _) = listener.accept().unwrap();
                    pool.put(UpStream::Plain(conn), Instant::now());
                    put_done.send(()).unwrap();
                    wait_other.recv().unwrap();
                    pool.take(Instant::now()).is_some()
                })
            })
        };
        let other = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                wait_put.recv().unwrap();
                let taken = runtime().block_on(async move { pool.take(Instant::now()).is_some() });
                other_done.send(()).unwrap();
                taken
            })
        };
        assert!(!other.join().unwrap(), "another thread got the connection");
        assert!(owner.join().unwrap(), "its own thread did not get it back");
    }

    #[test]
    fn connections_past_the_idle_time_are_not_reused() {
        let pool = Pool::new(Duration::from_secs(30), 1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        runtime().block_on(async {
            let conn = TcpStream::connect(addr).await.unwrap();
            let (_peer, _) = listener.accept().unwrap();
            let put_at = Instant::now();
            pool.put(UpStream::Plain(conn), put_at);
            assert!(pool.take(put_at + Duration::from_secs(31)).is_none());
        });
    }
}
