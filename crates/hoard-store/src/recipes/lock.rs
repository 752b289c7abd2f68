//! A cross-process lock on a cache key, built on [`Cache::add`] with an expiry.
//!
//! Invariant: a holder that crashes blocks others only until the expiry passes (per the
//! cache clock); release deletes the row only if it still holds this lock's token.

use std::time::Duration;

use super::{Acquire, wait_for};
use crate::cache::Cache;
use crate::error::Result;

/// A named lock shared by every process using the cache directory. Not reentrant.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// use std::time::Duration;
/// let cache = hoard_store::Cache::open(dir)?;
/// let lock = hoard_store::Lock::new(&cache, b"lock:report", Duration::from_secs(30));
/// {
///     let _held = lock.guard(Duration::from_secs(1))?;
///     assert!(lock.locked()?);
/// }
/// assert!(!lock.locked()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Lock {
    cache: Cache,
    key: Vec<u8>,
    expire: Duration,
    tag: Option<String>,
    token: Vec<u8>,
}

impl Lock {
    /// A lock on `key` whose hold expires after `expire` (so a crashed holder cannot block forever).
    pub fn new(cache: &Cache, key: &[u8], expire: Duration) -> Lock {
        let token = format!("{}:{:016x}", std::process::id(), fastrand::u64(..)).into_bytes();
        Lock {
            cache: cache.clone(),
            key: key.to_vec(),
            expire,
            tag: None,
            token,
        }
    }

    /// Tags the lock's row (for [`Cache::evict`]).
    pub fn with_tag(mut self, tag: &str) -> Lock {
        self.tag = Some(tag.to_string());
        self
    }

    /// Takes the lock if it is free (or its holder's expiry passed). Returns whether it did.
    pub fn try_acquire(&self) -> Result<bool> {
        self.cache.add(
            &self.key,
            &self.token,
            Some(self.expire),
            self.tag.as_deref(),
        )
    }

    /// Waits (polling with backoff, real time) up to `timeout` for the lock;
    /// [`Error::Timeout`](crate::Error::Timeout) if it stays taken.
    pub fn acquire(&self, timeout: Duration) -> Result<()> {
        wait_for(timeout, || self.try_acquire())
    }

    /// Releases the lock if this lock object holds it; otherwise does nothing.
    pub fn release(&self) -> Result<()> {
        self.cache.transact(|tx| {
            if tx.get(&self.key)?.as_deref() == Some(self.token.as_slice()) {
                tx.delete(&self.key)?;
            }
            Ok(())
        })
    }

    /// Whether anyone holds the lock now.
    pub fn locked(&self) -> Result<bool> {
        self.cache.contains(&self.key)
    }

    /// Acquires (waiting up to `timeout`) and returns a guard that releases on drop.
    pub fn guard(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.acquire(timeout)?;
        Ok(LockGuard { lock: self })
    }

    /// A guard if the lock is free now.
    pub fn try_guard(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self.try_acquire()?.then_some(LockGuard { lock: self }))
    }
}

/// Holds a [`Lock`]; releases it on drop.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let lock = hoard_store::Lock::new(&cache, b"lock", Duration::from_secs(10));
/// let guard: Option<hoard_store::LockGuard<'_>> = lock.try_guard()?;
/// assert!(guard.is_some() && lock.locked()?);
/// drop(guard);
/// assert!(!lock.locked()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

impl Acquire for Lock {
    fn try_acquire(&self) -> Result<bool> {
        Lock::try_acquire(self)
    }
    fn release(&self) -> Result<()> {
        Lock::release(self)
    }
}
