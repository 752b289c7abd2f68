//! [`RLock`]: a re-entrant cross-process lock (diskcache.recipes `RLock`).
//!
//! Invariant: the row holds `(owner, count)`; only the owner (this process id and thread
//! id) changes it, one write transaction per acquire or release, and the row is deleted
//! when the count reaches zero.

use std::time::Duration;

use super::Acquire;
use crate::cache::Cache;
use crate::codec::{Codec, Postcard, decode};
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
    cache: Cache,
    key: Vec<u8>,
    expire: Option<Duration>,
    tag: Option<String>,
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
            cache: cache.clone(),
            key: key.to_vec(),
            expire,
            tag: None,
        }
    }

    /// Tags the lock's row (for [`Cache::evict`]).
    pub fn with_tag(mut self, tag: &str) -> RLock {
        self.tag = Some(tag.to_string());
        self
    }

    /// How many times the current holder holds it (0: free).
    pub fn count(&self) -> Result<u32> {
        match self.cache.get(&self.key)? {
            None => Ok(0),
            Some(b) => Ok(decode::<(String, u32)>(&b)?.1),
        }
    }
}

impl Acquire for RLock {
    fn try_acquire(&self) -> Result<bool> {
        let me = owner();
        self.cache.transact(|tx| {
            let count = match tx.get(&self.key)? {
                None => 0,
                Some(b) => match decode::<(String, u32)>(&b)? {
                    (who, n) if who == me => n,
                    _ => return Ok(false),
                },
            };
            let state = Postcard.encode(&(&me, count + 1))?;
            tx.set(&self.key, &state, self.expire, self.tag.as_deref())?;
            Ok(true)
        })
    }

    fn release(&self) -> Result<()> {
        let me = owner();
        self.cache.transact(|tx| {
            let held = match tx.get(&self.key)? {
                None => None,
                Some(b) => Some(decode::<(String, u32)>(&b)?),
            };
            match held {
                Some((who, n)) if who == me && n > 1 => {
                    let state = Postcard.encode(&(&me, n - 1))?;
                    tx.set(&self.key, &state, self.expire, self.tag.as_deref())
                }
                Some((who, _)) if who == me => tx.delete(&self.key).map(drop),
                _ => Err(Error::NotAcquired("RLock")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

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
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::default();
        let cache = Cache::builder(dir.path())
            .clock(clock.shared())
            .open()
            .unwrap();
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
