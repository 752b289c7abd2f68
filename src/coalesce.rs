//! Single-flight per key: one fetch per cache key at a time, the other callers wait for it.
//!
//! Invariant: a [`Permit`] releases itself. Dropping it without [`Permit::finish`] (the leader
//! failed, panicked or its client went away) wakes every waiter, and they compete again: exactly
//! one becomes the next leader. Waiters never inherit the leader's failure.
//!
//! A leader that learns the response cannot be stored finishes with [`Outcome::Uncacheable`];
//! the key is then remembered as "pass" for a short time (Varnish's hit-for-pass), so later
//! requests go straight to the origin instead of queueing behind one another. Those marks are
//! bounded in entries and bytes and leave once expired ([`pass`]).

mod pass;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use pass::PassMarks;

/// How a leader's fetch ended, as seen by the waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Pending,
    /// The response is in the store: waiters look it up again.
    Stored,
    /// The response may not be stored: waiters fetch for themselves.
    Uncacheable,
    /// The leader gave up (error, disconnect, drop): waiters compete to lead.
    Abandoned,
    /// The origin failed and the leader served its stale entry (stale-if-error): waiters
    /// inside their stale-if-error window do the same instead of retrying the origin.
    Failed,
}

/// What [`Coalescer::join`] gives a caller.
#[derive(Debug)]
pub enum Role {
    /// This caller fetches; the others wait on it.
    Leader(Permit),
    /// Another caller is fetching; wait for it.
    Waiter(Waiter),
    /// The key was recently found uncacheable: fetch without coalescing.
    Pass,
}

#[derive(Debug)]
struct Flight {
    id: u64,
    tx: watch::Sender<Outcome>,
}

#[derive(Debug)]
struct Table {
    flights: HashMap<Vec<u8>, Flight>,
    pass: PassMarks,
    next_id: u64,
}

/// Per-process single-flight table keyed by bytes (the cache key).
#[derive(Debug, Clone)]
pub struct Coalescer {
    inner: Arc<Mutex<Table>>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl Coalescer {
    /// A table that remembers uncacheable keys for `pass_ttl`.
    pub fn new(pass_ttl: Duration) -> Self {
        Coalescer {
            inner: Arc::new(Mutex::new(Table {
                flights: HashMap::new(),
                pass: PassMarks::new(pass_ttl),
                next_id: 0,
            })),
        }
    }

    /// Become the leader for `key`, or a waiter on the current leader.
    pub fn join(&self, key: &[u8]) -> Role {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.pass.is_pass(key, Instant::now()) {
            return Role::Pass;
        }
        if let Some(f) = t.flights.get(key) {
            return Role::Waiter(Waiter {
                rx: f.tx.subscribe(),
            });
        }
        t.next_id += 1;
        let id = t.next_id;
        let (tx, _) = watch::channel(Outcome::Pending);
        t.flights.insert(key.to_vec(), Flight { id, tx });
        Role::Leader(Permit {
            table: self.clone(),
            key: key.to_vec(),
            id,
            done: false,
        })
    }

    /// Wait on the fetch in flight for `key`, if there is one, without ever leading.
    pub fn waiter(&self, key: &[u8]) -> Option<Waiter> {
        let t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.flights.get(key).map(|f| Waiter {
            rx: f.tx.subscribe(),
        })
    }

    /// Number of keys with a fetch in flight (for metrics and tests).
    pub fn in_flight(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flights
            .len()
    }

    /// Requests waiting on the fetch in flight for `key` (for tests).
    pub fn waiting(&self, key: &[u8]) -> usize {
        let t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.flights.get(key).map_or(0, |f| f.tx.receiver_count())
    }

    fn release(&self, key: &[u8], id: u64, outcome: Outcome) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ours = t.flights.get(key).is_some_and(|f| f.id == id);
        if !ours {
            return;
        }
        if let Some(f) = t.flights.remove(key) {
            f.tx.send_replace(outcome);
        }
        if outcome == Outcome::Uncacheable {
            t.pass.mark(key, Instant::now());
        }
    }

    /// Forget that `key` was uncacheable (e.g. after a purge or a config change).
    pub fn clear_pass(&self, key: &[u8]) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pass
            .clear(key);
    }
}

/// The right to fetch one key. Dropping it without `finish` abandons the flight.
#[derive(Debug)]
pub struct Permit {
    table: Coalescer,
    key: Vec<u8>,
    id: u64,
    done: bool,
}

impl Permit {
    /// End the flight and tell the waiters how it went.
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.table.release(&self.key, self.id, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.table.release(&self.key, self.id, Outcome::Abandoned);
        }
    }
}

/// A caller waiting on another's fetch of the same key.
#[derive(Debug)]
pub struct Waiter {
    rx: watch::Receiver<Outcome>,
}

impl Waiter {
    /// Wait until the leader finishes, at most `timeout`. `None` means the wait timed out.
    pub async fn wait(mut self, timeout: Duration) -> Option<Outcome> {
        let res = tokio::time::timeout(timeout, self.rx.wait_for(|o| *o != Outcome::Pending)).await;
        match res {
            Ok(Ok(o)) => Some(*o),
            // The sender vanished without a value: treat as abandoned.
            Ok(Err(_)) => Some(Outcome::Abandoned),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_waiters() {
        let c = Coalescer::default();
        let Role::Leader(p) = c.join(b"k") else {
            panic!("first caller must lead")
        };
        let waiters: Vec<_> = (0..5)
            .map(|_| match c.join(b"k") {
                Role::Waiter(w) => w,
                other => panic!("expected waiter, got {other:?}"),
            })
            .collect();
        p.finish(Outcome::Stored);
        for w in waiters {
            assert_eq!(w.wait(Duration::from_secs(1)).await, Some(Outcome::Stored));
        }
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropped_permit_abandons_and_next_caller_leads() {
        let c = Coalescer::default();
        let p = match c.join(b"k") {
            Role::Leader(p) => p,
            _ => unreachable!(),
        };
        let w = match c.join(b"k") {
            Role::Waiter(w) => w,
            _ => panic!("expected waiter"),
        };
        drop(p);
        assert_eq!(
            w.wait(Duration::from_secs(1)).await,
            Some(Outcome::Abandoned)
        );
        assert!(matches!(c.join(b"k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn uncacheable_means_pass_for_a_while() {
        let c = Coalescer::new(Duration::from_secs(60));
        let Role::Leader(p) = c.join(b"k") else {
            unreachable!()
        };
        p.finish(Outcome::Uncacheable);
        assert!(matches!(c.join(b"k"), Role::Pass));
        c.clear_pass(b"k");
        assert!(matches!(c.join(b"k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn wait_times_out() {
        let c = Coalescer::default();
        let _p = c.join(b"k");
        let Role::Waiter(w) = c.join(b"k") else {
            unreachable!()
        };
        assert_eq!(w.wait(Duration::from_millis(20)).await, None);
    }

    #[tokio::test]
    async fn stale_permit_does_not_release_newer_flight() {
        let c = Coalescer::default();
        let Role::Leader(p1) = c.join(b"k") else {
            unreachable!()
        };
        // Simulate a finished flight and a new leader, then the old permit's release.
        let id = p1.id;
        p1.finish(Outcome::Stored);
        let Role::Leader(_p2) = c.join(b"k") else {
            unreachable!()
        };
        c.release(b"k", id, Outcome::Abandoned);
        assert_eq!(c.in_flight(), 1);
    }
}
