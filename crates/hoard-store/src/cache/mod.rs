//! The [`Cache`] handle, split by concern:
//! - `open`: [`CacheBuilder`], opening and recovery.  `pool`: shared state, connection pool,
//!   the write transaction.  `row`: the row codec and the settings row.
//! - `read`: the read path.  `write`: writes and culling.  `api`: the public operations.
//! - `evictions`: rows removed by culling and expiry, counted.  `check`: consistency checks.  `transaction`: [`Cache::transact`].  `iter`: iteration.
//! - `volume`: the size limit's measure, exact and as a cheap upper bound.
//! - `prepared`: the write path's statements, kept prepared with each pooled connection.
//! - `pin`: the read transaction a pooled connection keeps from one write to the next.
//!
//! Invariant: every write runs in one write transaction, `BEGIN IMMEDIATE` ... `COMMIT` or
//! one statement that is its own transaction (`Inner::write_alone`); value files are
//! renamed into place inside it and unlinked only after a delete commits; the read path
//! takes no write transaction except to remove a faulty row.

use std::time::Duration;

/// `mode` of a row whose value is the `value` column.
pub(crate) const MODE_INLINE: i64 = 1;
/// `mode` of a row whose value is the file named by `filename`.
pub(crate) const MODE_FILE: i64 = 2;
/// Idle connections kept per cache handle.
pub(crate) const MAX_IDLE_CONNECTIONS: usize = 32;
/// Most rows one write may cull to get back under the size limit (bounds write latency).
pub const MAX_CULL_PER_WRITE: u64 = 10_000;
/// Rows per transaction for bulk deletes (`expire`, `evict`, `clear`, `cull`).
pub(crate) const BULK_BATCH: i64 = 1000;
/// Temporary files older than this are reported (and removed) by `check`.
pub(crate) const TEMP_GRACE: Duration = Duration::from_secs(3600);
/// Rows per page of iteration.
pub(crate) const PAGE: i64 = 1000;

/// Columns of a full row read; indices used by [`decode_row`].
macro_rules! row_cols {
    () => {
        "rowid, mode, filename, value, expire_time, size, length(key), \
         length(meta), meta, store_time, tag, key"
    };
}
pub(crate) const ROW_COLS: &str = row_cols!();

/// Columns of the settings row, in the order [`settings_from`] reads them.
macro_rules! settings_cols {
    () => {
        "size_limit, cull_limit, eviction_policy, min_file_size, statistics, \
         sqlite_mmap_size, sqlite_cache_size"
    };
}

mod api;
mod check;
mod evictions;
mod iter;
mod open;
mod pin;
mod pool;
mod prepared;
mod read;
mod row;
mod transaction;
mod volume;
mod write;
mod write_stamp;

pub use api::{Cache, Entry, Record, ScanEntry};
pub use evictions::Evictions;
pub(crate) use evictions::{Removal, count_removed};
pub use iter::{KeyIter, ScanIter};
pub use open::CacheBuilder;
pub(crate) use open::stale_temp_files;
pub(crate) use pin::{SWEEP_TICK, Sweep};
pub(crate) use pool::*;
pub(crate) use prepared::{Db, Hot};
pub use read::{FileRow, RecordNow};
pub(crate) use row::*;
pub use transaction::Transaction;
pub(crate) use volume::volume_in;
pub(crate) use write::*;
pub use write_stamp::WriteStamp;
