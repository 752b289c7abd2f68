//! Eviction counts: rows the store removed on its own, by [`Removal`] reason, persisted in
//! the `counters` row next to hits and misses.
//!
//! Invariant: a count is added in the same write transaction that deletes the rows, so it
//! is exact across processes and crashes (a rolled-back cull counts nothing); explicit
//! removals (`delete`, `pop`, `evict(tag)`, `clear`) are never counted.

use crate::error::Result;
use rusqlite::Connection;

use super::*;

/// Why the store removed rows on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Live rows culled by the eviction policy to get back under the size limit.
    Culled,
    /// Expired rows removed by culling or [`Cache::expire`].
    Expired,
}

impl Removal {
    fn column(self) -> &'static str {
        match self {
            Removal::Culled => "culled",
            Removal::Expired => "expired",
        }
    }
}

/// Rows the store removed on its own since the directory was created (all processes).
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::builder(tmp.path()).size_limit(64 << 10).open()?;
/// for i in 0..100u32 {
///     cache.set(&i.to_be_bytes(), &[0; 2048], None, None)?;
/// }
/// let e = cache.evictions()?;
/// assert!(e.culled > 0);
/// assert_eq!(e.expired, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evictions {
    /// Live rows culled by the eviction policy because the cache was over its size limit.
    pub culled: u64,
    /// Expired rows removed (by culling on write, [`Cache::cull`] or [`Cache::expire`]).
    pub expired: u64,
}

impl Evictions {
    /// Both counts together.
    pub fn total(&self) -> u64 {
        self.culled + self.expired
    }
}

impl std::ops::Add for Evictions {
    type Output = Evictions;
    fn add(self, o: Evictions) -> Evictions {
        Evictions {
            culled: self.culled + o.culled,
            expired: self.expired + o.expired,
        }
    }
}

impl Cache {
    /// Rows removed by culling and by expiry so far, in every process (persisted; never
    /// reset, not even by [`Cache::stats`] with `reset` or [`Cache::clear`]).
    pub fn evictions(&self) -> Result<Evictions> {
        self.inner.read(|c| {
            let (culled, expired): (i64, i64) = c
                .prepare_cached("SELECT culled, expired FROM counters WHERE id = 0")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(Evictions {
                culled: culled.max(0) as u64,
                expired: expired.max(0) as u64,
            })
        })
    }
}

/// Adds `n` rows removed for `why`, inside the caller's write transaction.
pub(crate) fn count_removed(c: &Connection, why: Removal, n: u64) -> Result<()> {
    if n > 0 {
        let sql = format!(
            "UPDATE counters SET {col} = {col} + ?1 WHERE id = 0",
            col = why.column()
        );
        c.prepare_cached(&sql)?.execute([n as i64])?;
    }
    Ok(())
}
