//! Time source for TTLs, store times and LRU access times.
//!
//! Invariant: the store never reads the system time directly; it asks its [`Clock`],
//! so tests inject a [`ManualClock`] and never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now" in Unix seconds (fractional).
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::sync::Arc;
/// use hoard_store::{Cache, Clock};
/// #[derive(Debug)]
/// struct Frozen(f64);
/// impl Clock for Frozen {
///     fn now(&self) -> f64 {
///         self.0
///     }
/// }
/// let cache = Cache::builder(dir.path()).clock(Arc::new(Frozen(1e9))).open()?;
/// assert_eq!(cache.clock().now(), 1e9);
/// # Ok(())
/// # }
/// ```
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Current time as seconds since the Unix epoch.
    fn now(&self) -> f64;
}

/// The real wall clock.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use hoard_store::{Clock, SystemClock};
/// assert!(SystemClock.now() > 1.7e9); // seconds since 1970
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock that only moves when told to. Cheap to clone; clones share the time.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// use std::time::Duration;
/// let clock = hoard_store::ManualClock::new(1_000.0);
/// let cache = hoard_store::Cache::builder(dir).clock(clock.shared()).open()?;
/// cache.set(b"k", b"v", Some(Duration::from_secs(10)), None)?;
/// clock.advance(11.0);
/// assert_eq!(cache.get(b"k")?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    bits: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `now` Unix seconds.
    pub fn new(now: f64) -> ManualClock {
        ManualClock {
            bits: Arc::new(AtomicU64::new(now.to_bits())),
        }
    }

    /// Sets the time to `now` Unix seconds.
    pub fn set(&self, now: f64) {
        self.bits.store(now.to_bits(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by` seconds (negative moves it back).
    pub fn advance(&self, by: f64) {
        let mut cur = self.bits.load(Ordering::SeqCst);
        loop {
            let next = (f64::from_bits(cur) + by).to_bits();
            match self
                .bits
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Moves the clock forward by a [`Duration`].
    pub fn advance_by(&self, by: Duration) {
        self.advance(by.as_secs_f64());
    }

    /// This clock as a shareable trait object for [`CacheBuilder::clock`](super::CacheBuilder::clock).
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }
}

impl Default for ManualClock {
    /// A manual clock at 1,000,000,000 (2001-09-09), far from zero so `now - ttl` stays positive.
    fn default() -> Self {
        ManualClock::new(1_000_000_000.0)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::SeqCst))
    }
}

/// For unit tests: a cache in a new temporary directory on a [`ManualClock`] at `now`.
#[cfg(test)]
pub(crate) fn manual_cache(now: f64) -> (tempfile::TempDir, ManualClock, crate::Cache) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(now);
    let cache = crate::Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    (dir, clock, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100.0);
        let shared = c.clone();
        assert_eq!(c.now(), 100.0);
        c.advance(2.5);
        assert_eq!(shared.now(), 102.5);
        c.advance_by(Duration::from_millis(500));
        assert_eq!(shared.now(), 103.0);
        shared.set(7.0);
        assert_eq!(c.now(), 7.0);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800.0);
    }
}
