//! Cross-process synchronization recipes on a [`Cache`](crate::Cache) (diskcache.recipes):
//! [`Lock`], [`RLock`], [`BoundedSemaphore`], [`Throttle`], [`Barrier`], [`Averager`].
//!
//! Invariant: each recipe's state is one row, changed only inside one write transaction
//! (so every process sees a consistent count), written with an optional expiry (so a
//! holder that crashes blocks the others only until it passes) and tag.

mod averager;
mod barrier;
mod lock;
mod rlock;
mod semaphore;
mod throttle;

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Transaction};
use crate::codec::{Codec, Postcard, decode};
use crate::error::{Error, Result};

pub use averager::Averager;
pub use barrier::{Barrier, Held};
pub use lock::{Lock, LockGuard};
pub use rlock::RLock;
pub use semaphore::BoundedSemaphore;
pub use throttle::{Sleep, Throttle};

/// Something taken and given back across processes: [`Lock`], [`RLock`],
/// [`BoundedSemaphore`]. [`Barrier`] runs functions under any of them.
///
/// ```
/// use std::time::Duration;
/// use hoard_store::{Acquire, Cache, RLock};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let lock = RLock::new(&cache, b"rlock", Some(Duration::from_secs(10)));
/// let held = lock.hold(Duration::from_secs(1))?; // released when `held` drops
/// assert!(lock.try_acquire()?); // re-entrant on this thread
/// lock.release()?;
/// drop(held);
/// assert!(matches!(lock.release(), Err(hoard_store::Error::NotAcquired(_))));
/// # Ok(())
/// # }
/// ```
pub trait Acquire {
    /// Takes it if free now; whether it did.
    fn try_acquire(&self) -> Result<bool>;

    /// Gives it back.
    fn release(&self) -> Result<()>;

    /// Waits (polling with backoff, real time) up to `timeout`; [`Error::Timeout`] if it
    /// stays taken.
    fn acquire(&self, timeout: Duration) -> Result<()> {
        wait_for(timeout, || self.try_acquire())
    }

    /// [`acquire`](Acquire::acquire)s and returns a guard that releases on drop.
    fn hold(&self, timeout: Duration) -> Result<Held<'_, Self>> {
        self.acquire(timeout)?;
        Ok(Held::new(self))
    }
}

/// Calls `attempt` until it returns true, sleeping 1 ms doubling to 50 ms in between, for
/// at most `timeout` of real time.
pub(crate) fn wait_for(timeout: Duration, mut attempt: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if attempt()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout);
        }
        std::thread::sleep(delay.min(timeout.saturating_sub(start.elapsed())));
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// The one row a recipe keeps its state in (postcard-encoded), with the expiry and tag
/// every write gives it.
#[derive(Debug, Clone)]
pub(crate) struct StateRow {
    pub(crate) cache: Cache,
    pub(crate) key: Vec<u8>,
    pub(crate) expire: Option<Duration>,
    pub(crate) tag: Option<String>,
}

impl StateRow {
    pub(crate) fn new(cache: &Cache, key: &[u8], expire: Option<Duration>) -> StateRow {
        StateRow {
            cache: cache.clone(),
            key: key.to_vec(),
            expire,
            tag: None,
        }
    }

    pub(crate) fn tagged(mut self, tag: &str) -> StateRow {
        self.tag = Some(tag.to_string());
        self
    }

    /// The state now (outside a transaction).
    pub(crate) fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.cache.get(&self.key)?.map(|b| decode(&b)).transpose()
    }

    /// The state, removing the row.
    pub(crate) fn take<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.cache.pop(&self.key)?.map(|b| decode(&b)).transpose()
    }

    /// The state inside `tx`.
    pub(crate) fn read<T: DeserializeOwned>(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        tx.get(&self.key)?.map(|b| decode(&b)).transpose()
    }

    /// Writes `state` inside `tx`, with the row's expiry and tag.
    pub(crate) fn write<T: Serialize>(&self, tx: &Transaction<'_>, state: &T) -> Result<()> {
        let bytes = Postcard.encode(state)?;
        tx.set(&self.key, &bytes, self.expire, self.tag.as_deref())
    }

    /// Deletes the row inside `tx`.
    pub(crate) fn delete(&self, tx: &Transaction<'_>) -> Result<()> {
        tx.delete(&self.key).map(drop)
    }
}
