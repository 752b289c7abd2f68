//! [`RLock`]: a re-entrant cross-process lock (diskcache.recipes `RLock`).
//!
//! Invariant: the row holds `(owner, count)`; only the owner (this process id and thread
//! id) changes it, one write transaction per acquire or release, and the row is deleted
//! when the count reaches zero.

use std::time::Duration;

use super::{Acquire, StateRow};
use crate::cache::Cache;
use crate::error::{Error, Result};

/// A lock that the thread holding it may take again; each acquire needs a release.
/// A release by another thread or process is [`Error::NotAcquired`].
///
/// ```
/// use std::time::Duration;
/// use hoard_store::{Acquire, Cache, RLock};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let lock = RLock::new(&cache, b"rlock:report", Some(Duration::from_secs(30)));
/// lock.acquire(Duration::from_secs(1))?;
/// lock.acquire(Duration::from_secs(1))?; // again, same thread
/// let other = std::thread::scope(|s| s.spawn(|| lock.try_acquire()).join().unwrap())?;
/// assert!(!other); // another thread must wait
/// lock.release()?;
/// lock.release()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RLock {
    row: StateRow,
}

/// Who holds an [`RLock`]: this process and thread.
fn owner() -> String {
    format!("{}:{:?}", std::process::id(), std::thread::current().id())
}

impl RLock {
    /// A re-entrant lock on `key`; each acquire sets the row to expire after `expire` (so
    /// a holder that crashes blocks the others until then; `None`: until released).
    pub fn new(cache: &Cache, key: &[u8], expire: Option<Duration>) -> RLock {
        RLock {
            row: StateRow::new(cache, key, expire),
        }
    }

    /// Tags the lock's row (for [`Cache::evict`]).
    pub fn with_tag(self, tag: &str) -> RLock {
        RLock {
            row: self.row.tagged(tag),
        }
    }

    /// How many times the current holder holds it (0: free).
    pub fn count(&self) -> Result<u32> {
        Ok(self.row.load::<(String, u32)>()?.map_or(0, |(_, n)| n))
    }
}

impl Acquire for RLock {
    fn try_acquire(&self) -> Result<bool> {
        let me = owner();
        self.row.cache.transact(|tx| {
            let count = match self.row.read::<(String, u32)>(tx)? {
                None => 0,
                Some((who, n)) if who == me => n,
                Some(_) => return Ok(false),
            };
            self.row.write(tx, &(&me, count + 1))?;
            Ok(true)
        })
    }

    fn release(&self) -> Result<()> {
        let me = owner();
        self.row
            .cache
            .transact(|tx| match self.row.read::<(String, u32)>(tx)? {
                Some((who, n)) if who == me && n > 1 => self.row.write(tx, &(&me, n - 1)),
                Some((who, _)) if who == me => self.row.delete(tx),
                _ => Err(Error::NotAcquired("RLock")),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual_cache;
    use crate::codec::{Codec, Postcard};

    #[test]
    fn reentrant_counts_and_owner_checks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let lock = RLock::new(&cache, b"r", None).with_tag("locks");
        assert!(matches!(lock.release(), Err(Error::NotAcquired("RLock"))));
        for want in 1..=3 {
            assert!(lock.try_acquire().unwrap());
            assert_eq!(lock.count().unwrap(), want);
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(!lock.try_acquire().unwrap());
                assert!(matches!(lock.release(), Err(Error::NotAcquired(_))));
            });
        });
        assert_eq!(lock.count().unwrap(), 3);
        for want in [2, 1, 0] {
            lock.release().unwrap();
            assert_eq!(lock.count().unwrap(), want);
        }
        assert!(!cache.contains(b"r").unwrap());
        assert!(lock.try_acquire().unwrap());
        assert_eq!(cache.evict("locks").unwrap(), 1);
    }

    #[test]
    fn a_crashed_holder_blocks_only_until_expiry() {
        let (_dir, clock, cache) = manual_cache(1_000_000_000.0);
        // A holder that never releases (another "process": another owner string).
        let state = Postcard.encode(&("999999:ThreadId(1)", 1u32)).unwrap();
        cache
            .set(b"r", &state, Some(Duration::from_secs(5)), None)
            .unwrap();
        let lock = RLock::new(&cache, b"r", Some(Duration::from_secs(5)));
        assert!(!lock.try_acquire().unwrap());
        clock.advance(5.5);
        assert!(lock.try_acquire().unwrap());
    }
}
