//! [`Throttle`]: at most `count` calls per `per` across processes (diskcache.recipes
//! `throttle`), a token bucket kept in one row.
//!
//! Invariant: the row holds `(last, tally)`: the time of the last grant and the tokens
//! left then; a grant happens inside one write transaction, so over any stretch of time `t`
//! from the row's creation at most `count + t * count / per` calls are let through, by all
//! processes together. Time is the cache's [`Clock`](crate::Clock); sleeping is injectable.

use std::sync::Arc;
use std::time::Duration;

use super::StateRow;
use crate::cache::Cache;
use crate::error::Result;

/// How a [`Throttle`] waits (real sleep by default; tests advance a manual clock).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let slept = Arc::new(Mutex::new(Vec::new()));
/// let log = slept.clone();
/// let sleep: hoard_store::Sleep = Arc::new(move |d| log.lock().unwrap().push(d));
/// sleep(std::time::Duration::from_millis(5));
/// assert_eq!(slept.lock().unwrap().len(), 1);
/// ```
pub type Sleep = Arc<dyn Fn(Duration) + Send + Sync>;

/// Lets `count` calls through per `per` across processes; [`wait`](Throttle::wait) sleeps
/// until the next one may go. Starts full: the first `count` calls do not wait.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use hoard_store::{Cache, ManualClock, Throttle};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let clock = ManualClock::default();
/// let cache = Cache::builder(dir.path()).clock(clock.shared()).open()?;
/// let moved = clock.clone();
/// let throttle = Throttle::new(&cache, b"throttle:api", 2, Duration::from_secs(1))
///     .with_sleep(Arc::new(move |d| moved.advance_by(d))); // a sleep that moves the clock
/// let waited: Vec<Duration> = (0..4).map(|_| throttle.wait()).collect::<Result<_, _>>()?;
/// assert_eq!(waited[..2], [Duration::ZERO, Duration::ZERO]);
/// assert_eq!(waited[2], Duration::from_millis(500)); // 2 per second: one every 0.5 s
/// assert_eq!(throttle.call(|| 42)?, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Throttle {
    row: StateRow,
    count: u32,
    per: Duration,
    sleep: Sleep,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("row", &self.row)
            .field("count", &self.count)
            .field("per", &self.per)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// At most `count` calls per `per` (`count` >= 1, `per` > 0) through the row `key`.
    pub fn new(cache: &Cache, key: &[u8], count: u32, per: Duration) -> Throttle {
        Throttle {
            row: StateRow::new(cache, key, None),
            count: count.max(1),
            per: per.max(Duration::from_nanos(1)),
            sleep: Arc::new(std::thread::sleep),
        }
    }

    /// The row expires `expire` after the last call (then the bucket starts full again).
    pub fn with_expire(self, expire: Option<Duration>) -> Throttle {
        let StateRow {
            cache, key, tag, ..
        } = self.row;
        Throttle {
            row: StateRow {
                cache,
                key,
                expire,
                tag,
            },
            ..self
        }
    }

    /// Tags the row (for [`Cache::evict`]).
    pub fn with_tag(self, tag: &str) -> Throttle {
        Throttle {
            row: self.row.tagged(tag),
            ..self
        }
    }

    /// Waits with `sleep` instead of [`std::thread::sleep`].
    pub fn with_sleep(mut self, sleep: Sleep) -> Throttle {
        self.sleep = sleep;
        self
    }

    /// Blocks until a call may go (taking its token); returns how long it slept.
    pub fn wait(&self) -> Result<Duration> {
        let count = f64::from(self.count);
        let rate = count / self.per.as_secs_f64();
        let mut slept = Duration::ZERO;
        loop {
            let cache = &self.row.cache;
            let delay = cache.transact(|tx| {
                let now = cache.clock().now();
                let (last, tally) = self.row.read::<(f64, f64)>(tx)?.unwrap_or((now, count));
                let tally = tally + (now - last).max(0.0) * rate;
                if tally < 1.0 {
                    return Ok((1.0 - tally) / rate);
                }
                self.row.write(tx, &(now, tally.min(count) - 1.0))?;
                Ok(0.0)
            })?;
            if delay <= 0.0 {
                return Ok(slept);
            }
            let d = Duration::from_secs_f64(delay);
            (self.sleep)(d);
            slept += d;
        }
    }

    /// [`wait`](Throttle::wait)s, then calls `f`.
    pub fn call<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.wait()?;
        Ok(f())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual_cache;

    #[test]
    fn grants_follow_the_rate_with_a_manual_clock() {
        let (_dir, clock, cache) = manual_cache(1000.0);
        let c2 = clock.clone();
        let t = Throttle::new(&cache, b"t", 3, Duration::from_secs(3))
            .with_sleep(Arc::new(move |d| c2.advance_by(d)));
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round() as u64;
        // (idle seconds before the call, ms slept, clock after)
        let calls: &[(f64, u64, f64)] = &[
            (0.0, 0, 1000.0),
            (0.0, 0, 1000.0),
            (0.0, 0, 1000.0),
            (0.0, 1000, 1001.0), // bucket empty: one token per second
            (0.0, 1000, 1002.0),
            (0.5, 500, 1003.0), // half a token accrued while idle
            (100.0, 0, 1103.0), // a long idle time refills only up to `count`
            (0.0, 0, 1103.0),
            (0.0, 0, 1103.0),
            (0.0, 1000, 1104.0),
        ];
        for (i, &(idle, slept, after)) in calls.iter().enumerate() {
            clock.advance(idle);
            assert_eq!(ms(t.wait().unwrap()), slept, "call {i}");
            assert!((cache.clock().now() - after).abs() < 1e-6, "call {i}");
        }
    }
}
