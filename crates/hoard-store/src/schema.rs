//! Schema migrations and connection PRAGMAs: the only place that issues DDL or PRAGMAs.
//!
//! Invariant: migrations are append-only; `PRAGMA user_version` is the number applied.
//! A database with a higher version than [`migrations`] knows is refused with
//! [`Error::NewerSchema`], never modified.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::{Error, Result};
use super::settings::{EvictionPolicy, Settings};

/// Name of the database file inside the cache directory.
pub(crate) const DB_FILE: &str = "cache.db";

/// How long SQLite's own busy handler waits for a lock before returning `SQLITE_BUSY`
/// to our retry loop.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// No automatic checkpoint on commit: a background thread checkpoints
/// (see `checkpoint.rs`), so writers never pay for it.
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: u32 = 0;

/// Size the WAL file is truncated back to after a checkpoint.
pub(crate) const JOURNAL_SIZE_LIMIT: u64 = 64 << 20;

/// The schema, one step per entry. Append only: never edit or reorder a step.
pub(crate) fn migrations() -> &'static [&'static str] {
    &[
        // 1: entries (diskcache's Cache table plus `meta`), settings, counters, triggers.
        r#"
        CREATE TABLE cache (
            rowid INTEGER PRIMARY KEY,
            key BLOB NOT NULL UNIQUE,
            raw INTEGER NOT NULL DEFAULT 1,
            store_time REAL NOT NULL,
            expire_time REAL,
            access_time REAL NOT NULL,
            access_count INTEGER NOT NULL DEFAULT 0,
            tag TEXT,
            size INTEGER NOT NULL DEFAULT 0,
            mode INTEGER NOT NULL DEFAULT 0,
            filename TEXT,
            value BLOB,
            meta BLOB NOT NULL DEFAULT x''
        );
        -- Partial: rows without tag or expiry (the common case) cost these indexes nothing.
        CREATE INDEX cache_tag ON cache(tag) WHERE tag IS NOT NULL;
        CREATE INDEX cache_expire_time ON cache(expire_time) WHERE expire_time IS NOT NULL;
        -- The eviction-order index (store_time, access_time or access_count) exists only
        -- for the policy in force: see `ensure_policy_index`.

        CREATE TABLE settings (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            size_limit INTEGER NOT NULL,
            cull_limit INTEGER NOT NULL,
            eviction_policy TEXT NOT NULL,
            min_file_size INTEGER NOT NULL,
            statistics INTEGER NOT NULL,
            sqlite_mmap_size INTEGER NOT NULL,
            sqlite_cache_size INTEGER NOT NULL
        );
        INSERT INTO settings VALUES (0, 1073741824, 10, 'least-recently-stored', 32768, 0, 67108864, 8192);

        CREATE TABLE counters (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            count INTEGER NOT NULL,
            size INTEGER NOT NULL,
            hits INTEGER NOT NULL,
            misses INTEGER NOT NULL
        );
        INSERT INTO counters VALUES (0, 0, 0, 0, 0);

        CREATE TRIGGER cache_count_insert AFTER INSERT ON cache BEGIN
            UPDATE counters SET count = count + 1, size = size + NEW.size WHERE id = 0;
        END;
        CREATE TRIGGER cache_count_delete AFTER DELETE ON cache BEGIN
            UPDATE counters SET count = count - 1, size = size - OLD.size WHERE id = 0;
        END;
        CREATE TRIGGER cache_size_update AFTER UPDATE OF size ON cache BEGIN
            UPDATE counters SET size = size + NEW.size - OLD.size WHERE id = 0;
        END;
        "#,
        // 2: rows removed by culling (over the size limit) and because they expired.
        r#"
        ALTER TABLE counters ADD COLUMN culled INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE counters ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
        "#,
        // 3: the size trigger runs only when the size changes, so a write that assigns
        // `size` unchanged (`incr` of a number of the same length) writes no counters page.
        r#"
        DROP TRIGGER cache_size_update;
        CREATE TRIGGER cache_size_update AFTER UPDATE OF size ON cache
            WHEN NEW.size IS NOT OLD.size BEGIN
            UPDATE counters SET size = size + NEW.size - OLD.size WHERE id = 0;
        END;
        "#,
        // 4: a version of the settings row, bumped by every change to it (whatever makes
        // it), read beside the accounted size: a write re-reads the settings only when it
        // moved (`Inner::settings_at`).
        r#"
        ALTER TABLE counters ADD COLUMN settings_version INTEGER NOT NULL DEFAULT 0;
        CREATE TRIGGER settings_version AFTER UPDATE ON settings BEGIN
            UPDATE counters SET settings_version = settings_version + 1 WHERE id = 0;
        END;
        "#,
    ]
}

/// Opens a connection to `dir/cache.db` with every PRAGMA applied (not migrated).
pub(crate) fn open_connection(dir: &Path, mmap_size: u64, cache_size: i64) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    // Created 0600 first: SQLite gives `-wal` and `-shm` the database file's mode.
    super::private::precreate_file(&dir.join(DB_FILE))?;
    let fresh = std::fs::metadata(dir.join(DB_FILE))?.len() == 0;
    let conn = match super::wal_vfs::name() {
        Some(vfs) => Connection::open_with_flags_and_vfs(dir.join(DB_FILE), flags, vfs)?,
        None => Connection::open_with_flags(dir.join(DB_FILE), flags)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if fresh {
        // Incremental auto_vacuum can only be chosen before the database's first page is
        // written (by the WAL switch below); `check(fix)`'s VACUUM converts older
        // databases. Not on a database in use: there the PRAGMA waits for the write lock.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    // WAL is persistent in the file; setting it again is cheap and idempotent.
    // It needs a lock, so retry on busy like any write.
    super::retry::with_retry(|| {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Corrupt(format!("could not enable WAL (got {mode})")));
        }
        Ok(())
    })?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};
         PRAGMA mmap_size = {mmap_size};
         PRAGMA cache_size = {cache_size};"
    ))?;
    Ok(conn)
}

/// Eviction-order indexes, one per policy column (as diskcache creates them).
const POLICY_INDEXES: [(&str, &str); 3] = [
    ("cache_store_time", "store_time"),
    ("cache_access_time", "access_time"),
    ("cache_access_count", "access_count"),
];

/// Inside the caller's write transaction: creates the index the policy orders victims
/// by and drops the other policy indexes, so each write maintains only the one index
/// that culling uses (diskcache likewise indexes only the configured policy's column).
/// Idempotent and cheap when nothing changes.
pub(crate) fn ensure_policy_index(conn: &Connection, policy: EvictionPolicy) -> Result<()> {
    let wanted = match policy {
        EvictionPolicy::LeastRecentlyStored => Some("store_time"),
        EvictionPolicy::LeastRecentlyUsed => Some("access_time"),
        EvictionPolicy::LeastFrequentlyUsed => Some("access_count"),
        EvictionPolicy::None => None,
    };
    for (name, column) in POLICY_INDEXES {
        let exists: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?1)",
            )?
            .query_row([name], |r| r.get(0))?;
        match (Some(column) == wanted, exists) {
            (true, false) => {
                conn.execute_batch(&format!("CREATE INDEX {name} ON cache({column})"))?
            }
            (false, true) => conn.execute_batch(&format!("DROP INDEX {name}"))?,
            _ => {}
        }
    }
    Ok(())
}

/// Re-applies the per-connection tuning after settings changed.
pub(crate) fn apply_tuning(conn: &Connection, settings: &Settings) -> Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA mmap_size = {}; PRAGMA cache_size = {};",
        settings.sqlite_mmap_size, settings.sqlite_cache_size
    ))?;
    Ok(())
}

/// Pages [`reclaim_free_pages`] gives back per transaction, so that other writers get the
/// lock in between on a large database (4 MiB of 4 KiB pages).
pub(crate) const RECLAIM_BATCH: u64 = 1024;

/// Inside a write transaction: gives up to `max` of the database's free pages back to the
/// file system (incremental auto_vacuum), after bulk deletes. Returns how many stay free.
pub(crate) fn reclaim_free_pages(conn: &Connection, max: u64) -> Result<u64> {
    let free = conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))?;
    let free = free.max(0) as u64;
    if free == 0 || max == 0 {
        return Ok(free);
    }
    // Each step frees one page: step to the end (`execute_batch` steps once).
    let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({max})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(free.saturating_sub(max))
}

/// Outside any transaction: rebuilds the database file (`VACUUM`), which also switches a
/// database created without it to incremental auto_vacuum.
pub(crate) fn vacuum(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    Ok(())
}

/// Tests: inserts `n` rows of `len`-byte inline values, keyed by the big-endian numbers
/// from `from`, in the caller's transaction or one each.
#[cfg(test)]
pub(crate) fn insert_test_rows(c: &Connection, from: u32, n: u32, len: usize) {
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO cache (key, store_time, access_time, size, mode, value) \
             VALUES (?1, 1, 1, ?2, 1, ?3)",
        )
        .unwrap();
    for i in from..from + n {
        let value = vec![i as u8; len];
        stmt.execute(rusqlite::params![i.to_be_bytes(), (4 + len) as i64, value])
            .unwrap();
    }
}

/// The database's auto_vacuum mode (0 none, 1 full, 2 incremental).
#[cfg(test)]
pub(crate) fn auto_vacuum(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?)
}

/// Applies missing migrations in one immediate transaction. Returns the version now in force.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64> {
    let steps = migrations();
    let supported = steps.len() as i64;
    super::retry::with_retry(|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > supported {
            return Err(Error::NewerSchema { found, supported });
        }
        for (i, step) in steps.iter().enumerate().skip(found.max(0) as usize) {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(supported)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(dir.path(), 0, 100).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len() as i64);
        conn.execute(
            "INSERT INTO cache(key, store_time, access_time, size) VALUES (x'01', 1, 1, 5)",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len() as i64);
        let (count, size): (i64, i64) = conn
            .query_row("SELECT count, size FROM counters", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((count, size), (1, 5));
    }

    /// Migration 3: on a database made before it, the size trigger still counts a changed
    /// size and no longer writes the counters for an unchanged one.
    #[test]
    fn migration_3_size_trigger_runs_only_on_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(dir.path(), 0, 100).unwrap();
        for step in &migrations()[..2] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO cache(key, store_time, access_time, size) VALUES (x'01', 1, 1, 5)",
            [],
        )
        .unwrap();
        let changes = |c: &Connection, sql: &str| {
            let before = c.total_changes();
            c.execute(sql, []).unwrap();
            c.total_changes() - before
        };
        assert_eq!(
            changes(&conn, "UPDATE cache SET size = 5"),
            2,
            "before: row + counters"
        );
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len() as i64);
        assert_eq!(
            changes(&conn, "UPDATE cache SET size = 5"),
            1,
            "unchanged: the row only"
        );
        assert_eq!(changes(&conn, "UPDATE cache SET size = 9"), 2);
        let size: i64 = conn
            .query_row("SELECT size FROM counters", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, 9);
    }

    #[test]
    fn only_the_policy_index_exists() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(dir.path(), 0, 100).unwrap();
        migrate(&mut conn).unwrap();
        let indexes = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND name IN \
                       ('cache_store_time', 'cache_access_time', 'cache_access_count')",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
        };
        let cases = [
            (EvictionPolicy::LeastRecentlyUsed, vec!["cache_access_time"]),
            (
                EvictionPolicy::LeastRecentlyStored,
                vec!["cache_store_time"],
            ),
            (
                EvictionPolicy::LeastRecentlyStored,
                vec!["cache_store_time"],
            ),
            (
                EvictionPolicy::LeastFrequentlyUsed,
                vec!["cache_access_count"],
            ),
            (EvictionPolicy::None, vec![]),
        ];
        for (policy, want) in cases {
            ensure_policy_index(&conn, policy).unwrap();
            assert_eq!(indexes(&conn), want, "{policy}");
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(dir.path(), 0, 100).unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        match migrate(&mut conn) {
            Err(Error::NewerSchema { found, supported }) => {
                assert_eq!(found, 99);
                assert_eq!(supported, migrations().len() as i64);
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn new_databases_vacuum_incrementally_and_vacuum_converts_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(dir.path(), 0, 100).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(auto_vacuum(&conn).unwrap(), 2);
        // A database from before: no auto_vacuum.
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
        assert_eq!(auto_vacuum(&conn).unwrap(), 0);
        drop(conn);
        let conn = open_connection(dir.path(), 0, 100).unwrap();
        assert_eq!(
            auto_vacuum(&conn).unwrap(),
            0,
            "opening alone does not convert"
        );
        vacuum(&conn).unwrap();
        assert_eq!(auto_vacuum(&conn).unwrap(), 2);
    }

    #[test]
    fn journal_mode_is_wal_and_sync_normal() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(dir.path(), 0, 100).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 1);
    }
}
