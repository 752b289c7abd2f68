//! [`BoundedSemaphore`]: at most N holders across processes (diskcache.recipes
//! `BoundedSemaphore`).
//!
//! Invariant: the row holds the number of free slots, 0..=N, changed by one write
//! transaction per acquire or release; a missing row means N free.

use std::time::Duration;

use super::{Acquire, StateRow};
use crate::cache::Cache;
use crate::error::{Error, Result};

/// A semaphore of `value` slots; releasing more than were acquired is
/// [`Error::NotAcquired`]. Slots are not owned: any process may release one.
///
/// ```
/// use std::time::Duration;
/// use hoard_store::{Acquire, BoundedSemaphore, Cache};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let sem = BoundedSemaphore::new(&cache, b"sem:db", 2, Some(Duration::from_secs(60)));
/// assert!(sem.try_acquire()?);
/// assert!(sem.try_acquire()?);
/// assert!(!sem.try_acquire()?); // both slots taken
/// sem.release()?;
/// sem.release()?;
/// assert!(sem.release().is_err()); // above 2
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BoundedSemaphore {
    row: StateRow,
    value: u64,
}

impl BoundedSemaphore {
    /// A semaphore of `value` slots on `key`; each change sets the row to expire after
    /// `expire` (then every slot is free again, as in diskcache).
    pub fn new(cache: &Cache, key: &[u8], value: u64, expire: Option<Duration>) -> Self {
        BoundedSemaphore {
            row: StateRow::new(cache, key, expire),
            value,
        }
    }

    /// Tags the semaphore's row (for [`Cache::evict`]).
    pub fn with_tag(self, tag: &str) -> Self {
        BoundedSemaphore {
            row: self.row.tagged(tag),
            ..self
        }
    }

    /// Slots free now.
    pub fn available(&self) -> Result<u64> {
        Ok(self.row.load()?.unwrap_or(self.value))
    }

    fn change(&self, by_one: impl FnOnce(u64) -> Result<Option<u64>>) -> Result<bool> {
        self.row.cache.transact(|tx| {
            let free = self.row.read(tx)?.unwrap_or(self.value);
            match by_one(free)? {
                None => Ok(false),
                Some(next) => self.row.write(tx, &next).map(|()| true),
            }
        })
    }
}

impl Acquire for BoundedSemaphore {
    fn try_acquire(&self) -> Result<bool> {
        self.change(|free| Ok(free.checked_sub(1)))
    }

    fn release(&self) -> Result<()> {
        let value = self.value;
        self.change(|free| {
            if free >= value {
                Err(Error::NotAcquired("BoundedSemaphore"))
            } else {
                Ok(Some(free + 1))
            }
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual_cache;

    #[test]
    fn slots_are_bounded_both_ways_and_expire() {
        let (_dir, clock, cache) = manual_cache(1_000_000_000.0);
        let sem = BoundedSemaphore::new(&cache, b"s", 3, Some(Duration::from_secs(10)));
        // (operation, result, free after)
        let steps: &[(&str, bool, u64)] = &[
            ("release", false, 3),
            ("acquire", true, 2),
            ("acquire", true, 1),
            ("acquire", true, 0),
            ("acquire", false, 0),
            ("release", true, 1),
            ("acquire", true, 0),
        ];
        for (i, &(op, ok, free)) in steps.iter().enumerate() {
            let got = match op {
                "acquire" => sem.try_acquire().unwrap(),
                _ => sem.release().is_ok(),
            };
            assert_eq!(
                (got, sem.available().unwrap()),
                (ok, free),
                "step {i}: {op}"
            );
        }
        clock.advance(11.0); // holders that crashed: every slot free again
        assert_eq!(sem.available().unwrap(), 3);
    }
}
