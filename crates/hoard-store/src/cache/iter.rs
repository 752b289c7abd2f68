//! Iteration: keys in insertion order, prefix scans, `peekitem`.

use crate::error::Result;
use rusqlite::params;
use std::collections::VecDeque;

use super::*;

impl Cache {
    /// Keys in insertion order (including expired rows not yet removed), read in pages
    /// (diskcache's `iter(cache)`).
    pub fn iter_keys(&self) -> KeyIter {
        KeyIter {
            cache: self.clone(),
            last: i64::MIN,
            reverse: false,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// Keys in reverse insertion order, newest first (diskcache's `reversed(cache)`).
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = hoard_store::Cache::open(dir.path())?;
    /// for k in [b"a", b"b", b"c"] {
    ///     cache.set(k, b"", None, None)?;
    /// }
    /// let keys: Vec<Vec<u8>> = cache.iter_keys_rev().collect::<Result<_, _>>()?;
    /// assert_eq!(keys, [b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn iter_keys_rev(&self) -> KeyIter {
        KeyIter {
            cache: self.clone(),
            last: i64::MAX,
            reverse: true,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// The first (or with `last`, the last) live item in insertion order, without
    /// counting an access.
    pub fn peekitem(&self, last: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let sql = format!(
            "SELECT {ROW_COLS} FROM cache WHERE expire_time IS NULL OR expire_time > ?1 \
             ORDER BY rowid {} LIMIT 1",
            if last { "DESC" } else { "ASC" }
        );
        // Faulty rows are removed and skipped; bounded so a broken disk cannot loop forever.
        for _ in 0..64 {
            let now = self.inner.clock.now();
            let found = self.inner.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let mut rows = stmt.query([now])?;
                match rows.next()? {
                    None => Ok(None),
                    Some(r) => Ok(Some((r.get::<_, Vec<u8>>(11)?, found_from(r, now)?))),
                }
            })?;
            match found {
                None => return Ok(None),
                Some((key, Found::Live(mut row))) => match self.inner.load_bytes(&mut row)? {
                    Some(v) => return Ok(Some((key, v))),
                    None => self
                        .inner
                        .remove_bad(&key, row.rowid, row.filename.as_deref())?,
                },
                Some((key, Found::Undecodable(rowid))) => {
                    self.inner.remove_bad(&key, rowid, None)?
                }
                Some(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Rows whose key starts with `prefix`, in key order, read in pages (no values).
    pub fn scan(&self, prefix: &[u8]) -> ScanIter {
        ScanIter {
            cache: self.clone(),
            prefix: prefix.to_vec(),
            last: None,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

/// Iterator over keys in insertion order; see [`Cache::iter_keys`] and
/// [`Cache::iter_keys_rev`].
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// cache.set(b"first", b"1", None, None)?;
/// cache.set(b"second", b"2", None, None)?;
/// let mut keys: hoard_store::KeyIter = cache.iter_keys();
/// assert_eq!(keys.next().transpose()?, Some(b"first".to_vec()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct KeyIter {
    cache: Cache,
    last: i64,
    reverse: bool,
    buf: VecDeque<Vec<u8>>,
    done: bool,
}

impl Iterator for KeyIter {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let last = self.last;
            let sql = if self.reverse {
                "SELECT rowid, key FROM cache WHERE rowid < ?1 ORDER BY rowid DESC LIMIT ?2"
            } else {
                "SELECT rowid, key FROM cache WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            };
            let page = self.cache.inner.read(|c| {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt
                    .query_map(params![last, PAGE], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            });
            match page {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    if let Some((rowid, _)) = rows.last() {
                        self.last = *rowid;
                    }
                    self.buf.extend(rows.into_iter().map(|(_, k)| k));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// Iterator over rows by key prefix; see [`Cache::scan`].
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// cache.set(b"b:1", b"", None, None)?;
/// cache.set(b"a:2", b"", None, None)?;
/// cache.set(b"a:1", b"", None, None)?;
/// let scan: hoard_store::ScanIter = cache.scan(b"a:");
/// let keys: Vec<Vec<u8>> = scan.map(|e| e.map(|e| e.key)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, [b"a:1".to_vec(), b"a:2".to_vec()]); // key order
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ScanIter {
    cache: Cache,
    prefix: Vec<u8>,
    last: Option<Vec<u8>>,
    buf: VecDeque<ScanEntry>,
    done: bool,
}

impl Iterator for ScanIter {
    type Item = Result<ScanEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            let (from, op) = match &self.last {
                Some(k) => (k.clone(), ">"),
                None => (self.prefix.clone(), ">="),
            };
            let sql = format!(
                "SELECT key, size, store_time, expire_time, tag FROM cache \
                 WHERE key {op} ?1 ORDER BY key LIMIT ?2"
            );
            let page = self.cache.inner.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params![from, PAGE], |r| {
                        Ok(ScanEntry {
                            key: r.get(0)?,
                            size: r.get::<_, i64>(1)?.max(0) as u64,
                            store_time: r.get(2)?,
                            expire_time: r.get(3)?,
                            tag: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            });
            match page {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    if let Some(e) = rows.last() {
                        self.last = Some(e.key.clone());
                    }
                    for e in rows {
                        if !e.key.starts_with(&self.prefix) {
                            self.done = true;
                            break;
                        }
                        self.buf.push_back(e);
                    }
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}
