//! Lazily re-armed timers for the lean path: one per connection and purpose, whose deadline moves
//! with every request while its timer-wheel entry moves only when it fires early.
//!
//! A `tokio::time::timeout` per read inserts an entry into the timer wheel and removes it again,
//! and reads the clock, on every request. Here a wait only stores its deadline; the armed entry
//! stays where it is as long as it is no later than that deadline, and when it fires before the
//! deadline it is moved once. Deadlines are computed from instants the caller already has.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

pub struct LazyTimer {
    sleep: Pin<Box<Sleep>>,
    /// When the current wait times out.
    deadline: Instant,
}

impl LazyTimer {
    pub fn new(deadline: Instant) -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    /// Sets when the next wait times out.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Ready once the deadline set last has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.sleep.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            // Armed for an earlier wait: move it to this one's deadline.
            let deadline = self.deadline;
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Runs `fut` until it completes (`Some`) or `deadline` passes first (`None`).
    pub async fn run<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        self.set(deadline);
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_expired(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn times_out_at_the_deadline_of_the_wait() {
        let start = Instant::now();
        let mut timer = LazyTimer::new(start + Duration::from_secs(60));
        let out = timer
            .run(start + Duration::from_secs(5), std::future::pending::<()>())
            .await;
        assert_eq!(out, None);
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_waits_past_the_armed_one() {
        let start = Instant::now();
        let mut timer = LazyTimer::new(start + Duration::from_secs(1));
        // Armed for 1 s; this wait may last 10 s, so the early firing must not end it.
        let out = timer
            .run(
                start + Duration::from_secs(10),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(out, None);
        assert_eq!(Instant::now(), start + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_future_wins_and_the_timer_is_reusable() {
        let start = Instant::now();
        let mut timer = LazyTimer::new(start + Duration::from_secs(1));
        assert_eq!(
            timer.run(start + Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        // Expire once, then wait again with a later deadline.
        assert_eq!(
            timer
                .run(start + Duration::from_secs(1), std::future::pending::<()>())
                .await,
            None
        );
        let later = Instant::now() + Duration::from_secs(3);
        let sleeper = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(timer.run(later, sleeper).await, Some(()));
        assert_eq!(Instant::now(), start + Duration::from_secs(3));
    }
}
