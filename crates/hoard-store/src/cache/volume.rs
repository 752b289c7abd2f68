//! Volume, the measure the size limit applies to: the rows' accounted bytes (`counters.size`)
//! plus the database's pages.
//!
//! Invariant: [`database_bytes_bound`] is never below [`database_bytes`] on the same
//! connection at the same moment, so a write whose bound is under the limit needs no cull
//! and skips the exact count. The exact count is a `PRAGMA page_count`, which SQLite
//! prepares anew on every run (a PRAGMA runs only once per preparation): it was 11% of a
//! profiled `set`. The bound is read from the WAL index's header in shared memory through
//! the store's VFS (`wal_vfs::size_bound_without_cache`: no system call), else it is two
//! `fstat`s of SQLite's own file handles (4% of a `set`'s time in its thread).

use crate::error::Result;
use rusqlite::Connection;
use rusqlite::ffi;
use std::ffi::c_void;

/// Bytes of the database's pages (`PRAGMA page_count` x `page_size`), this transaction's
/// uncommitted pages included.
pub(crate) fn database_bytes(c: &Connection) -> Result<u64> {
    let pragma = |sql: &str| -> Result<u64> {
        let v: i64 = c.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
        Ok(v.max(0) as u64)
    };
    Ok(pragma("PRAGMA page_count")? * pragma("PRAGMA page_size")?)
}

/// An upper bound of [`database_bytes`], without preparing a statement; `None` when SQLite's
/// files are not open (then only the exact count will do).
///
/// Every page of the database is in the database file, in the WAL (a page beyond the file's
/// end is a frame there until a checkpoint copies it), or, uncommitted, in this
/// connection's page cache (a page that does not fit is spilled to the WAL). So the two
/// files' sizes plus the heap the page cache holds bound the page count times page size.
pub(crate) fn database_bytes_bound(c: &Connection) -> Option<u64> {
    // SAFETY: the handle is valid for the connection's lifetime and used on this thread
    // only (connections are not shared between threads while in use).
    let db = unsafe { c.handle() };
    let files =
        match crate::wal_vfs::size_bound_without_cache(file(db, ffi::SQLITE_FCNTL_FILE_POINTER)) {
            Some(bytes) => bytes,
            None => {
                file_size(file(db, ffi::SQLITE_FCNTL_FILE_POINTER))?
                    + file_size(file(db, ffi::SQLITE_FCNTL_JOURNAL_POINTER))?
            }
        };
    let mut cache_used = 0;
    let mut high = 0;
    // SAFETY: a valid connection handle and two out-pointers to live integers.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            db,
            ffi::SQLITE_DBSTATUS_CACHE_USED,
            &mut cache_used,
            &mut high,
            0,
        )
    };
    (rc == ffi::SQLITE_OK).then(|| files + cache_used.max(0) as u64)
}

/// The main database's file (`SQLITE_FCNTL_FILE_POINTER`) or its WAL
/// (`SQLITE_FCNTL_JOURNAL_POINTER`): the handle SQLite itself holds (null if none).
pub(crate) fn file(db: *mut ffi::sqlite3, op: i32) -> *mut ffi::sqlite3_file {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `db` is a valid handle; for these opcodes SQLite writes one `sqlite3_file*`
    // into the pointer given, without opening or closing anything.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            op,
            &mut file as *mut *mut ffi::sqlite3_file as *mut c_void,
        )
    };
    if rc != ffi::SQLITE_OK {
        return std::ptr::null_mut();
    }
    file
}

/// The size of an open file of SQLite's, asked of its own handle.
fn file_size(file: *mut ffi::sqlite3_file) -> Option<u64> {
    if file.is_null() {
        return None;
    }
    // SAFETY: a non-null file from SQLite; `pMethods` is null while the file is not open.
    let methods = unsafe { (*file).pMethods };
    if methods.is_null() {
        return None;
    }
    // SAFETY: an open file's methods; xFileSize only writes the size.
    let size_of = unsafe { (*methods).xFileSize }?;
    let mut size: ffi::sqlite3_int64 = 0;
    let rc = unsafe { size_of(file, &mut size) };
    (rc == ffi::SQLITE_OK).then_some(size.max(0) as u64)
}

/// Volume in bytes (`volume()`): accounted row sizes (keys, values, meta) plus the
/// database's own pages.
pub(crate) fn volume_in(c: &Connection) -> Result<u64> {
    Ok(accounted_size(c)? + database_bytes(c)?)
}

/// The rows' accounted bytes (`counters.size`).
pub(crate) fn accounted_size(c: &Connection) -> Result<u64> {
    let size: i64 = c
        .prepare_cached("SELECT size FROM counters WHERE id = 0")?
        .query_row([], |r| r.get(0))?;
    Ok(size.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, insert_test_rows as insert};

    /// The bound holds in every state a write can see: committed pages in the WAL only,
    /// checkpointed, uncommitted pages in the cache, a transaction large enough to spill,
    /// after deletes (free pages) and after pages are given back.
    #[test]
    fn bound_is_never_below_the_exact_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = schema::open_connection(dir.path(), 0, 100).unwrap();
        schema::migrate(&mut c).unwrap();
        let check = |c: &Connection, when: &str| {
            let exact = database_bytes(c).unwrap();
            let bound = database_bytes_bound(c).expect("files open");
            assert!(bound >= exact, "{when}: bound {bound} < exact {exact}");
            // The bound came from the WAL index, not from the files' sizes.
            let main = file(unsafe { c.handle() }, ffi::SQLITE_FCNTL_FILE_POINTER);
            let shm = crate::wal_vfs::size_bound_without_cache(main);
            assert!(shm.is_some(), "{when}: read from the WAL index");
        };
        type Step = fn(&Connection);
        let steps: [(&str, Step); 6] = [
            ("fresh", |_| {}),
            ("committed, in the WAL", |c| insert(c, 0, 200, 1000)),
            ("checkpointed and truncated", |c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }),
            ("large values (overflow pages)", |c| {
                insert(c, 1000, 20, 20_000)
            }),
            ("deleted (free pages)", |c| {
                c.execute("DELETE FROM cache WHERE key < x'00000064'", [])
                    .unwrap();
            }),
            ("pages given back", |c| {
                schema::reclaim_free_pages(c, 1 << 20).unwrap();
            }),
        ];
        for (when, step) in steps {
            step(&c);
            check(&c, when);
            // The same inside an open write transaction, after more rows than the page
            // cache (100 pages) holds: uncommitted pages, some spilled to the WAL.
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            insert(&c, 5000, 600, 900);
            check(&c, &format!("{when}, uncommitted"));
            c.execute_batch("ROLLBACK").unwrap();
        }
    }
}
