//! Circuit breaker: after [`FAILURE_THRESHOLD`] consecutive failures it opens and calls stop;
//! while open, one call per [`PROBE_INTERVAL`] is let through (half-open); its success closes
//! the breaker. Invariant: one log line per change of state, never one per call (a breaker
//! made [`Breaker::quiet`] logs nothing: its owner logs the changes it reports).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// While open, how often one call probes: a probe costs one call bounded by the timeout,
/// and Redis back is noticed within this.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// State as reported by [`Breaker::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused except one probe per interval.
    Open,
}

/// A change of state, as reported by [`Breaker::success`] and [`Breaker::failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The breaker opened.
    Opened,
    /// The breaker closed.
    Closed,
}

/// One breaker (the tier has one for every call, or one per slot range on a cluster, and one
/// for writes alone).
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    log: bool,
    open: AtomicBool,
    failures: AtomicU32,
    last_probe: Mutex<Option<Instant>>,
    opened: std::sync::atomic::AtomicU64,
}

impl Breaker {
    /// A closed breaker; `name` appears in its log lines.
    pub fn new(name: &'static str) -> Self {
        Breaker {
            name,
            log: true,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            last_probe: Mutex::new(None),
            opened: Default::default(),
        }
    }

    /// A closed breaker that logs nothing (its owner logs what the changes add up to).
    pub fn quiet(name: &'static str) -> Self {
        Breaker {
            log: false,
            ..Breaker::new(name)
        }
    }

    /// May a call go to Redis now? Always when closed; when open, once per [`PROBE_INTERVAL`].
    pub fn allow(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < PROBE_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Let the next call probe at once (the connection was just re-established).
    pub fn probe_now(&self) {
        *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A call succeeded: reset the count; an open breaker closes (logged once).
    pub fn success(&self) -> Option<Change> {
        self.failures.store(0, Ordering::Release);
        if self.open.load(Ordering::Acquire) && self.open.swap(false, Ordering::AcqRel) {
            if self.log {
                tracing::info!(
                    breaker = self.name,
                    "shared tier: Redis answers again, breaker closed"
                );
            }
            return Some(Change::Closed);
        }
        None
    }

    /// A call failed: the [`FAILURE_THRESHOLD`]th consecutive failure opens the breaker
    /// (logged once); a failed probe keeps it open until the next interval.
    pub fn failure(&self, why: &dyn std::fmt::Display) -> Option<Change> {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n >= FAILURE_THRESHOLD && !self.open.load(Ordering::Acquire) {
            *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            if !self.open.swap(true, Ordering::AcqRel) {
                self.opened.fetch_add(1, Ordering::Relaxed);
                if self.log {
                    tracing::warn!(
                        breaker = self.name,
                        error = %why,
                        "shared tier: {n} consecutive Redis failures, breaker open: calls skip \
                         Redis (misses), probing every {:?}",
                        PROBE_INTERVAL
                    );
                }
                return Some(Change::Opened);
            }
        }
        None
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        if self.open.load(Ordering::Acquire) {
            BreakerState::Open
        } else {
            BreakerState::Closed
        }
    }

    /// How many times it opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_and_closes() {
        let b = Breaker::new("test");
        for _ in 0..FAILURE_THRESHOLD - 1 {
            b.failure(&"x");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.success();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            b.failure(&"x");
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        assert_eq!(b.failure(&"x"), Some(Change::Opened));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 1);
        assert!(!b.allow(), "no probe right after opening");
        *b.last_probe.lock().unwrap() = Some(Instant::now() - PROBE_INTERVAL);
        assert!(b.allow(), "one probe per interval");
        assert!(!b.allow(), "only one");
        assert_eq!(b.failure(&"x"), None);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 1, "a failed probe does not reopen");
        b.probe_now();
        assert!(b.allow() && !b.allow());
        assert_eq!(b.success(), Some(Change::Closed));
        assert_eq!(b.success(), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }
}
