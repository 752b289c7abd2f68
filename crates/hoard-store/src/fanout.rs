//! [`FanoutCache`]: N [`Cache`] shards in sub-directories, chosen by a stable key hash, with
//! diskcache's fail-soft timeout.
//!
//! Invariants: a key always maps to the same shard, in every process and every build
//! (xxh3-64 of the key modulo the shard count, never Rust's random `RandomState`); the
//! size limit (the default one too) is divided evenly between shards; a single-key
//! operation never waits longer than the timeout for a shard another writer holds: it
//! reports a miss / `false` / `None` instead (diskcache's `retry=False`), while bulk
//! operations and [`FanoutCache::transact`] wait (diskcache's `retry=True`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cache::{Cache, Entry, Evictions, Record, ScanEntry};
use super::clock::Clock;
use super::error::{Error, Result};
use super::files::ValueWriter;
use super::retry::patiently;
use super::settings::{EvictionPolicy, Settings};

/// diskcache's default `timeout` of a `FanoutCache` shard (10 ms).
pub const DEFAULT_FANOUT_TIMEOUT: Duration = Duration::from_millis(10);

/// The shard index of `key` among `shards` shards.
pub(crate) fn shard_of(key: &[u8], shards: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % shards.max(1) as u64) as usize
}

/// `r`, or `fallback` when the shard stayed busy past the timeout.
fn soft<T>(r: Result<T>, fallback: T) -> Result<T> {
    match r {
        Err(Error::Timeout) => Ok(fallback),
        r => r,
    }
}

/// A cache sharded over N directories (`000`, `001`, ...) to spread write contention.
///
/// Like diskcache's `FanoutCache`, single-key operations are fail-soft: when the key's
/// shard is locked by another writer for longer than the timeout
/// ([`FanoutBuilder::timeout`], default 10 ms), `get` reports a miss, `set`, `add`,
/// `delete` and `touch` return `false`, `incr` and `pop` return `None`, instead of
/// waiting (up to a minute) and failing. Other errors (I/O, corruption) are still errors.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// let cache = hoard_store::FanoutCache::open(dir, 4)?;
/// assert!(cache.set(b"k", b"v", None, None)?); // false: the shard was busy, not stored
/// assert_eq!(cache.get(b"k")?, Some(b"v".to_vec()));
/// assert_eq!(cache.incr(b"n", 1, Some(0))?, Some(1));
/// assert_eq!(cache.shards().len(), 4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FanoutCache {
    dir: PathBuf,
    shards: Arc<[Cache]>,
}

/// Opens a [`FanoutCache`]; settings apply to every shard (`size_limit` is the total).
#[derive(Debug)]
pub struct FanoutBuilder {
    dir: PathBuf,
    shards: usize,
    size_limit: Option<u64>,
    cull_limit: Option<u32>,
    eviction_policy: Option<EvictionPolicy>,
    min_file_size: Option<u64>,
    statistics: Option<bool>,
    clock: Option<Arc<dyn Clock>>,
    memory_cache_size: Option<u64>,
    timeout: Duration,
}

impl FanoutBuilder {
    /// Total size limit in bytes, divided evenly between shards. Without it, a new shard
    /// gets the default limit (1 GiB) divided by the shard count, as in diskcache, and an
    /// existing shard keeps its stored limit.
    pub fn size_limit(mut self, v: u64) -> Self {
        self.size_limit = Some(v);
        self
    }
    /// Cull limit of each shard.
    pub fn cull_limit(mut self, v: u32) -> Self {
        self.cull_limit = Some(v);
        self
    }
    /// Eviction policy of each shard.
    pub fn eviction_policy(mut self, v: EvictionPolicy) -> Self {
        self.eviction_policy = Some(v);
        self
    }
    /// `min_file_size` of each shard.
    pub fn min_file_size(mut self, v: u64) -> Self {
        self.min_file_size = Some(v);
        self
    }
    /// Whether each shard counts hits and misses.
    pub fn statistics(mut self, v: bool) -> Self {
        self.statistics = Some(v);
        self
    }
    /// Clock shared by every shard.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Total memory-layer budget in bytes, divided evenly between shards (default
    /// [`DEFAULT_MEMORY_CACHE_SIZE`](super::DEFAULT_MEMORY_CACHE_SIZE) in all; see
    /// [`CacheBuilder::memory_cache_size`](super::CacheBuilder::memory_cache_size)).
    pub fn memory_cache_size(mut self, bytes: u64) -> Self {
        self.memory_cache_size = Some(bytes);
        self
    }
    /// How long a single-key operation waits for a shard another writer holds before it
    /// gives up fail-soft (default [`DEFAULT_FANOUT_TIMEOUT`], diskcache's 10 ms); see
    /// [`CacheBuilder::timeout`](super::CacheBuilder::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens (creating) every shard.
    pub fn open(self) -> Result<FanoutCache> {
        let n = self.shards.max(1);
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let dir = self.dir.join(format!("{i:03}"));
            let new = !dir.join(super::schema::DB_FILE).exists();
            let mut b = Cache::builder(&dir).timeout(self.timeout);
            let total = match self.size_limit {
                Some(v) => Some(v),
                None if new => Some(Settings::default().size_limit),
                None => None,
            };
            if let Some(v) = total {
                b = b.size_limit(v / n as u64);
            }
            if let Some(v) = self.cull_limit {
                b = b.cull_limit(v);
            }
            if let Some(v) = self.eviction_policy {
                b = b.eviction_policy(v);
            }
            if let Some(v) = self.min_file_size {
                b = b.min_file_size(v);
            }
            if let Some(v) = self.statistics {
                b = b.statistics(v);
            }
            if let Some(c) = &self.clock {
                b = b.clock(c.clone());
            }
            // The total, not each shard's (the default too).
            let memory = self
                .memory_cache_size
                .unwrap_or(super::DEFAULT_MEMORY_CACHE_SIZE);
            b = b.memory_cache_size(memory / n as u64);
            shards.push(b.open()?);
        }
        Ok(FanoutCache {
            dir: self.dir,
            shards: shards.into(),
        })
    }
}

impl FanoutCache {
    /// Opens `shards` shards under `dir` with their stored settings (for a new shard,
    /// diskcache's defaults with the size limit divided by the shard count).
    pub fn open(dir: impl AsRef<Path>, shards: usize) -> Result<FanoutCache> {
        FanoutCache::builder(dir, shards).open()
    }

    /// A builder for `shards` shards under `dir`.
    pub fn builder(dir: impl AsRef<Path>, shards: usize) -> FanoutBuilder {
        FanoutBuilder {
            dir: dir.as_ref().to_path_buf(),
            shards,
            size_limit: None,
            cull_limit: None,
            eviction_policy: None,
            min_file_size: None,
            statistics: None,
            clock: None,
            memory_cache_size: None,
            timeout: DEFAULT_FANOUT_TIMEOUT,
        }
    }

    /// The top directory.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// All shards, in index order.
    pub fn shards(&self) -> &[Cache] {
        &self.shards
    }

    /// The shard holding `key`.
    pub fn shard(&self, key: &[u8]) -> &Cache {
        &self.shards[shard_of(key, self.shards.len())]
    }

    /// Settings of shard 0 with `size_limit` as the total over all shards.
    pub fn settings(&self) -> Settings {
        let mut s = self.shards[0].settings();
        s.size_limit *= self.shards.len() as u64;
        s
    }

    /// [`Cache::configure`] on every shard (waiting for busy shards): `f` sees and sets
    /// `size_limit` as the total, which each shard gets an even share of. Returns the
    /// settings of shard 0 with the total limit.
    pub fn configure(&self, f: impl FnOnce(&mut Settings)) -> Result<Settings> {
        let mut wanted = self.settings();
        f(&mut wanted);
        let n = self.shards.len() as u64;
        patiently(|| -> Result<()> {
            for c in self.shards.iter() {
                c.configure(|s| {
                    let share = wanted.size_limit / n;
                    *s = wanted.clone();
                    s.size_limit = share;
                })?;
            }
            Ok(())
        })?;
        Ok(self.settings())
    }

    /// Runs `f` with every shard's write transaction held (taken in shard order, waiting
    /// for busy shards, like diskcache's `FanoutCache.transact`): calls on this
    /// `FanoutCache` made on this thread inside `f` join those transactions, so they are
    /// atomic together and never time out. Commits if `f` returns `Ok`, else rolls back.
    /// For one shard only, use `shard(key).transact(..)`.
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let cache = hoard_store::FanoutCache::open(tmp.path(), 4)?;
    /// cache.transact(|| {
    ///     cache.incr(b"total", 120, Some(0))?;
    ///     cache.incr(b"count", 1, Some(0))?;
    ///     Ok(())
    /// })?;
    /// assert_eq!(cache.get(b"count")?, Some(b"1".to_vec()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn transact<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        fn nest<T>(shards: &[Cache], f: &mut dyn FnMut() -> Result<T>) -> Result<T> {
            match shards.split_first() {
                None => f(),
                Some((first, rest)) => first.transact(|_| nest(rest, f)),
            }
        }
        let mut f = Some(f);
        patiently(|| nest(&self.shards, &mut || (f.take().expect("called once"))()))
    }

    /// [`Cache::set`] on the key's shard; `false` when the shard stayed busy (not stored).
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        soft(
            self.shard(key).set(key, value, expire, tag).map(|_| true),
            false,
        )
    }
    /// [`Cache::set_with_meta`] on the key's shard; `false` when the shard stayed busy.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let r = self.shard(key).set_with_meta(key, value, meta, expire, tag);
        soft(r.map(|_| true), false)
    }
    /// [`Cache::set_reader`] on the key's shard; `None` when the shard stayed busy.
    pub fn set_reader(
        &self,
        key: &[u8],
        reader: impl Read,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<Option<u64>> {
        soft(
            self.shard(key)
                .set_reader(key, reader, expire, tag)
                .map(Some),
            None,
        )
    }
    /// [`Cache::writer`] on the key's shard (its commit is not fail-soft: it returns
    /// [`Error::Timeout`] when the shard stays busy).
    pub fn writer(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<ValueWriter> {
        self.shard(key).writer(key, expire, tag)
    }
    /// [`Cache::get`] on the key's shard; a miss when the shard stayed busy.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        soft(self.shard(key).get(key), None)
    }
    /// [`Cache::get_entry`] on the key's shard; a miss when the shard stayed busy.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        soft(self.shard(key).get_entry(key), None)
    }
    /// [`Cache::record`] on the key's shard; a miss when the shard stayed busy.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>> {
        soft(self.shard(key).record(key), None)
    }
    /// [`Cache::set_meta`] on the key's shard; `false` when the shard stayed busy.
    pub fn set_meta(&self, key: &[u8], meta: &[u8], expire: Option<Duration>) -> Result<bool> {
        soft(self.shard(key).set_meta(key, meta, expire), false)
    }
    /// [`Cache::add`] on the key's shard; `false` when the shard stayed busy.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        soft(self.shard(key).add(key, value, expire, tag), false)
    }
    /// [`Cache::delete`] on the key's shard; `false` when the shard stayed busy.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        soft(self.shard(key).delete(key), false)
    }
    /// [`Cache::pop`] on the key's shard; `None` when the shard stayed busy.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        soft(self.shard(key).pop(key), None)
    }
    /// [`Cache::touch`] on the key's shard; `false` when the shard stayed busy.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        soft(self.shard(key).touch(key, expire), false)
    }
    /// [`Cache::incr`] on the key's shard; `None` when the shard stayed busy.
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<Option<i64>> {
        soft(self.shard(key).incr(key, delta, default).map(Some), None)
    }
    /// [`Cache::decr`] on the key's shard; `None` when the shard stayed busy.
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<Option<i64>> {
        soft(self.shard(key).decr(key, delta, default).map(Some), None)
    }
    /// [`Cache::contains`] on the key's shard (not fail-soft, as in diskcache).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.shard(key).contains(key)
    }
    /// [`Cache::memoize`] with fail-soft reads and writes (diskcache's `memoize` on a
    /// `FanoutCache`): a busy shard reads as a miss and a busy write is skipped, so
    /// `compute` may run again, but the call never waits past the timeout.
    pub fn memoize(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        let v = compute()?;
        self.set(key, &v, expire, tag)?;
        Ok(v)
    }
    /// [`Cache::memoize_stampede`] on the key's shard (not fail-soft).
    pub fn memoize_stampede(
        &self,
        key: &[u8],
        expire: Duration,
        beta: f64,
        uniform: &mut dyn FnMut() -> f64,
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<(Vec<u8>, bool)> {
        self.shard(key)
            .memoize_stampede(key, expire, beta, uniform, compute)
    }

    /// `f` on every shard, waiting for busy shards; summed.
    fn sum(&self, f: impl Fn(&Cache) -> Result<u64>) -> Result<u64> {
        patiently(|| self.shards.iter().map(f).sum())
    }

    /// [`Cache::expire`] on every shard; total rows removed.
    pub fn expire(&self) -> Result<u64> {
        self.sum(Cache::expire)
    }
    /// [`Cache::evict`] on every shard; total rows removed.
    pub fn evict(&self, tag: &str) -> Result<u64> {
        self.sum(|c| c.evict(tag))
    }
    /// [`Cache::clear`] on every shard; total rows removed.
    pub fn clear(&self) -> Result<u64> {
        self.sum(Cache::clear)
    }
    /// [`Cache::cull`] on every shard; total rows removed.
    pub fn cull(&self) -> Result<u64> {
        self.sum(Cache::cull)
    }
    /// [`Cache::volume`] summed over shards.
    pub fn volume(&self) -> Result<u64> {
        self.sum(Cache::volume)
    }
    /// [`Cache::len`] summed over shards.
    pub fn len(&self) -> Result<u64> {
        self.sum(Cache::len)
    }
    /// True when no shard holds a row.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// [`Cache::stats`] on every shard; summed (hits, misses).
    pub fn stats(&self, enable: bool, reset: bool) -> Result<(u64, u64)> {
        patiently(|| {
            let mut total = (0, 0);
            for c in self.shards.iter() {
                let (h, m) = c.stats(enable, reset)?;
                total = (total.0 + h, total.1 + m);
            }
            Ok(total)
        })
    }
    /// [`Cache::evictions`] summed over shards.
    pub fn evictions(&self) -> Result<Evictions> {
        patiently(|| {
            self.shards
                .iter()
                .try_fold(Evictions::default(), |t, c| Ok(t + c.evictions()?))
        })
    }
    /// [`Cache::flush`] on every shard.
    pub fn flush(&self) -> Result<()> {
        patiently(|| self.shards.iter().try_for_each(Cache::flush))
    }
    /// [`Cache::check`] on every shard; problems prefixed with the shard index.
    pub fn check(&self, fix: bool) -> Result<Vec<String>> {
        patiently(|| {
            let mut out = Vec::new();
            for (i, c) in self.shards.iter().enumerate() {
                out.extend(
                    c.check(fix)?
                        .into_iter()
                        .map(|p| format!("shard {i:03}: {p}")),
                );
            }
            Ok(out)
        })
    }
    /// Keys of every shard (each shard in insertion order, shards in index order).
    pub fn iter_keys(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.shards.iter().flat_map(Cache::iter_keys)
    }

    /// Rows whose key starts with `prefix`, in key order across all shards (a merge of
    /// every shard's [`Cache::scan`]; no values).
    pub fn scan(&self, prefix: &[u8]) -> FanoutScan {
        FanoutScan {
            heads: self
                .shards
                .iter()
                .map(|c| {
                    let mut it = c.scan(prefix);
                    let head = it.next();
                    (it, head)
                })
                .collect(),
        }
    }

    /// The first (with `last`, the last) live item: each shard's [`Cache::peekitem`], the
    /// one stored earliest (latest) winning; ties go to the lower shard index. Counts no
    /// access. There is no insertion order across shards; store time stands in for it.
    pub fn peekitem(&self, last: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut best: Option<(f64, Vec<u8>, Vec<u8>)> = None;
        for c in self.shards.iter() {
            let Some((key, value)) = c.peekitem(last)? else {
                continue;
            };
            let stored: Option<f64> = c.inner.read(|conn| {
                use rusqlite::OptionalExtension;
                Ok(conn
                    .prepare_cached("SELECT store_time FROM cache WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?)
            })?;
            let Some(t) = stored else { continue };
            let better = match &best {
                None => true,
                Some((b, _, _)) if last => t > *b,
                Some((b, _, _)) => t < *b,
            };
            if better {
                best = Some((t, key, value));
            }
        }
        Ok(best.map(|(_, k, v)| (k, v)))
    }
}

/// Iterator over the rows of every shard in key order; see [`FanoutCache::scan`].
#[derive(Debug)]
pub struct FanoutScan {
    /// Each shard's scan with its next item.
    heads: Vec<(super::cache::ScanIter, Option<Result<ScanEntry>>)>,
}

impl Iterator for FanoutScan {
    type Item = Result<ScanEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        // An error first; else the smallest key.
        let pick = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, (_, h))| h.as_ref().map(|h| (i, h)))
            .min_by(|(_, a), (_, b)| match (a, b) {
                (Err(_), _) => std::cmp::Ordering::Less,
                (_, Err(_)) => std::cmp::Ordering::Greater,
                (Ok(a), Ok(b)) => a.key.cmp(&b.key),
            })
            .map(|(i, _)| i)?;
        let (it, head) = &mut self.heads[pick];
        let out = head.take();
        *head = match &out {
            Some(Err(_)) => None, // that shard's scan stops after its error
            _ => it.next(),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable() {
        // Pinned values: changing the hash would move every key of existing caches.
        assert_eq!(
            shard_of(b"", 8),
            (xxhash_rust::xxh3::xxh3_64(b"") % 8) as usize
        );
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b"hello"), 0x9555e8555c62dcfd);
        let a: Vec<usize> = (0..100u32).map(|i| shard_of(&i.to_le_bytes(), 7)).collect();
        let b: Vec<usize> = (0..100u32).map(|i| shard_of(&i.to_le_bytes(), 7)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&s| s < 7));
        assert_eq!(shard_of(b"x", 0), 0);
    }
}
