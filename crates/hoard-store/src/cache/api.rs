//! The public [`Cache`] handle and its operations (diskcache's `Cache` API).

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::files::{Value, ValueReader, ValueWriter};
use crate::memory::{self, Stamp as ChangeStamp};
use crate::schema;
use crate::settings::Settings;
use rusqlite::{OptionalExtension, ToSql, params};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

/// A handle to a cache directory. Cheap to clone (an `Arc` inside), `Send + Sync`.
/// Buffered accesses and counters are flushed when the last clone drops.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// use std::time::Duration;
/// let cache = hoard_store::Cache::open(dir)?;
/// cache.set(b"k", b"v", Some(Duration::from_secs(60)), None)?;
/// assert!(!cache.add(b"k", b"other", None, None)?); // present: not added
/// assert_eq!(cache.incr(b"n", 2, Some(0))?, 2);
/// assert_eq!(cache.pop(b"k")?, Some(b"v".to_vec()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("directory", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// A value with its expiry and tag (diskcache `get(expire_time=True, tag=True)`).
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// let cache = hoard_store::Cache::open(dir)?;
/// cache.set(b"k", b"v", None, Some("t"))?;
/// let e = cache.get_entry(b"k")?.unwrap();
/// assert_eq!((e.value, e.expire_time, e.tag.as_deref()), (b"v".to_vec(), None, Some("t")));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Unix seconds after which the entry is expired; `None` never expires.
    pub expire_time: Option<f64>,
    /// Tag given at `set`, for [`Cache::evict`].
    pub tag: Option<String>,
}

/// One row read by [`Cache::record`]: metadata plus a value ready to stream.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// use std::io::Read;
/// let cache = hoard_store::Cache::open(dir)?;
/// cache.set_with_meta(b"k", &vec![7; 100_000], b"head", None, None)?; // a value file
/// let r = cache.record(b"k")?.unwrap();
/// assert_eq!((r.meta.as_slice(), r.len()), (&b"head"[..], 100_000));
/// let mut body = Vec::new();
/// r.into_reader().read_to_end(&mut body)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Record {
    /// Small metadata stored beside the value ([`Cache::set_meta`] replaces it alone).
    pub meta: Vec<u8>,
    /// Inline bytes, or an already open file.
    pub value: Value,
    /// Unix seconds when the value was stored.
    pub store_time: f64,
    /// Unix seconds after which the entry is expired; `None` never expires.
    pub expire_time: Option<f64>,
    /// Tag given at `set`.
    pub tag: Option<String>,
}

impl Record {
    /// Length of the value in bytes.
    pub fn len(&self) -> u64 {
        self.value.len()
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// A reader over the value (file values stream; never loaded whole).
    pub fn into_reader(self) -> ValueReader {
        ValueReader::new(self.value)
    }
}

/// One row listed by [`Cache::scan`] (no value).
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// let cache = hoard_store::Cache::open(dir)?;
/// cache.set(b"a:1", b"one", None, None)?;
/// let rows: Vec<hoard_store::ScanEntry> = cache.scan(b"a:").collect::<Result<_, _>>()?;
/// assert_eq!(rows.len(), 1);
/// assert_eq!(rows[0].key, b"a:1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Accounted size: key + meta + value bytes.
    pub size: u64,
    /// Unix seconds when stored.
    pub store_time: f64,
    /// Expiry in Unix seconds, if any.
    pub expire_time: Option<f64>,
    /// Tag, if any.
    pub tag: Option<String>,
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir` with the settings stored there
    /// (diskcache defaults for a new directory).
    pub fn open(dir: impl AsRef<Path>) -> Result<Cache> {
        Cache::builder(dir).open()
    }

    /// A builder whose settings are persisted to the database on [`CacheBuilder::open`].
    pub fn builder(dir: impl AsRef<Path>) -> CacheBuilder {
        CacheBuilder {
            dir: dir.as_ref().to_path_buf(),
            size_limit: None,
            cull_limit: None,
            eviction_policy: None,
            min_file_size: None,
            statistics: None,
            sqlite_mmap_size: None,
            sqlite_cache_size: None,
            clock: None,
            flush_interval: crate::buffer::FLUSH_INTERVAL,
            access_granularity: std::time::Duration::ZERO,
            flush_on_access: true,
            recover_corrupt: false,
            memory_cache_size: memory::DEFAULT_BUDGET,
            timeout: None,
        }
    }

    /// The cache directory.
    pub fn directory(&self) -> &Path {
        &self.inner.dir
    }

    /// The clock this cache uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Current settings, re-read from the database (the last known copy if that read fails).
    pub fn settings(&self) -> Settings {
        match self.inner.read(read_settings) {
            Ok(s) => {
                self.inner.cache_settings(&s);
                s
            }
            Err(_) => self
                .inner
                .settings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        }
    }

    /// Changes settings for every process using the directory; returns the new settings.
    /// SQLite tuning applies to connections opened afterwards (the idle pool is dropped).
    pub fn configure(&self, f: impl FnOnce(&mut Settings)) -> Result<Settings> {
        let s = self.inner.write(|c, _| {
            let mut s = read_settings(c)?;
            f(&mut s);
            write_settings(c, &s)?;
            schema::ensure_policy_index(c, s.eviction_policy)?;
            Ok(s)
        })?;
        self.inner.cache_settings(&s);
        *self.inner.tuning.lock().unwrap_or_else(|p| p.into_inner()) =
            (s.sqlite_mmap_size, s.sqlite_cache_size);
        self.inner.pool.clear();
        Ok(s)
    }

    /// Stores `value` under `key`, replacing any previous value; then culls.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.set_with_meta(key, value, &[], expire, tag)
    }

    /// Like [`set`](Cache::set), also storing `meta` beside the value.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        let payload = self.inner.payload_for(value)?;
        self.put_payload(key, payload, meta, expire, tag)
    }

    pub(crate) fn put_payload(
        &self,
        key: &[u8],
        mut payload: Payload<'_>,
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        crate::fault::check(&self.inner.dir)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            self.inner
                .put_in(c, p, key, &mut payload, meta, expire_time, tag, now)
        })
    }

    /// Stores everything `reader` yields under `key`, streaming large values to a file.
    /// Returns the number of bytes stored. On error nothing is stored.
    pub fn set_reader(
        &self,
        key: &[u8],
        mut reader: impl Read,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<u64> {
        let mut w = self.writer(key, expire, tag)?;
        std::io::copy(&mut reader, &mut w)?;
        w.commit()
    }

    /// A writer for a value to be stored under `key` on [`ValueWriter::commit`].
    pub fn writer(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<ValueWriter> {
        Ok(ValueWriter {
            cache: self.clone(),
            key: key.to_vec(),
            expire,
            tag: tag.map(String::from),
            meta: Vec::new(),
            threshold: self.inner.min_file_size.load(Ordering::Relaxed).max(1),
            buf: Vec::new(),
            file: None,
            written: 0,
        })
    }

    /// The live value of `key`. Counts a hit or miss and (LRU/LFU) an access.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get_held(key)?.map(|h| h.value))
    }

    /// The live value of `key` with its expire time and tag.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        Ok(self.inner.get_held(key)?.map(|h| Entry {
            value: h.value,
            expire_time: h.expire_time,
            tag: h.tag,
        }))
    }

    /// One SELECT returning meta and value (inline bytes or an already open file).
    /// Counts hit/miss and access like [`get`](Cache::get); expired rows read as `None`.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>> {
        Ok(self
            .inner
            .fetch(key, |i, row| i.load_value(row))?
            .map(|(row, value)| Record {
                meta: row.meta,
                value,
                store_time: row.store_time,
                expire_time: row.expire_time,
                tag: row.tag,
            }))
    }

    /// [`record`](Cache::record) for a caller that must not block (an async task on its
    /// runtime thread): one SELECT on an idle pooled connection that never waits on a lock,
    /// answered only for a missing, expired or inline row. `Ok(None)` means "ask
    /// [`record`](Cache::record) where blocking is fine": no idle connection, the database
    /// busy, or a row whose value is in a file or that needs repair (file I/O, a write).
    /// Counts a hit or miss and an access like `record`, but never flushes them.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let cache = hoard_store::Cache::open(dir.path())?;
    /// cache.set(b"k", b"v", None, None)?;
    /// let _ = cache.record(b"k")?; // a connection is now idle in the pool
    /// let found = cache.record_now(b"k")?.expect("inline row, nothing busy");
    /// assert_eq!(found.map(|r| r.meta), Some(Vec::new()));
    /// # Ok::<(), hoard_store::Error>(())
    /// ```
    pub fn record_now(&self, key: &[u8]) -> Result<Option<Option<Record>>> {
        Ok(match self.inner.fetch_now(key)? {
            RecordNow::Answered(r) => Some(r),
            RecordNow::File(_) | RecordNow::Later => None,
        })
    }

    /// [`record_now`](Cache::record_now), but a live row whose value is in a file comes back
    /// as [`RecordNow::File`]: [`open_file_row`](Cache::open_file_row) opens its file where
    /// blocking is fine without a second SELECT.
    pub fn record_now_or_file(&self, key: &[u8]) -> Result<RecordNow> {
        self.inner.fetch_now(key)
    }

    /// The record of a row [`record_now_or_file`](Cache::record_now_or_file) found, its value
    /// file opened (file I/O: call it where blocking is fine). Counts a hit or miss and an
    /// access like [`record`](Cache::record); a row whose file is gone or short is removed
    /// (if it is still the same row) and reads as `None`.
    pub fn open_file_row(&self, row: FileRow) -> Result<Option<Record>> {
        self.inner.open_file_row(row)
    }

    /// Meta of a live row, read without counting a hit or miss and without recording an
    /// access (for inspection tools that must not disturb statistics or eviction order).
    pub fn peek_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.inner.clock.now();
        self.inner.read(|c| {
            Ok(c.prepare_cached(
                "SELECT meta FROM cache WHERE key = ?1 \
                 AND (expire_time IS NULL OR expire_time > ?2)",
            )?
            .query_row(params![key, now], |r| r.get::<_, Vec<u8>>(0))
            .optional()?)
        })
    }

    /// Replaces meta and expire time of a live row without touching its value.
    /// Returns false when there is no live row.
    pub fn set_meta(&self, key: &[u8], meta: &[u8], expire: Option<Duration>) -> Result<bool> {
        crate::fault::check(&self.inner.dir)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            let n = c
                .prepare_cached(
                    "UPDATE cache SET meta = ?1, expire_time = ?2, \
                     size = size - length(meta) + ?3 WHERE key = ?4 \
                     AND (expire_time IS NULL OR expire_time > ?5)",
                )?
                .execute(params![meta, expire_time, meta.len() as i64, key, now])?;
            if n == 1 {
                self.inner.changed(p, key);
            }
            Ok(n == 1)
        })
    }

    /// Stores `value` only if `key` is absent or expired (atomic across processes).
    /// Returns whether it was stored.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let mut payload = self.inner.payload_for(value)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            self.inner
                .add_in(c, p, key, &mut payload, expire_time, tag, now)
        })
    }

    /// Deletes `key`. Returns whether a live entry was deleted.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let now = self.inner.clock.now();
        // The common case, a live inline row, in one statement that is its own transaction.
        let alone =
            self.inner
                .write_alone(key, Hot::DeleteLiveInline, rusqlite::params![key, now])?;
        if alone == Some(1) {
            return Ok(true);
        }
        self.inner
            .write(|c, p| self.inner.delete_in(c, p, key, now))
    }

    /// Deletes `key` and returns its live value.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let now = self.inner.clock.now();
        self.inner.write(|c, p| self.inner.pop_in(c, p, key, now))
    }

    /// Sets a new expiry (from now) on a live entry. Returns false when absent.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        let now = self.inner.clock.now();
        self.inner
            .write(|c, p| self.inner.touch_in(c, p, key, expire_at(now, expire), now))
    }

    /// Atomically adds `delta` to the decimal integer stored at `key` and returns the result.
    /// A missing key starts at `default` (error [`Error::KeyNotFound`] without one).
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        let now = self.inner.clock.now();
        self.inner
            .write(|c, p| self.inner.incr_in(c, p, key, delta, default, now))
    }

    /// Atomically subtracts `delta`; see [`incr`](Cache::incr).
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.incr(
            key,
            delta.checked_neg().ok_or(Error::NotAnInteger)?,
            default,
        )
    }

    /// Whether a live entry exists (does not count as a hit or access).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        let now = self.inner.clock.now();
        self.inner.read(|c| self.inner.contains_in(c, key, now))
    }

    /// Whether any row's key starts with `prefix`, live or expired (one index lookup; does
    /// not count as a hit or access).
    pub fn contains_prefix(&self, prefix: &[u8]) -> Result<bool> {
        self.inner.read(|c| {
            let first: Option<Vec<u8>> = c
                .prepare_cached("SELECT key FROM cache WHERE key >= ?1 ORDER BY key LIMIT 1")?
                .query_row([prefix], |r| r.get(0))
                .optional()?;
            Ok(first.is_some_and(|k| k.starts_with(prefix)))
        })
    }

    /// Runs bulk deletes in batches of [`BULK_BATCH`] rows per transaction, then gives the
    /// freed pages back to the file system.
    fn bulk_delete(&self, filter: &str, order: &str, arg: &dyn ToSql) -> Result<u64> {
        self.in_batches(|c, p| {
            self.inner
                .delete_where(c, p, filter, order, arg, BULK_BATCH, -1)
        })
    }

    /// Runs `batch` (which deletes at most [`BULK_BATCH`] rows) in one transaction after
    /// another until it deletes fewer; returns the total.
    fn in_batches(
        &self,
        batch: impl Fn(&rusqlite::Connection, &mut Pending) -> Result<u64>,
    ) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.inner.write(&batch)?;
            total += n;
            if n < BULK_BATCH as u64 {
                if total > 0 {
                    self.reclaim()?;
                }
                return Ok(total);
            }
        }
    }

    /// Gives the database's free pages back to the file system (incremental auto_vacuum;
    /// done after `expire`, `evict`, `clear` and `cull` delete rows), in transactions of
    /// [`schema::RECLAIM_BATCH`] pages. Bounded: pages other writers free meanwhile may
    /// stay for the next time.
    fn reclaim(&self) -> Result<()> {
        let mut left = u64::MAX;
        for _ in 0..1024 {
            let now_left = self
                .inner
                .write(|c, _| schema::reclaim_free_pages(c, schema::RECLAIM_BATCH))?;
            if now_left == 0 || now_left >= left {
                break;
            }
            left = now_left;
        }
        Ok(())
    }

    /// Deletes every expired row (per the cache clock); returns how many.
    pub fn expire(&self) -> Result<u64> {
        let now = self.inner.clock.now();
        self.in_batches(|c, p| self.inner.delete_expired(c, p, now, BULK_BATCH, -1))
    }

    /// Deletes every row tagged `tag`; returns how many.
    pub fn evict(&self, tag: &str) -> Result<u64> {
        self.bulk_delete("tag IS NOT NULL AND tag = ?1", "tag", &tag)
    }

    /// Deletes every row; returns how many.
    pub fn clear(&self) -> Result<u64> {
        self.bulk_delete("1", "rowid", &rusqlite::types::Null)
    }

    /// Deletes expired rows, then evicts by policy until the volume is within the limit.
    /// Returns how many rows were deleted.
    pub fn cull(&self) -> Result<u64> {
        let mut total = self.expire()?;
        let now = self.inner.clock.now();
        loop {
            let n = self.inner.write(|c, p| {
                let s = read_settings(c)?;
                self.inner.cache_settings(&s);
                self.inner.cull_in(
                    c,
                    p,
                    &s,
                    now,
                    -1,
                    (s.cull_limit as i64).max(1),
                    BULK_BATCH as u64,
                )
            })?;
            total += n;
            if n < BULK_BATCH as u64 {
                if n > 0 {
                    self.reclaim()?;
                }
                return Ok(total);
            }
        }
    }

    /// Returns (hits, misses) counted so far (all processes), then sets `statistics`
    /// to `enable` and zeroes the counters if `reset`.
    pub fn stats(&self, enable: bool, reset: bool) -> Result<(u64, u64)> {
        self.inner.flush()?;
        let out = self.inner.write(|c, _| {
            let (h, m): (i64, i64) = c
                .prepare_cached("SELECT hits, misses FROM counters WHERE id = 0")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if reset {
                c.execute("UPDATE counters SET hits = 0, misses = 0 WHERE id = 0", [])?;
            }
            c.execute(
                "UPDATE settings SET statistics = ?1 WHERE id = 0",
                [enable as i64],
            )?;
            Ok((h.max(0) as u64, m.max(0) as u64))
        })?;
        self.inner.statistics.store(enable, Ordering::Relaxed);
        Ok(out)
    }

    /// Bytes used: accounted row sizes (key + meta + value) plus the database size.
    pub fn volume(&self) -> Result<u64> {
        self.inner.read(volume_in)
    }

    /// Number of rows (including expired rows not yet removed).
    pub fn len(&self) -> Result<u64> {
        self.inner.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT count FROM counters WHERE id = 0")?
                .query_row([], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    /// True when the cache holds no rows.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The change counters of `key` (shared by every process; see the module docs), for
    /// callers that keep their own copies of rows: sample before reading the row, keep the
    /// stamp with the copy, and use the copy only while a new sample is equal. Any write of
    /// the key by any handle or process changes it. `None` when `cache.gen` could not be
    /// created (then only a time bound can limit staleness).
    pub fn change_stamp(&self, key: &[u8]) -> Option<ChangeStamp> {
        self.inner
            .gens
            .as_ref()
            .map(|g| g.stamp(memory::key_hash(key)))
    }

    /// Records a hit on `key` served from a copy held outside the store (an in-memory
    /// front): buffers its access time and count (for LRU/LFU) and the hit counter, exactly
    /// as a [`record`](Cache::record) hit would, but never flushes inline, so it is safe to
    /// call on a latency-sensitive thread. Call [`flush`](Cache::flush) periodically.
    pub fn note_hit(&self, key: &[u8]) {
        let i = &self.inner;
        if i.statistics.load(Ordering::Relaxed) {
            i.buffer.count(true);
        }
        if i.policy().tracks_access() {
            i.buffer.access(key, i.clock.now());
        }
    }

    /// [`note_hit`](Cache::note_hit) for a copy whose access was last noted at `noted`
    /// (seconds of the cache clock, as returned by an earlier call; 0 for never): the hit is
    /// always counted, but an LRU access is buffered only when its time is at least the access
    /// granularity ([`CacheBuilder::access_granularity`]) past `noted`, since a flush would
    /// not rewrite the row's access time for less. A copy hit many times a second then adds
    /// nothing to the next flush. Returns the time to remember as noted for the copy (the
    /// stored access time may lag its last hit by up to twice the granularity).
    pub fn note_hit_since(&self, key: &[u8], noted: f64) -> f64 {
        let i = &self.inner;
        if i.statistics.load(Ordering::Relaxed) {
            i.buffer.count(true);
        }
        if !i.policy().tracks_access() {
            return noted;
        }
        let now = i.clock.now();
        let g = i.buffer.granularity();
        // LFU counts every access; only an LRU access time has a granularity.
        let lru = matches!(i.policy(), crate::EvictionPolicy::LeastRecentlyUsed);
        if lru && g > 0.0 && now >= noted && now - noted < g {
            return noted;
        }
        i.buffer.access(key, now);
        now
    }

    /// Writes buffered access times/counts and hit/miss counters to the database.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}
