//! Queue operations on a [`Cache`]: [`Cache::push`], [`Cache::pull`], [`Cache::peek`]
//! (diskcache's `push`/`pull`/`peek`).
//!
//! Keys are diskcache's: `<prefix>-<15 digits>` with a prefix, the 15 digits alone without
//! one (diskcache uses integer keys there; keys here are bytes). The first item gets
//! 500000000000000, items pushed to the back get the largest number in use plus one, to the
//! front the smallest minus one. Invariant: each operation is one write transaction, so
//! processes sharing the directory never get the same item from `pull` twice.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::cache::{Cache, Entry, Found, Pending, expire_at, lookup};
use crate::error::Result;

/// Which end of a queue [`Cache::push`], [`Cache::pull`] and [`Cache::peek`] work on
/// (diskcache's `side='back'` / `'front'`).
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use hoard_store::{Cache, Side};
/// let cache = Cache::open(dir.path())?;
/// cache.push(b"1", None, Side::Back, None, None)?;
/// cache.push(b"0", None, Side::Front, None, None)?;
/// assert_eq!(cache.pull(None, Side::Front)?.unwrap().1, b"0");
/// assert_eq!(cache.pull(None, Side::Back)?.unwrap().1, b"1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// The end with the smallest key (`pull`'s default in diskcache).
    #[default]
    Front,
    /// The end with the largest key (`push`'s default in diskcache).
    Back,
}

/// Number of the first item pushed to an empty queue (diskcache's).
const START: u64 = 500_000_000_000_000;
/// Largest number a key can have (15 digits).
const MAX: u64 = 999_999_999_999_999;

/// The key of item `n` of the queue `prefix`.
pub(crate) fn queue_key(prefix: Option<&str>, n: u64) -> Vec<u8> {
    match prefix {
        Some(p) => format!("{p}-{n:015}").into_bytes(),
        None => format!("{n:015}").into_bytes(),
    }
}

/// The number of a queue key, when it is one of `prefix`'s.
fn key_number(prefix: Option<&str>, key: &[u8]) -> Option<u64> {
    let digits = match prefix {
        Some(p) => key.strip_prefix(p.as_bytes())?.strip_prefix(b"-")?,
        None => key,
    };
    if digits.len() != 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The key at `side` of the queue `prefix` (expired or not), with its number.
pub(crate) fn end_key(c: &Connection, prefix: Option<&str>, side: Side) -> Result<Option<Vec<u8>>> {
    let (lo, hi) = (queue_key(prefix, 0), queue_key(prefix, MAX));
    let sql = match side {
        Side::Front => "SELECT key FROM cache WHERE key >= ?1 AND key <= ?2 ORDER BY key LIMIT 1",
        Side::Back => {
            "SELECT key FROM cache WHERE key >= ?1 AND key <= ?2 ORDER BY key DESC LIMIT 1"
        }
    };
    // Keys of other shapes between the bounds (`a-1x...`) are not items: skip them.
    let mut stmt = c.prepare_cached(sql)?;
    let key: Option<Vec<u8>> = stmt.query_row([&lo, &hi], |r| r.get(0)).optional()?;
    match key {
        Some(k) if key_number(prefix, &k).is_some() => Ok(Some(k)),
        Some(_) => {
            // Rare: fall back to a scan filtering the shape.
            let order = if side == Side::Front { "" } else { " DESC" };
            let mut stmt = c.prepare(&format!(
                "SELECT key FROM cache WHERE key >= ?1 AND key <= ?2 ORDER BY key{order}"
            ))?;
            let mut rows = stmt.query([&lo, &hi])?;
            while let Some(r) = rows.next()? {
                let k: Vec<u8> = r.get(0)?;
                if key_number(prefix, &k).is_some() {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        }
        None => Ok(None),
    }
}

impl Cache {
    /// Pushes `value` onto the queue named `prefix` at `side`; returns its key.
    /// diskcache's `push(value, prefix, side, expire, tag)`.
    ///
    /// ```
    /// use hoard_store::{Cache, Side};
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = Cache::open(dir.path())?;
    /// let key = cache.push(b"first", Some("jobs"), Side::Back, None, None)?;
    /// assert_eq!(key, b"jobs-500000000000000");
    /// cache.push(b"second", Some("jobs"), Side::Back, None, None)?;
    /// assert_eq!(cache.pull(Some("jobs"), Side::Front)?.unwrap().1, b"first");
    /// # Ok(())
    /// # }
    /// ```
    pub fn push(
        &self,
        value: &[u8],
        prefix: Option<&str>,
        side: Side,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<Vec<u8>> {
        crate::fault::check(&self.inner.dir)?;
        let mut payload = self.inner.payload_for(value)?;
        let now = self.inner.clock.now();
        let expire_time = expire_at(now, expire);
        self.inner.write(|c, p| {
            let n = match end_key(c, prefix, side)? {
                None => START,
                Some(k) => {
                    let n = key_number(prefix, &k).unwrap_or(START);
                    match side {
                        Side::Back if n < MAX => n + 1,
                        Side::Front if n > 0 => n - 1,
                        _ => return Err(crate::Error::InvalidSetting("queue is full".into())),
                    }
                }
            };
            let key = queue_key(prefix, n);
            self.inner
                .put_in(c, p, &key, &mut payload, &[], expire_time, tag, now)?;
            Ok(key)
        })
    }

    /// Removes and returns the item at `side` of the queue `prefix` as `(key, value)`;
    /// expired items met on the way are removed. diskcache's `pull(prefix, side=...)`
    /// (without `default`/`retry`: `None` means empty; `Error::Timeout` when busy).
    pub fn pull(&self, prefix: Option<&str>, side: Side) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.pull_entry(prefix, side)?.map(|(k, e)| (k, e.value)))
    }

    /// The item at `side` of the queue `prefix` as `(key, value)`, left in place; expired
    /// items met on the way are removed. diskcache's `peek(prefix, side=...)`.
    pub fn peek(&self, prefix: Option<&str>, side: Side) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.peek_entry(prefix, side)?.map(|(k, e)| (k, e.value)))
    }

    /// [`pull`](Cache::pull) returning the item's expire time and tag too (diskcache's
    /// `pull(expire_time=True, tag=True)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use hoard_store::{Cache, Side};
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = Cache::open(dir.path())?;
    /// cache.push(b"job", Some("q"), Side::Back, Some(Duration::from_secs(60)), Some("jobs"))?;
    /// let (key, entry) = cache.peek_entry(Some("q"), Side::Front)?.unwrap();
    /// assert_eq!((entry.value.as_slice(), entry.tag.as_deref()), (&b"job"[..], Some("jobs")));
    /// assert!(entry.expire_time.is_some());
    /// assert_eq!(cache.pull_entry(Some("q"), Side::Front)?.map(|(k, _)| k), Some(key));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pull_entry(&self, prefix: Option<&str>, side: Side) -> Result<Option<(Vec<u8>, Entry)>> {
        self.inner
            .write(|c, p| self.queue_take_in(c, p, prefix, side, true))
    }

    /// [`peek`](Cache::peek) returning the item's expire time and tag too (diskcache's
    /// `peek(expire_time=True, tag=True)`).
    pub fn peek_entry(&self, prefix: Option<&str>, side: Side) -> Result<Option<(Vec<u8>, Entry)>> {
        self.inner
            .write(|c, p| self.queue_take_in(c, p, prefix, side, false))
    }

    pub(crate) fn queue_take_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        prefix: Option<&str>,
        side: Side,
        remove: bool,
    ) -> Result<Option<(Vec<u8>, Entry)>> {
        let now = self.inner.clock.now();
        while let Some(key) = end_key(c, prefix, side)? {
            let entry = if remove {
                let entry = match lookup(c, &key, now)? {
                    Found::Live(mut row) => {
                        let value = self.inner.load_bytes(&mut row)?;
                        value.map(|value| Entry {
                            value,
                            expire_time: row.expire_time,
                            tag: row.tag,
                        })
                    }
                    _ => None,
                };
                self.inner.delete_in(c, p, &key, now)?;
                entry
            } else {
                match self.inner.get_in(c, p, &key, now)? {
                    Some(e) => Some(e),
                    None => {
                        // Expired or faulty: remove it and look again.
                        self.inner.delete_in(c, p, &key, now)?;
                        None
                    }
                }
            };
            if let Some(e) = entry {
                return Ok(Some((key, e)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_diskcache_keys() {
        assert_eq!(queue_key(Some("q"), START), b"q-500000000000000");
        assert_eq!(queue_key(None, 7), b"000000000000007");
        assert_eq!(key_number(Some("q"), b"q-500000000000001"), Some(START + 1));
        assert_eq!(key_number(Some("q"), b"q-5000"), None);
        assert_eq!(key_number(Some("q"), b"qq-500000000000001"), None);
        assert_eq!(key_number(None, b"500000000000001"), Some(START + 1));
    }
}
