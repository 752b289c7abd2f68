//! The tier's general breakers: one for a single Redis; on a cluster, one per range of
//! [`SLOTS_PER_RANGE`] hash slots, so a master that fails (with
//! `cluster-require-full-coverage no`, or while a restarted master waits to take writes)
//! stops only the keys of its slots, not every key.
//!
//! Invariants: every key of a URL maps to one range (they share a hash tag, so a slot);
//! the log says when the first range opens, when every range is open, and when the last one
//! closes (a handful of lines per outage, never one per range or per call).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::breaker::{Breaker, BreakerState, Change};
use super::codec::SLOTS;

/// Hash slots per breaker on a cluster: 64 ranges, finer than any 3-to-64-master layout of
/// contiguous slot ranges (a range straddling two masters answers to both).
pub const SLOTS_PER_RANGE: u16 = 256;

/// While every range of a cluster is open, how often the cluster connection is rebuilt (a
/// cluster client that stays stuck after a node restart does not repair itself).
pub const REBUILD_EVERY: Duration = Duration::from_secs(3);

/// Breakers by slot range (one, for a single server).
#[derive(Debug)]
pub struct Breakers {
    ranges: Vec<Breaker>,
    open: AtomicUsize,
    last_rebuild: Mutex<Option<Instant>>,
}

impl Breakers {
    /// One breaker, or one per slot range when `cluster`.
    pub fn new(cluster: bool) -> Self {
        let ranges = if cluster {
            (0..SLOTS / SLOTS_PER_RANGE)
                .map(|_| Breaker::quiet("shared"))
                .collect()
        } else {
            vec![Breaker::new("shared")]
        };
        Breakers {
            ranges,
            open: AtomicUsize::new(0),
            last_rebuild: Mutex::new(None),
        }
    }

    /// The breaker that the keys in hash slot `slot` answer to.
    pub fn for_slot(&self, slot: u16) -> &Breaker {
        let i = usize::from(slot / SLOTS_PER_RANGE) % self.ranges.len();
        &self.ranges[i]
    }

    /// Record what a call on `slot` found; logs what the ranges add up to.
    pub fn outcome(&self, slot: u16, failed: Option<&dyn std::fmt::Display>) {
        let change = match failed {
            None => self.for_slot(slot).success(),
            Some(why) => self.for_slot(slot).failure(why),
        };
        if self.ranges.len() == 1 {
            return; // the breaker logged it
        }
        let total = self.ranges.len();
        match change {
            Some(Change::Opened) => {
                let n = self.open.fetch_add(1, Ordering::AcqRel) + 1;
                if n == 1 || n == total {
                    tracing::warn!(
                        error = %failed.map(ToString::to_string).unwrap_or_default(),
                        "shared tier: breaker open for {n} of {total} cluster slot ranges \
                         ({SLOTS_PER_RANGE} slots each): their calls skip Redis (misses), \
                         probing every {:?}",
                        super::breaker::PROBE_INTERVAL
                    );
                }
            }
            // The guard counts the close (once): the last range to close logs.
            Some(Change::Closed) if self.open.fetch_sub(1, Ordering::AcqRel) == 1 => {
                tracing::info!(
                    "shared tier: Redis answers again on every slot range, breakers closed"
                );
            }
            Some(Change::Closed) | None => {}
        }
    }

    /// On a cluster with every range open: `true` at most once per [`REBUILD_EVERY`], when
    /// the caller should replace the cluster connection.
    pub fn rebuild_due(&self, now: Instant) -> bool {
        if self.ranges.len() == 1 || self.open_ranges() < self.ranges.len() {
            return false;
        }
        let mut last = self.last_rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < REBUILD_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Let every range probe at once (the connection was just re-established).
    pub fn probe_now(&self) {
        self.ranges.iter().for_each(Breaker::probe_now);
    }

    /// `Open` when any range is open (some calls skip Redis).
    pub fn state(&self) -> BreakerState {
        if self.open_ranges() > 0 {
            BreakerState::Open
        } else {
            BreakerState::Closed
        }
    }

    /// How many ranges are open (0 or 1 for a single server).
    pub fn open_ranges(&self) -> usize {
        self.ranges
            .iter()
            .filter(|b| b.state() == BreakerState::Open)
            .count()
    }

    /// How many ranges there are.
    pub fn count(&self) -> usize {
        self.ranges.len()
    }

    /// How many times any range opened.
    pub fn times_opened(&self) -> u64 {
        self.ranges.iter().map(Breaker::times_opened).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::breaker::FAILURE_THRESHOLD;
    use super::*;

    fn fail(b: &Breakers, slot: u16, times: u32) {
        for _ in 0..times {
            b.outcome(slot, Some(&"down"));
        }
    }

    #[test]
    fn a_single_server_has_one_breaker_for_every_slot() {
        let b = Breakers::new(false);
        assert_eq!(b.count(), 1);
        fail(&b, 0, FAILURE_THRESHOLD);
        assert_eq!((b.state(), b.open_ranges()), (BreakerState::Open, 1));
        assert!(!b.for_slot(16383).allow(), "every slot is behind it");
        assert!(
            !b.rebuild_due(Instant::now()),
            "a single server's connection is not rebuilt here"
        );
        b.outcome(9000, None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_cluster_range_opens_alone() {
        let b = Breakers::new(true);
        assert_eq!(b.count(), 64);
        // Slots 0..=255 are range 0; 256 is range 1.
        fail(&b, 3, FAILURE_THRESHOLD);
        assert_eq!((b.state(), b.open_ranges()), (BreakerState::Open, 1));
        assert!(!b.for_slot(255).allow(), "same range");
        assert!(
            b.for_slot(256).allow() && b.for_slot(16383).allow(),
            "others go on"
        );
        // Failures spread over other ranges do not add up.
        for s in (256..16384).step_by(256) {
            fail(&b, s, FAILURE_THRESHOLD - 1);
        }
        assert_eq!(b.open_ranges(), 1);
        b.outcome(0, None);
        assert_eq!((b.state(), b.times_opened()), (BreakerState::Closed, 1));
        // Every range open: every slot skips.
        for s in (0..16384).step_by(256) {
            fail(&b, s, FAILURE_THRESHOLD);
        }
        assert_eq!(b.open_ranges(), 64);
        let t = Instant::now();
        assert!(b.rebuild_due(t), "every range open: rebuild");
        assert!(!b.rebuild_due(t + REBUILD_EVERY / 2), "not again so soon");
        assert!(b.rebuild_due(t + REBUILD_EVERY), "again after the interval");
        b.probe_now();
        assert!(
            b.for_slot(700).allow(),
            "a probe per range after a reconnect"
        );
    }
}
