//! [`Cache::transact`] and [`Transaction`].

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use super::*;

impl Cache {
    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction; commits if it returns `Ok`,
    /// rolls back (removing any value files it wrote) otherwise.
    ///
    /// Re-entrant, like diskcache's `transact`: calls on this cache (any clone of the handle)
    /// made on this thread while `f` runs, including a nested `transact`, join the
    /// transaction instead of waiting for the write lock it holds. A nested `transact`
    /// that fails does not roll anything back by itself; its error reaches the outer one.
    /// Iterators ([`Cache::iter_keys`], [`Cache::scan`]) read committed rows only.
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = hoard_store::Cache::open(dir.path())?;
    /// cache.transact(|tx| {
    ///     tx.set(b"a", b"1", None, None)?;
    ///     cache.set(b"b", b"2", None, None)?; // joins the transaction
    ///     assert_eq!(cache.get(b"a")?, Some(b"1".to_vec())); // sees its writes
    ///     Ok(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn transact<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.inner.write_cell(|c, p| {
            let _open = OpenTx::new(&self.inner, c, p);
            let tx = Transaction {
                cache: self,
                conn: c,
                pending: p,
            };
            f(&tx)
        })
    }
}

/// Operations inside [`Cache::transact`]; all see and commit one snapshot.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// cache.set(b"stock", b"3", None, None)?;
/// let sold = cache.transact(|tx: &hoard_store::Transaction<'_>| {
///     let left = tx.incr(b"stock", -1, None)?;
///     tx.set(b"last-sale", b"now", None, None)?;
///     Ok(left)
/// })?;
/// assert_eq!(sold, 2);
/// # Ok(())
/// # }
/// ```
pub struct Transaction<'a> {
    cache: &'a Cache,
    conn: &'a Connection,
    pending: &'a RefCell<Pending>,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("cache", self.cache)
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    fn now(&self) -> f64 {
        self.cache.inner.clock.now()
    }

    /// [`Cache::set`] inside the transaction.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        self.set_with_meta(key, value, &[], expire, tag)
    }

    /// [`Cache::set_with_meta`] inside the transaction.
    pub fn set_with_meta(
        &self,
        key: &[u8],
        value: &[u8],
        meta: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<()> {
        let inner = &self.cache.inner;
        let mut payload = inner.payload_for(value)?;
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        inner.put_in(
            self.conn,
            &mut p,
            key,
            &mut payload,
            meta,
            expire_at(now, expire),
            tag,
            now,
        )
    }

    /// [`Cache::get`] inside the transaction.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// [`Cache::get_entry`] inside the transaction.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        let mut p = self.pending.borrow_mut();
        self.cache.inner.get_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::add`] inside the transaction.
    pub fn add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let inner = &self.cache.inner;
        let mut payload = inner.payload_for(value)?;
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        inner.add_in(
            self.conn,
            &mut p,
            key,
            &mut payload,
            expire_at(now, expire),
            tag,
            now,
        )
    }

    /// [`Cache::delete`] inside the transaction.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .delete_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::pop`] inside the transaction.
    pub fn pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut p = self.pending.borrow_mut();
        self.cache.inner.pop_in(self.conn, &mut p, key, self.now())
    }

    /// [`Cache::incr`] inside the transaction.
    pub fn incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .incr_in(self.conn, &mut p, key, delta, default, self.now())
    }

    /// [`Cache::decr`] inside the transaction.
    pub fn decr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<i64> {
        self.incr(
            key,
            delta.checked_neg().ok_or(Error::NotAnInteger)?,
            default,
        )
    }

    /// [`Cache::touch`] inside the transaction.
    pub fn touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
        let now = self.now();
        let mut p = self.pending.borrow_mut();
        self.cache
            .inner
            .touch_in(self.conn, &mut p, key, expire_at(now, expire), now)
    }

    /// [`Cache::contains`] inside the transaction.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.cache.inner.contains_in(self.conn, key, self.now())
    }
}
