//! In-memory buffer of LRU/LFU accesses and hit/miss counts, flushed to SQLite in batches.
//!
//! Invariant: the read path never takes a write transaction. Buffered state is applied
//! by [`Cache::flush`](super::Cache::flush), automatically once [`FLUSH_KEYS`] distinct keys
//! or [`FLUSH_COUNTS`] hits+misses are pending or [`FLUSH_INTERVAL`] has passed since the
//! last flush (checked on the next access), before this process culls by LRU/LFU, and on
//! drop of the last clone of a cache. Lost updates (crash, failed flush) only make the
//! eviction order and statistics approximate; they never corrupt data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::error::Result;

/// Distinct keys with pending accesses that trigger a flush.
pub const FLUSH_KEYS: usize = 1024;
/// Pending hits + misses that trigger a flush.
pub const FLUSH_COUNTS: u64 = 4096;
/// Maximum age of buffered state before the next access triggers a flush.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// One key's pending access: latest access time and number of accesses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Access {
    pub(crate) time: f64,
    pub(crate) count: u64,
}

/// Pending state taken out of the buffer by a flush.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub(crate) accesses: HashMap<Vec<u8>, Access>,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl Drained {
    pub(crate) fn is_empty(&self) -> bool {
        self.accesses.is_empty() && self.hits == 0 && self.misses == 0
    }

    /// Writes the drained state inside the caller's write transaction.
    pub(crate) fn apply(&self, conn: &Connection) -> Result<()> {
        if !self.accesses.is_empty() {
            let mut stmt = conn.prepare_cached(
                "UPDATE cache SET access_time = MAX(access_time, ?1), \
                 access_count = access_count + ?2 WHERE key = ?3",
            )?;
            for (key, a) in &self.accesses {
                stmt.execute(rusqlite::params![a.time, a.count as i64, key])?;
            }
        }
        if self.hits != 0 || self.misses != 0 {
            conn.prepare_cached(
                "UPDATE counters SET hits = hits + ?1, misses = misses + ?2 WHERE id = 0",
            )?
            .execute([self.hits as i64, self.misses as i64])?;
        }
        Ok(())
    }
}

/// The buffer itself; one per open cache directory handle.
#[derive(Debug)]
pub(crate) struct AccessBuffer {
    accesses: Mutex<HashMap<Vec<u8>, Access>>,
    hits: AtomicU64,
    misses: AtomicU64,
    base: Instant,
    last_flush_ms: AtomicU64,
    /// Held while a flush writes, so only one thread flushes at a time.
    pub(crate) flushing: Mutex<()>,
}

impl AccessBuffer {
    pub(crate) fn new() -> AccessBuffer {
        AccessBuffer {
            accesses: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            base: Instant::now(),
            last_flush_ms: AtomicU64::new(0),
            flushing: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Access>> {
        self.accesses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interval_passed(&self) -> bool {
        let now = self.base.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_flush_ms.load(Ordering::Relaxed))
            >= FLUSH_INTERVAL.as_millis() as u64
    }

    /// Records one access of `key` at `time`. Returns true when a flush is due.
    pub(crate) fn access(&self, key: &[u8], time: f64) -> bool {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(a) => {
                a.time = a.time.max(time);
                a.count += 1;
            }
            None => {
                map.insert(key.to_vec(), Access { time, count: 1 });
            }
        }
        map.len() >= FLUSH_KEYS || self.interval_passed()
    }

    /// Counts a hit or a miss. Returns true when a flush is due.
    pub(crate) fn count(&self, hit: bool) -> bool {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
        self.hits.load(Ordering::Relaxed) + self.misses.load(Ordering::Relaxed) >= FLUSH_COUNTS
            || self.interval_passed()
    }

    /// Takes only the pending accesses (used before an LRU/LFU cull).
    pub(crate) fn take_accesses(&self) -> HashMap<Vec<u8>, Access> {
        std::mem::take(&mut *self.lock())
    }

    /// Takes everything pending and restarts the flush interval.
    pub(crate) fn drain(&self) -> Drained {
        self.last_flush_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        Drained {
            accesses: self.take_accesses(),
            hits: self.hits.swap(0, Ordering::Relaxed),
            misses: self.misses.swap(0, Ordering::Relaxed),
        }
    }

    /// Puts counters back after a failed flush (accesses are dropped: order is approximate anyway).
    pub(crate) fn restore_counts(&self, d: &Drained) {
        self.hits.fetch_add(d.hits, Ordering::Relaxed);
        self.misses.fetch_add(d.misses, Ordering::Relaxed);
    }

    /// Pending (hits, misses) not yet flushed.
    #[cfg(test)]
    pub(crate) fn pending_counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_merge_per_key() {
        let b = AccessBuffer::new();
        b.access(b"a", 5.0);
        b.access(b"a", 3.0);
        b.access(b"b", 1.0);
        let d = b.drain();
        assert_eq!(
            d.accesses[&b"a".to_vec()],
            Access {
                time: 5.0,
                count: 2
            }
        );
        assert_eq!(
            d.accesses[&b"b".to_vec()],
            Access {
                time: 1.0,
                count: 1
            }
        );
        assert!(b.drain().is_empty());
    }

    #[test]
    fn flush_is_due_after_many_keys() {
        let b = AccessBuffer::new();
        b.last_flush_ms.store(u64::MAX / 2, Ordering::Relaxed); // interval never passes
        let due: Vec<bool> = (0..FLUSH_KEYS)
            .map(|i| b.access(&i.to_le_bytes(), 1.0))
            .collect();
        assert!(!due[FLUSH_KEYS - 2]);
        assert!(due[FLUSH_KEYS - 1]);
    }

    #[test]
    fn counts_drain_and_restore() {
        let b = AccessBuffer::new();
        b.count(true);
        b.count(true);
        b.count(false);
        let d = b.drain();
        assert_eq!((d.hits, d.misses), (2, 1));
        assert_eq!(b.pending_counts(), (0, 0));
        b.restore_counts(&d);
        assert_eq!(b.pending_counts(), (2, 1));
    }
}
