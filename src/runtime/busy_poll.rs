//! Busy polling after activity (`--busy-poll`): a single-threaded runtime that just served a
//! request keeps polling its sockets (a non-blocking `epoll_wait`, then `sched_yield`) for a
//! short window instead of sleeping, so the next request of a client that answers quickly is
//! read without the CPU going idle and being woken again (on a virtual machine, waking an idle
//! vCPU costs tens of microseconds per request). Invariant: a runtime with no request for the
//! window parks exactly as without it (nothing is spent while nothing happens), and the poll
//! loop never holds the CPU from another runnable thread on it (it yields every round).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

thread_local! {
    /// Requests this thread started serving: the activity the window follows. Per thread,
    /// because the runtime that polls is single-threaded: its requests run on its thread.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
}

/// A request started on this thread (called once per request by `State::handle`).
#[inline]
pub fn note_request() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

/// The poller's state, shared by the runtime's park hook and the polling task.
#[derive(Debug, Default)]
pub struct BusyPoll {
    wake: Notify,
    /// The poll loop is running (or has been woken to run).
    polling: AtomicBool,
    /// The activity count the loop last saw before it stopped.
    seen: AtomicU64,
    /// Poll rounds made, for tests and curiosity.
    rounds: AtomicU64,
}

impl BusyPoll {
    /// A poller that has made no round yet; `run` it on the runtime whose park hook calls
    /// [`BusyPoll::before_park`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The runtime's `on_thread_park` hook: about to sleep with nothing to run. If a request
    /// started since the loop last stopped, wake the loop instead (the runtime then polls its
    /// sockets without blocking and runs it).
    pub fn before_park(&self) {
        if activity() != self.seen.load(Relaxed) && !self.polling.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Poll rounds made so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Relaxed)
    }

    /// Whether the loop is polling now.
    pub fn is_polling(&self) -> bool {
        self.polling.load(Relaxed)
    }

    /// The loop, spawned once on the runtime: each time it is woken, yields to the scheduler
    /// (which polls the sockets without blocking before running it again) until `window`
    /// passes with no new request.
    pub async fn run(self: Arc<Self>, window: Duration) {
        loop {
            self.wake.notified().await;
            let mut seen = activity();
            let mut until = Instant::now() + window;
            loop {
                // Other threads runnable on this CPU (an origin, a client) go first.
                std::thread::yield_now();
                tokio::task::yield_now().await;
                self.rounds.fetch_add(1, Relaxed);
                let now = Instant::now();
                match activity() {
                    a if a != seen => {
                        seen = a;
                        until = now + window;
                    }
                    _ if now >= until => break,
                    _ => {}
                }
            }
            self.seen.store(seen, Relaxed);
            self.polling.store(false, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Built, Scheduler, build};
    use std::num::NonZeroUsize;

    fn poller(window: Duration) -> (tokio::runtime::Runtime, Arc<BusyPoll>) {
        let Built {
            runtime, busy_poll, ..
        } = build(Some(NonZeroUsize::MIN), Scheduler::PerCore, window).unwrap();
        (runtime, busy_poll.expect("one worker with a window polls"))
    }

    /// Sleeps in steps of 1 ms until the loop has made more than `rounds` rounds (at most 10
    /// s: a loaded machine may run the sleeper before the loop).
    async fn until_polled_past(p: &BusyPoll, rounds: u64) {
        for _ in 0..10_000 {
            if p.rounds() > rounds {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no poll round after a request");
    }

    /// Sleeps in steps of 5 ms until the loop stops (at most 10 s).
    async fn until_stopped(p: &BusyPoll) {
        for _ in 0..2000 {
            if !p.is_polling() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the poll loop never stopped");
    }

    #[test]
    fn polls_after_a_request_and_parks_again_once_the_window_passes_quietly() {
        let (rt, p) = poller(Duration::from_millis(20));
        rt.block_on(async {
            // No request yet: the runtime sleeps through its timers without a poll round.
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert_eq!(p.rounds(), 0, "polled with no request");
            // A request starts: the next time the runtime would sleep, it polls instead.
            note_request();
            until_polled_past(&p, 0).await;
            // The window passes with no request: the loop stops and stays stopped.
            until_stopped(&p).await;
            let stopped_at = p.rounds();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(p.rounds(), stopped_at, "polled again with no new request");
            // Another request starts it again.
            note_request();
            until_polled_past(&p, stopped_at).await;
            until_stopped(&p).await;
        });
    }

    #[test]
    fn timers_and_sockets_keep_working_while_polling() {
        let (rt, p) = poller(Duration::from_secs(3600));
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            note_request();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            });
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping");
            server.await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(p.is_polling(), "an hour's window ended early");
        });
    }
}
