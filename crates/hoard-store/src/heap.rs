//! What SQLite holds on the heap, for the whole process: every connection's page cache,
//! prepared statements and schema (`sqlite3_memory_used`). Page caches are per connection
//! (`PRAGMA cache_size`, the [`Settings::sqlite_cache_size`](crate::Settings) each connection
//! is opened with), so this is the figure that grows with the number of pooled connections.

/// Bytes SQLite has allocated and not freed in this process, all connections together.
pub fn sqlite_heap_bytes() -> u64 {
    // SAFETY: `sqlite3_memory_used` reads a counter under SQLite's own mutex; it takes no
    // arguments and is safe to call at any time, from any thread.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    used.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cache;

    /// Reading rows through a connection fills its page cache: the process's SQLite heap
    /// grows while the connection is open and pooled (other tests in this process may open
    /// and close connections at the same time, so only the open connection's own pages,
    /// far above any other test's, are asserted).
    #[test]
    fn a_connection_reading_rows_grows_the_sqlite_heap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder(dir.path())
            .sqlite_mmap_size(0) // every page read goes through the page cache
            .sqlite_cache_size(-65536)
            .open()
            .unwrap();
        let value = [7u8; 3000];
        for i in 0..4000u32 {
            cache.set(&i.to_be_bytes(), &value, None, None).unwrap();
        }
        drop(cache);
        let cache = Cache::builder(dir.path()).open().unwrap();
        let before = sqlite_heap_bytes();
        for i in 0..4000u32 {
            assert!(cache.get(&i.to_be_bytes()).unwrap().is_some());
        }
        let after = sqlite_heap_bytes();
        // 4000 rows of 3000 bytes: about 12 MB of pages, cached by the pooled connection.
        assert!(
            after > before + (8 << 20),
            "SQLite heap {before} -> {after} bytes"
        );
    }
}
