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
use super::settings::EvictionPolicy;

/// Distinct keys with pending accesses that trigger a flush. Large, so that repeated reads
/// of a working set merge in memory instead of each costing an `UPDATE`.
pub const FLUSH_KEYS: usize = 65_536;
/// Keys written per write transaction when flushing (bounds how long a flush holds the lock).
pub const FLUSH_CHUNK: usize = 1024;
/// Pending hits + misses that trigger a flush.
pub const FLUSH_COUNTS: u64 = 65_536;
/// Default maximum age of buffered state before the next access triggers a flush
/// (see [`CacheBuilder::flush_interval`](super::CacheBuilder::flush_interval)).
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
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.accesses.is_empty() && self.hits == 0 && self.misses == 0
    }

    /// Splits into parts of at most [`FLUSH_CHUNK`] keys (counters go with the first),
    /// sorted by key so each part walks the key index in order.
    pub(crate) fn into_chunks(self) -> Vec<Drained> {
        let mut entries: Vec<(Vec<u8>, Access)> = self.accesses.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        let (mut hits, mut misses) = (self.hits, self.misses);
        let mut it = entries.into_iter().peekable();
        loop {
            let part: HashMap<Vec<u8>, Access> = it.by_ref().take(FLUSH_CHUNK).collect();
            if part.is_empty() && hits == 0 && misses == 0 {
                return out;
            }
            out.push(Drained {
                accesses: part,
                hits,
                misses,
            });
            (hits, misses) = (0, 0);
            if it.peek().is_none() {
                return out;
            }
        }
    }

    /// Writes the drained state inside the caller's write transaction. Only the column
    /// the policy orders by is written (one index to maintain, not two).
    pub(crate) fn apply(
        &self,
        conn: &Connection,
        policy: EvictionPolicy,
        granularity: f64,
    ) -> Result<()> {
        if !self.accesses.is_empty() {
            let mut keys: Vec<&Vec<u8>> = self.accesses.keys().collect();
            keys.sort_unstable();
            match policy {
                EvictionPolicy::LeastFrequentlyUsed => {
                    let mut stmt = conn.prepare_cached(
                        "UPDATE cache SET access_count = access_count + ?1 WHERE key = ?2",
                    )?;
                    for key in keys {
                        stmt.execute(rusqlite::params![self.accesses[key].count as i64, key])?;
                    }
                }
                _ => {
                    // A row read again within `granularity` keeps its page untouched.
                    let mut stmt = conn.prepare_cached(
                        "UPDATE cache SET access_time = ?1 WHERE key = ?2 AND access_time < ?1 - ?3",
                    )?;
                    for key in keys {
                        stmt.execute(rusqlite::params![self.accesses[key].time, key, granularity])?;
                    }
                }
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
    interval_ms: u64,
    last_flush_ms: AtomicU64,
    /// Seconds an LRU access time must advance before it is rewritten (0: always).
    granularity: f64,
    /// Held while a flush writes, so only one thread flushes at a time.
    pub(crate) flushing: Mutex<()>,
    /// Whether an access or count may report a flush as due (false: only explicit flushes).
    on_access: bool,
}

impl AccessBuffer {
    pub(crate) fn new(interval: Duration) -> AccessBuffer {
        AccessBuffer {
            interval_ms: interval.as_millis().min(u64::MAX as u128) as u64,
            accesses: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            base: Instant::now(),
            last_flush_ms: AtomicU64::new(0),
            granularity: 0.0,
            flushing: Mutex::new(()),
            on_access: true,
        }
    }

    /// Whether reads may flush when a flush is due (false: the owner calls `flush` itself).
    pub(crate) fn with_flush_on_access(mut self, on: bool) -> AccessBuffer {
        self.on_access = on;
        self
    }

    /// Rewrite an LRU access time only when it advances by at least `g`.
    pub(crate) fn with_granularity(mut self, g: Duration) -> AccessBuffer {
        self.granularity = g.as_secs_f64();
        self
    }

    /// See [`with_granularity`](Self::with_granularity), in seconds.
    pub(crate) fn granularity(&self) -> f64 {
        self.granularity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Access>> {
        self.accesses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interval_passed(&self) -> bool {
        let now = self.base.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_flush_ms.load(Ordering::Relaxed)) >= self.interval_ms
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
        self.on_access && (map.len() >= FLUSH_KEYS || self.interval_passed())
    }

    /// Counts a hit or a miss. Returns true when a flush is due.
    pub(crate) fn count(&self, hit: bool) -> bool {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
        let pending = self.hits.load(Ordering::Relaxed) + self.misses.load(Ordering::Relaxed);
        self.on_access && (pending >= FLUSH_COUNTS || self.interval_passed())
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
    fn lru_access_times_move_only_by_the_granularity() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE cache (key BLOB, access_time REAL, access_count INTEGER);
             INSERT INTO cache VALUES (x'61', 100.0, 0);
             CREATE TABLE counters (id INTEGER, hits INTEGER, misses INTEGER);",
        )
        .unwrap();
        let at = |t: f64| Drained {
            accesses: HashMap::from([(b"a".to_vec(), Access { time: t, count: 1 })]),
            ..Drained::default()
        };
        let time = |c: &Connection| -> f64 {
            c.query_row("SELECT access_time FROM cache", [], |r| r.get(0))
                .unwrap()
        };
        at(105.0)
            .apply(&conn, EvictionPolicy::LeastRecentlyUsed, 10.0)
            .unwrap();
        assert_eq!(time(&conn), 100.0, "moved by less than the granularity");
        at(111.0)
            .apply(&conn, EvictionPolicy::LeastRecentlyUsed, 10.0)
            .unwrap();
        assert_eq!(time(&conn), 111.0);
        at(112.0)
            .apply(&conn, EvictionPolicy::LeastRecentlyUsed, 0.0)
            .unwrap();
        assert_eq!(time(&conn), 112.0, "granularity 0 records every access");
    }

    #[test]
    fn accesses_merge_per_key() {
        let b = AccessBuffer::new(FLUSH_INTERVAL);
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
        let b = AccessBuffer::new(FLUSH_INTERVAL);
        b.last_flush_ms.store(u64::MAX / 2, Ordering::Relaxed); // interval never passes
        let due: Vec<bool> = (0..FLUSH_KEYS)
            .map(|i| b.access(&i.to_le_bytes(), 1.0))
            .collect();
        assert!(!due[FLUSH_KEYS - 2]);
        assert!(due[FLUSH_KEYS - 1]);
    }

    #[test]
    fn chunks_are_sorted_and_carry_counters_once() {
        let b = AccessBuffer::new(FLUSH_INTERVAL);
        for i in (0..(FLUSH_CHUNK as u32 + 5)).rev() {
            b.access(&i.to_be_bytes(), 1.0);
        }
        b.count(true);
        let parts = b.drain().into_chunks();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].accesses.len(), FLUSH_CHUNK);
        assert_eq!(parts[1].accesses.len(), 5);
        assert_eq!((parts[0].hits, parts[1].hits), (1, 0));
        assert!(
            parts[0]
                .accesses
                .contains_key(0u32.to_be_bytes().as_slice())
        );
        let only_counts = Drained {
            hits: 2,
            ..Drained::default()
        }
        .into_chunks();
        assert_eq!(only_counts.len(), 1);
        assert!(Drained::default().into_chunks().is_empty());
    }

    #[test]
    fn counts_drain_and_restore() {
        let b = AccessBuffer::new(FLUSH_INTERVAL);
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
