//! [`Barrier`]: runs functions under a cross-process lock (diskcache.recipes `barrier`),
//! and [`Held`], the guard that gives any [`Acquire`] back.
//!
//! Invariant: what is acquired is released when the guard drops, also when the function
//! panics.

use std::time::Duration;

use super::Acquire;
use crate::error::Result;

/// Calls functions one at a time across processes (or N at a time, under a
/// [`BoundedSemaphore`](crate::BoundedSemaphore)): each call holds `lock`.
///
/// ```
/// use std::time::Duration;
/// use hoard_store::{Barrier, Cache, Lock, RLock};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let one_at_a_time = Barrier::new(
///     Lock::new(&cache, b"barrier:report", Duration::from_secs(60)),
///     Duration::from_secs(5),
/// );
/// assert_eq!(one_at_a_time.call(|| 6 * 7)?, 42);
/// // Any lock: a re-entrant one lets the function call through the barrier again.
/// let reentrant = Barrier::new(RLock::new(&cache, b"barrier:r", None), Duration::from_secs(5));
/// assert_eq!(reentrant.call(|| reentrant.call(|| 1))??, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Barrier<L> {
    lock: L,
    timeout: Duration,
}

impl<L: Acquire> Barrier<L> {
    /// Calls will hold `lock`, waiting up to `timeout` for it.
    pub fn new(lock: L, timeout: Duration) -> Barrier<L> {
        Barrier { lock, timeout }
    }

    /// The lock calls hold.
    pub fn lock(&self) -> &L {
        &self.lock
    }

    /// Runs `f` holding the lock; [`Error::Timeout`](crate::Error::Timeout) if it was not
    /// free within the timeout (then `f` does not run).
    pub fn call<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _held = self.lock.hold(self.timeout)?;
        Ok(f())
    }
}

/// Holds an [`Acquire`] (from [`Acquire::hold`]); releases it on drop.
///
/// ```
/// use std::time::Duration;
/// use hoard_store::{Acquire, BoundedSemaphore, Cache};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let sem = BoundedSemaphore::new(&cache, b"sem", 1, None);
/// {
///     let _slot = sem.hold(Duration::from_secs(1))?;
///     assert_eq!(sem.available()?, 0);
/// }
/// assert_eq!(sem.available()?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Held<'a, L: Acquire + ?Sized> {
    lock: &'a L,
}

impl<'a, L: Acquire + ?Sized> Held<'a, L> {
    pub(crate) fn new(lock: &'a L) -> Held<'a, L> {
        Held { lock }
    }
}

impl<L: Acquire + ?Sized> Drop for Held<'_, L> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::recipes::Lock;

    #[test]
    fn released_after_the_call_and_after_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let lock = Lock::new(&cache, b"b", Duration::from_secs(60));
        let barrier = Barrier::new(lock.clone(), Duration::ZERO);
        assert!(barrier.call(|| lock.locked().unwrap()).unwrap());
        assert!(!lock.locked().unwrap());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            barrier.call(|| panic!("inside")).unwrap();
        }));
        assert!(panicked.is_err());
        assert!(!lock.locked().unwrap());
        // Taken elsewhere: the call times out and `f` does not run.
        assert!(lock.try_acquire().unwrap());
        let other = Barrier::new(
            Lock::new(&cache, b"b", Duration::from_secs(60)),
            Duration::from_millis(5),
        );
        let mut ran = false;
        assert!(matches!(
            other.call(|| ran = true),
            Err(crate::Error::Timeout)
        ));
        assert!(!ran);
    }
}
