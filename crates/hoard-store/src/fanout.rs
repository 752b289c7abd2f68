//! [`FanoutCache`]: N [`Cache`] shards in sub-directories, chosen by a stable key hash.
//!
//! Invariant: a key always maps to the same shard, in every process and every build
//! (xxh3-64 of the key modulo the shard count, never Rust's random `RandomState`); the
//! size limit is divided evenly between shards.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cache::{Cache, Entry, Record};
use super::clock::Clock;
use super::error::Result;
use super::files::ValueWriter;
use super::settings::{EvictionPolicy, Settings};

/// The shard index of `key` among `shards` shards.
pub(crate) fn shard_of(key: &[u8], shards: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % shards.max(1) as u64) as usize
}

/// A cache sharded over N directories (`000`, `001`, ...) to spread write contention.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// let cache = hoard_store::FanoutCache::open(dir, 4)?;
/// cache.set(b"k", b"v", None, None)?;
/// assert_eq!(cache.get(b"k")?, Some(b"v".to_vec()));
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
}

impl FanoutBuilder {
    /// Total size limit in bytes, divided evenly between shards.
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

    /// Opens (creating) every shard.
    pub fn open(self) -> Result<FanoutCache> {
        let n = self.shards.max(1);
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let mut b = Cache::builder(self.dir.join(format!("{i:03}")));
            if let Some(v) = self.size_limit {
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
    /// Opens `shards` shards under `dir` with their stored settings (diskcache defaults when
    /// new; note each new shard then gets the full default limit, as in diskcache).
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

    /// [`Cache::set`] on the key's shard.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.shard(key).set(key, value, expire, tag)
    }
    /// [`Cache::set_with_meta`] on the key's shard.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.shard(key).set_with_meta(key, value, meta, expire, tag)
    }
    /// [`Cache::set_reader`] on the key's shard.
    pub fn set_reader(
        &self,
        key: &[u8],
        reader: impl Read,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<u64> {
        self.shard(key).set_reader(key, reader, expire, tag)
    }
    /// [`Cache::writer`] on the key's shard.
    pub fn writer(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<ValueWriter> {
        self.shard(key).writer(key, expire, tag)
    }
    /// [`Cache::get`] on the key's shard.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shard(key).get(key)
    }
    /// [`Cache::get_entry`] on the key's shard.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        self.shard(key).get_entry(key)
    }
    /// [`Cache::record`] on the key's shard.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>> {
        self.shard(key).record(key)
    }
    /// [`Cache::set_meta`] on the key's shard.
    pub fn set_meta(&self, key: &[u8], meta: &[u8], expire: Option<Duration>) -> Result<bool> {
        self.shard(key).set_meta(key, meta, expire)
    }
    /// [`Cache::add`] on the key's shard.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        self.shard(key).add(key, value, expire, tag)
    }
    /// [`Cache::delete`] on the key's shard.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.shard(key).delete(key)
    }
    /// [`Cache::pop`] on the key's shard.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shard(key).pop(key)
    }
    /// [`Cache::touch`] on the key's shard.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        self.shard(key).touch(key, expire)
    }
    /// [`Cache::incr`] on the key's shard.
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.shard(key).incr(key, delta, default)
    }
    /// [`Cache::decr`] on the key's shard.
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.shard(key).decr(key, delta, default)
    }
    /// [`Cache::contains`] on the key's shard.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.shard(key).contains(key)
    }
    /// [`Cache::memoize`] on the key's shard.
    pub fn memoize(
        &self,
        key: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        self.shard(key).memoize(key, expire, tag, compute)
    }
    /// [`Cache::memoize_stampede`] on the key's shard.
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

    fn sum(&self, f: impl Fn(&Cache) -> Result<u64>) -> Result<u64> {
        self.shards.iter().map(f).sum()
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
        let mut total = (0, 0);
        for c in self.shards.iter() {
            let (h, m) = c.stats(enable, reset)?;
            total = (total.0 + h, total.1 + m);
        }
        Ok(total)
    }
    /// [`Cache::flush`] on every shard.
    pub fn flush(&self) -> Result<()> {
        self.shards.iter().try_for_each(Cache::flush)
    }
    /// [`Cache::check`] on every shard; problems prefixed with the shard index.
    pub fn check(&self, fix: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (i, c) in self.shards.iter().enumerate() {
            out.extend(
                c.check(fix)?
                    .into_iter()
                    .map(|p| format!("shard {i:03}: {p}")),
            );
        }
        Ok(out)
    }
    /// Keys of every shard (each shard in insertion order, shards in index order).
    pub fn iter_keys(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.shards.iter().flat_map(Cache::iter_keys)
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
