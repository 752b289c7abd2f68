//! [`Index`]: a persistent, process-safe ordered map (diskcache's `Index`).
//!
//! Items are rows of a [`Cache`] that never evicts; order is insertion order (replacing a
//! value keeps its place, as in diskcache). Invariant: every operation is a single read or
//! one write transaction of the cache underneath.

use std::path::Path;

use crate::cache::{Cache, KeyIter, Transaction};
use crate::error::Result;
use crate::queue::Side;
use crate::settings::EvictionPolicy;

/// A persistent map of byte keys to byte values, iterated in insertion order.
///
/// diskcache raises `KeyError` on `index[missing]`; here [`Index::get`] returns `None`
/// and [`Index::delete`] returns `false`.
///
/// ```
/// use hoard_store::Index;
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let index = Index::open(dir.path())?;
/// index.set(b"b", b"2")?;
/// index.set(b"a", b"1")?;
/// index.set(b"b", b"22")?; // keeps its place
/// let keys: Vec<Vec<u8>> = index.keys().collect::<Result<_, _>>()?;
/// assert_eq!(keys, [b"b".to_vec(), b"a".to_vec()]);
/// assert_eq!(index.peekitem(true)?, Some((b"a".to_vec(), b"1".to_vec())));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Index {
    cache: Cache,
}

impl Index {
    /// Opens (creating if needed) an index in `dir`: a [`Cache`] with `eviction_policy`
    /// none, as diskcache's `Index`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        let cache = Cache::builder(dir)
            .eviction_policy(EvictionPolicy::None)
            .open()?;
        Ok(Index { cache })
    }

    /// An index over an open cache (its own settings apply).
    pub fn from_cache(cache: Cache) -> Index {
        Index { cache }
    }

    /// The cache underneath.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The value of `key` (`index[key]` / `get`).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.cache.get(key)
    }

    /// Sets `key` to `value` (`index[key] = value`); an existing key keeps its place.
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.cache.set(key, value, None, None)
    }

    /// Sets `key` to `value` unless it is present; returns the value now stored
    /// (`setdefault`).
    pub fn setdefault(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        self.cache.transact(|tx| match tx.get(key)? {
            Some(v) => Ok(v),
            None => {
                tx.set(key, value, None, None)?;
                Ok(value.to_vec())
            }
        })
    }

    /// Removes `key`; whether it was present (`del index[key]`).
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.cache.delete(key)
    }

    /// Removes `key` and returns its value (`pop`).
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.cache.pop(key)
    }

    /// Whether `key` is present (`key in index`).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.cache.contains(key)
    }

    /// Number of items.
    pub fn len(&self) -> Result<u64> {
        self.cache.len()
    }

    /// Whether the index holds no item.
    pub fn is_empty(&self) -> Result<bool> {
        self.cache.is_empty()
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.cache.clear().map(drop)
    }

    /// Keys in insertion order, read lazily.
    pub fn keys(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.cache.iter_keys()
    }

    /// Keys newest first (`reversed(index)`).
    pub fn keys_rev(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.cache.iter_keys_rev()
    }

    fn items_of(&self, keys: KeyIter) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        keys.filter_map(move |k| match k {
            Err(e) => Some(Err(e)),
            Ok(k) => match self.cache.get(&k) {
                Err(e) => Some(Err(e)),
                Ok(v) => v.map(|v| Ok((k, v))),
            },
        })
    }

    /// `(key, value)` pairs in insertion order; keys removed meanwhile are skipped.
    pub fn items(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        self.items_of(self.cache.iter_keys())
    }

    /// `(key, value)` pairs newest first (`reversed(index.items())`).
    pub fn items_rev(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        self.items_of(self.cache.iter_keys_rev())
    }

    /// Values in insertion order.
    pub fn values(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.items().map(|r| r.map(|(_, v)| v))
    }

    /// Values newest first (`reversed(index.values())`).
    pub fn values_rev(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.items_rev().map(|r| r.map(|(_, v)| v))
    }

    /// Runs `f` in one write transaction of the index (`with index.transact():`);
    /// re-entrant, like [`Cache::transact`].
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let index = hoard_store::Index::open(dir.path())?;
    /// index.transact(|tx| {
    ///     tx.set(b"total", b"2", None, None)?;
    ///     index.set(b"a", b"1")?; // joins the transaction
    ///     Ok(())
    /// })?;
    /// assert_eq!(index.len()?, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn transact<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.cache.transact(f)
    }

    /// Whether both indexes hold the same items in the same order (diskcache's `==`
    /// between two `Index`es, as between `OrderedDict`s). Read in one transaction of
    /// `self`; a method because it can fail, so not `PartialEq`.
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let a = hoard_store::Index::open(dir.path().join("a"))?;
    /// let b = hoard_store::Index::open(dir.path().join("b"))?;
    /// a.set(b"k", b"v")?;
    /// assert!(!a.equals(&b)?);
    /// b.set(b"k", b"v")?;
    /// assert!(a.equals(&b)?);
    /// assert!(a.equals_map([(b"k", b"v")])?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn equals(&self, other: &Index) -> Result<bool> {
        if self.len()? != other.len()? {
            return Ok(false);
        }
        let mine = self.items();
        let theirs = other.items();
        for pair in mine.zip(theirs) {
            if pair.0? != pair.1? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the index holds exactly these items, in any order (diskcache's `==` with a
    /// plain mapping).
    pub fn equals_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        other: impl IntoIterator<Item = (K, V)>,
    ) -> Result<bool> {
        let mut n = 0;
        for (k, v) in other {
            n += 1;
            if self.get(k.as_ref())?.as_deref() != Some(v.as_ref()) {
                return Ok(false);
            }
        }
        Ok(self.len()? == n)
    }

    /// The first (with `last`, the last) item in insertion order (`peekitem`).
    pub fn peekitem(&self, last: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.cache.peekitem(last)
    }

    /// Removes and returns the first (with `last`, the last) item (`popitem`).
    pub fn popitem(&self, last: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.cache.transact(|tx| {
            let Some((k, v)) = self.cache.peekitem(last)? else {
                return Ok(None);
            };
            tx.delete(&k)?;
            Ok(Some((k, v)))
        })
    }

    /// [`Cache::push`] on the index (no expiry or tag).
    pub fn push(&self, value: &[u8], prefix: Option<&str>, side: Side) -> Result<Vec<u8>> {
        self.cache.push(value, prefix, side, None, None)
    }

    /// [`Cache::pull`] on the index.
    pub fn pull(&self, prefix: Option<&str>, side: Side) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.cache.pull(prefix, side)
    }

    /// The stored value of `key`, or computes, stores and returns it ([`Cache::memoize`]
    /// without expiry: an index keeps what it memoizes).
    pub fn memoize(
        &self,
        key: &[u8],
        compute: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        self.cache.memoize(key, None, None, compute)
    }
}
