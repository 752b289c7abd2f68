//! [`Deque`]: a persistent, process-safe double-ended queue (diskcache's `Deque`).
//!
//! Items are rows of a [`Cache`] with the queue keys of [`Cache::push`] (no prefix), so a
//! `Deque` and a `Cache` opened on the same directory see the same items. Invariant: every
//! operation is one write transaction (or a read), so concurrent processes never lose or
//! duplicate an item; `maxlen` is a property of the handle, as in diskcache.

use std::cmp::Ordering;
use std::path::Path;

use crate::cache::Cache;
use crate::error::Result;
use crate::queue::Side;
use crate::settings::EvictionPolicy;

/// A persistent double-ended queue of byte values in a cache directory.
///
/// diskcache raises `IndexError` on `pop` of an empty deque; here it returns `Ok(None)`.
///
/// ```
/// use hoard_store::Deque;
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let d = Deque::open(dir.path())?.with_maxlen(Some(3));
/// d.extend([&b"a"[..], b"b", b"c", b"d"])?; // "a" falls off the front
/// d.appendleft(b"z")?; // "d" falls off the back
/// assert_eq!(d.to_vec()?, [b"z".to_vec(), b"b".to_vec(), b"c".to_vec()]);
/// d.rotate(1)?;
/// assert_eq!(d.popleft()?, Some(b"c".to_vec()));
/// assert_eq!(d.len()?, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Deque {
    cache: Cache,
    maxlen: Option<u64>,
}

impl Deque {
    /// Opens (creating if needed) a deque in `dir`: a [`Cache`] that never evicts
    /// (`eviction_policy` none, as diskcache's `Deque`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Deque> {
        let cache = Cache::builder(dir)
            .eviction_policy(EvictionPolicy::None)
            .open()?;
        Ok(Deque::from_cache(cache))
    }

    /// A deque over an open cache (its own settings apply).
    pub fn from_cache(cache: Cache) -> Deque {
        Deque {
            cache,
            maxlen: None,
        }
    }

    /// Keeps at most `maxlen` items: appending to one end drops items from the other.
    pub fn with_maxlen(mut self, maxlen: Option<u64>) -> Deque {
        self.maxlen = maxlen;
        self
    }

    /// The most items kept, if bounded.
    pub fn maxlen(&self) -> Option<u64> {
        self.maxlen
    }

    /// The cache underneath.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn add(&self, value: &[u8], side: Side) -> Result<()> {
        let Some(max) = self.maxlen else {
            self.cache.push(value, None, side, None, None)?;
            return Ok(());
        };
        let other = match side {
            Side::Back => Side::Front,
            Side::Front => Side::Back,
        };
        // `transact` is re-entrant: `push`, `len` and `pull` join it.
        self.cache.transact(|_| {
            if max == 0 {
                return Ok(());
            }
            self.cache.push(value, None, side, None, None)?;
            while self.cache.len()? > max {
                if self.cache.pull(None, other)?.is_none() {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Adds `value` at the back (`append`).
    pub fn append(&self, value: &[u8]) -> Result<()> {
        self.add(value, Side::Back)
    }

    /// Adds `value` at the front (`appendleft`).
    pub fn appendleft(&self, value: &[u8]) -> Result<()> {
        self.add(value, Side::Front)
    }

    /// Appends every value, in one transaction (`extend`).
    pub fn extend<V: AsRef<[u8]>>(&self, values: impl IntoIterator<Item = V>) -> Result<()> {
        self.cache.transact(|_| {
            for v in values {
                self.append(v.as_ref())?;
            }
            Ok(())
        })
    }

    /// Adds every value at the front, in one transaction, so they end up reversed
    /// (`extendleft`).
    pub fn extendleft<V: AsRef<[u8]>>(&self, values: impl IntoIterator<Item = V>) -> Result<()> {
        self.cache.transact(|_| {
            for v in values {
                self.appendleft(v.as_ref())?;
            }
            Ok(())
        })
    }

    /// Removes and returns the last item (`pop`); `None` when empty.
    pub fn pop(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.cache.pull(None, Side::Back)?.map(|(_, v)| v))
    }

    /// Removes and returns the first item (`popleft`); `None` when empty.
    pub fn popleft(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.cache.pull(None, Side::Front)?.map(|(_, v)| v))
    }

    /// The last item, left in place (`peek`).
    pub fn peek(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.cache.peek(None, Side::Back)?.map(|(_, v)| v))
    }

    /// The first item, left in place (`peekleft`).
    pub fn peekleft(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.cache.peek(None, Side::Front)?.map(|(_, v)| v))
    }

    /// Rotates `steps` to the right (the last item becomes the first); negative rotates
    /// left. One transaction (`rotate`).
    pub fn rotate(&self, steps: i64) -> Result<()> {
        self.cache.transact(|_| {
            let len = self.cache.len()? as i64;
            if len == 0 {
                return Ok(());
            }
            let (from, to) = if steps >= 0 {
                (Side::Back, Side::Front)
            } else {
                (Side::Front, Side::Back)
            };
            for _ in 0..(steps.unsigned_abs() % len as u64) {
                match self.cache.pull(None, from)? {
                    Some((_, v)) => {
                        self.cache.push(&v, None, to, None, None)?;
                    }
                    None => break,
                }
            }
            Ok(())
        })
    }

    /// Number of items (`len`).
    pub fn len(&self) -> Result<u64> {
        self.cache.len()
    }

    /// Whether the deque holds no item.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every item (`clear`).
    pub fn clear(&self) -> Result<()> {
        self.cache.clear().map(drop)
    }

    /// Items front to back, read lazily; items removed meanwhile are skipped (`iter`).
    pub fn iter(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        self.cache.scan(b"").filter_map(move |e| match e {
            Err(e) => Some(Err(e)),
            Ok(e) => self.cache.get(&e.key).transpose(),
        })
    }

    /// Every item, front to back.
    pub fn to_vec(&self) -> Result<Vec<Vec<u8>>> {
        self.iter().collect()
    }

    /// The item at `index` from the front (negative: from the back), like `deque[index]`.
    pub fn get(&self, index: i64) -> Result<Option<Vec<u8>>> {
        if index >= 0 {
            self.iter().nth(index as usize).transpose()
        } else {
            let all = self.to_vec()?;
            let i = all.len() as i64 + index;
            Ok(usize::try_from(i).ok().and_then(|i| all.get(i).cloned()))
        }
    }

    /// The key of the item at `index` (negative: from the back).
    fn key_at(&self, index: i64) -> Result<Option<Vec<u8>>> {
        let i = if index >= 0 {
            index
        } else {
            self.len()? as i64 + index
        };
        let Ok(i) = usize::try_from(i) else {
            return Ok(None);
        };
        Ok(self.cache.scan(b"").nth(i).transpose()?.map(|e| e.key))
    }

    /// Replaces the item at `index` (negative: from the back), like `deque[index] = value`;
    /// `false` when out of range (diskcache raises `IndexError`).
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let d = hoard_store::Deque::open(dir.path())?;
    /// d.extend([b"a", b"b", b"c", b"b"])?;
    /// assert!(d.set(-1, b"z")?);
    /// assert!(d.delete(0)?);
    /// assert_eq!(d.count(b"b")?, 1);
    /// assert!(d.remove(b"b")?);
    /// d.reverse()?;
    /// assert!(d.equals([b"z", b"c"])?);
    /// assert_eq!(d.compare([b"z", b"d"])?, std::cmp::Ordering::Less);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set(&self, index: i64, value: &[u8]) -> Result<bool> {
        self.cache.transact(|tx| match self.key_at(index)? {
            Some(key) => tx.set(&key, value, None, None).map(|()| true),
            None => Ok(false),
        })
    }

    /// Removes the item at `index` (negative: from the back), like `del deque[index]`;
    /// `false` when out of range.
    pub fn delete(&self, index: i64) -> Result<bool> {
        self.cache.transact(|tx| match self.key_at(index)? {
            Some(key) => tx.delete(&key),
            None => Ok(false),
        })
    }

    /// Removes the first item equal to `value` (`remove`); `false` when there is none
    /// (diskcache raises `ValueError`). One transaction.
    pub fn remove(&self, value: &[u8]) -> Result<bool> {
        self.cache.transact(|tx| {
            for e in self.cache.scan(b"") {
                let key = e?.key;
                if tx.get(&key)?.as_deref() == Some(value) {
                    return tx.delete(&key);
                }
            }
            Ok(false)
        })
    }

    /// How many items equal `value` (`count`).
    pub fn count(&self, value: &[u8]) -> Result<u64> {
        let mut n = 0;
        for v in self.iter() {
            n += u64::from(v? == value);
        }
        Ok(n)
    }

    /// Reverses the items in place, in one transaction (`reverse`).
    pub fn reverse(&self) -> Result<()> {
        self.cache.transact(|tx| {
            let keys: Vec<Vec<u8>> = self
                .cache
                .scan(b"")
                .map(|e| e.map(|e| e.key))
                .collect::<Result<_>>()?;
            let mut values = Vec::with_capacity(keys.len());
            for k in &keys {
                values.push(tx.get(k)?);
            }
            for (k, v) in keys.iter().zip(values.into_iter().rev()) {
                match v {
                    Some(v) => tx.set(k, &v, None, None)?,
                    None => {
                        tx.delete(k)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Compares the items with `other` front to back, like comparing sequences (diskcache's
    /// `==`, `<`, ...). A method because reading can fail, so not `PartialOrd`.
    pub fn compare<V: AsRef<[u8]>>(&self, other: impl IntoIterator<Item = V>) -> Result<Ordering> {
        let mut theirs = other.into_iter();
        for mine in self.iter() {
            let mine = mine?;
            match theirs.next() {
                None => return Ok(Ordering::Greater),
                Some(t) => match mine.as_slice().cmp(t.as_ref()) {
                    Ordering::Equal => {}
                    o => return Ok(o),
                },
            }
        }
        Ok(if theirs.next().is_some() {
            Ordering::Less
        } else {
            Ordering::Equal
        })
    }

    /// Whether the items equal `other`'s, in order (`deque == other`).
    pub fn equals<V: AsRef<[u8]>>(&self, other: impl IntoIterator<Item = V>) -> Result<bool> {
        Ok(self.compare(other)? == Ordering::Equal)
    }
}
