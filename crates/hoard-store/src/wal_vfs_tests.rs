//! Tests of `wal_vfs.rs`: one write per commit, no frame left behind, plain SQLite on the
//! same files, a killed writer.

use crate::schema::{self, insert_test_rows as insert};
use rusqlite::Connection;
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

thread_local! {
    /// Writes that reached a WAL file on this thread.
    pub(crate) static WAL_WRITES: Cell<u64> = const { Cell::new(0) };
    /// Frames still buffered when SQLite touched the shared memory (never, by the
    /// invariant).
    pub(crate) static LATE: Cell<u64> = const { Cell::new(0) };
    /// Writes that rewrote earlier frames in place on this thread.
    pub(crate) static IN_PLACE: Cell<u64> = const { Cell::new(0) };
    /// Locks and unlocks of the shared memory (`-shm`) on this thread.
    pub(crate) static SHM_LOCKS: Cell<u64> = const { Cell::new(0) };
}

fn frames_in_wal(c: &Connection) -> i64 {
    // (busy, frames in the WAL, frames checkpointed); NOOP copies nothing.
    c.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| r.get(1))
        .unwrap_or_else(|_| {
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        })
}

/// The point of the VFS: a commit of several pages reaches the WAL in one write.
#[test]
fn a_commit_of_several_pages_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = schema::open_connection(dir.path(), 0, 100).unwrap();
    schema::migrate(&mut c).unwrap();
    insert(&c, 0, 1, 1000);
    let frames_before = frames_in_wal(&c);
    let writes_before = WAL_WRITES.with(Cell::get);
    for i in 1..=100 {
        insert(&c, i, 1, 1000); // its own transaction: table, key index, counters
    }
    let writes = WAL_WRITES.with(Cell::get) - writes_before;
    let frames = frames_in_wal(&c) - frames_before;
    assert!(
        frames >= 200,
        "each commit wrote several pages ({frames} frames)"
    );
    assert_eq!(writes, 100, "{frames} frames in {writes} writes");
}

/// Whatever a commit's size, its frames are all written by the time its commit frame
/// is: none is left for the shared-memory calls (whose errors SQLite cannot see),
/// including a commit frame that starts a new 64 KiB buffer.
#[test]
fn no_frame_outlives_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = schema::open_connection(dir.path(), 0, 1000).unwrap();
    schema::migrate(&mut c).unwrap();
    let late = LATE.with(Cell::get);
    let mut key = 0;
    for rows in 1..=40 {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        insert(&c, key, rows, 3000); // about one page per row
        key += rows;
        c.execute_batch("COMMIT").unwrap();
    }
    assert_eq!(LATE.with(Cell::get), late);
}

/// Plain SQLite (the default VFS) and this one share the files both ways, across a
/// transaction larger than the page cache (spilled frames, frames rewritten in place,
/// writes split at the buffer's limit).
#[test]
fn plain_sqlite_reads_and_writes_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = schema::open_connection(dir.path(), 0, 50).unwrap();
    schema::migrate(&mut ours).unwrap();
    let plain = Connection::open(dir.path().join(schema::DB_FILE)).unwrap();
    plain.busy_timeout(schema::BUSY_TIMEOUT).unwrap();
    let count = |c: &Connection| -> (i64, i64) {
        c.query_row("SELECT count(*), sum(length(value)) FROM cache", [], |r| {
            Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
        })
        .unwrap()
    };
    insert(&ours, 0, 10, 1000);
    assert_eq!(count(&plain), (10, 10_000));
    insert(&plain, 10, 10, 1000);
    assert_eq!(count(&ours), (20, 20_000));
    ours.execute_batch("BEGIN IMMEDIATE").unwrap();
    insert(&ours, 100, 2000, 1000);
    // Keys 0..20 and 100..512: 432 rows rewritten, some in pages already spilled.
    ours.execute(
        "UPDATE cache SET value = zeroblob(900) WHERE key < x'00000200'",
        [],
    )
    .unwrap();
    let in_place = IN_PLACE.with(Cell::get);
    ours.execute_batch("COMMIT").unwrap();
    assert!(
        IN_PLACE.with(Cell::get) > in_place,
        "checksums rewritten at commit"
    );
    let (n, bytes) = count(&plain);
    assert_eq!(n, 2020);
    assert_eq!(bytes, 432 * 900 + (2020 - 432) * 1000);
    let check: String = plain
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    plain
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    insert(&ours, 5000, 5, 1000);
    assert_eq!(count(&plain).0, 2025);
}

const CHILD_ENV: &str = "HOARD_STORE_TEST_WAL_WRITER";

/// Child side of [`a_killed_writer_keeps_every_acknowledged_set`]: sets keys in order
/// and prints each one's number once `set` returned. A no-op as a normal test.
#[test]
fn writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cache = crate::Cache::open(dir).unwrap();
    for i in 0..200_000u32 {
        cache
            .set(&i.to_be_bytes(), &[i as u8; 700], None, None)
            .unwrap();
        println!("set {i}");
    }
}

/// A process killed (SIGKILL) between commits loses none that `set` acknowledged:
/// each is in the file before SQLite publishes it.
#[test]
fn a_killed_writer_keeps_every_acknowledged_set() {
    let dir = tempfile::tempdir().unwrap();
    crate::Cache::open(dir.path()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "wal_vfs::tests::writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line
            .trim()
            .rsplit("set ")
            .next()
            .and_then(|n| n.parse::<u32>().ok())
        {
            last = Some(n);
            if n == 500 {
                child.kill().unwrap(); // SIGKILL, this test's own child
            }
        }
    }
    child.wait().unwrap();
    let last = last.expect("the child set keys");
    assert!(last >= 500, "killed after {last}");
    let cache = crate::Cache::open(dir.path()).unwrap();
    for i in 0..=last {
        assert_eq!(
            cache.get(&i.to_be_bytes()).unwrap().as_deref(),
            Some(&[i as u8; 700][..]),
            "key {i} of {last}"
        );
    }
    assert!(cache.check(false).unwrap().is_empty());
}
