//! The read transaction a pooled connection keeps open from one write to the next (the
//! pin), so that a write transaction begins without taking a WAL read lock again; and
//! from one read of a row to the next while no commit came in between
//! ([`Pin::hold_for_read`]).
//!
//! A write transaction in WAL mode takes and releases a read lock, and moves its read mark
//! after every commit (the WAL grew past every mark): 4 `fcntl`s on the `-shm` file, plus
//! the write lock's 2. A connection that still reads when it commits keeps its read lock
//! and its snapshot, which includes its own commit; its next `BEGIN IMMEDIATE` only takes
//! the write lock, and SQLite refuses it (`SQLITE_BUSY_SNAPSHOT`) if anyone committed in
//! between, so a write never starts from an old snapshot. The pin is that read: one row of
//! `counters` stepped inside a write transaction and left unfinished.
//!
//! Invariant: a pin is held only by a connection in the pool, in a write transaction, or
//! reading rows (`Inner::read_row`, `Inner::fetch_now`) under a pin whose snapshot the WAL
//! index shows to be the latest commit; every other use of a connection releases it first
//! (`Inner::conn`, and so `Inner::write_alone`, whose lone statement
//! would need a statement journal beside a pending read), so no read sees an old snapshot.
//! A pin stops checkpoints at its read mark and keeps the WAL from restarting, so it is
//! released when its write fails or finds an older snapshot, before a checkpoint is asked
//! for or a RESTART is run, and by the checkpoint thread once its
//! connection has been idle in the pool for one to two [`SWEEP_TICK`]s.

use rusqlite::{Connection, ffi};
use std::cell::Cell;
use std::time::Duration;

/// How often the checkpoint thread looks for idle pins while there are any: a pin is
/// released one to two ticks after its connection's last write.
pub(crate) const SWEEP_TICK: Duration = Duration::from_millis(20);

/// The statement kept stepped: any read of a table holds the read transaction.
const PIN_SQL: &std::ffi::CStr = c"SELECT id FROM counters";

/// What a pin is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No read transaction kept.
    Free,
    /// Kept, and used by a write since the last sweep.
    Used,
    /// Kept, and not used since the last sweep: the next one releases it.
    Idle,
}

/// Which pins a sweep of the pool releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Those idle since the previous sweep (the thread's tick).
    Idle,
    /// All of them (a checkpoint is about to run).
    All,
}

/// One connection's pin (owned by its `Db`, which finalizes it before the connection
/// closes).
#[derive(Debug)]
pub(crate) struct Pin {
    stmt: Cell<*mut ffi::sqlite3_stmt>,
    state: Cell<State>,
    /// The `counters` row as this connection last read it, while the pin has been held
    /// since (see [`Pin::counters_after`]).
    known: Cell<Option<Known>>,
    /// The WAL index's commit stamp read after this connection's last commit (see
    /// [`Pin::hold_for_write`]), or before its read transaction began (see
    /// [`Pin::hold_for_read`]).
    stamp: Cell<Option<u128>>,
    /// The stamp was read before the read transaction began, so while the WAL index still
    /// shows it, the transaction's snapshot is the latest commit (a stamp read after a
    /// commit may already be another's, which a write learns from SQLite, a read never).
    readable: Cell<bool>,
    /// The connection's main database file (for the stamp), once looked up.
    main: Cell<*mut ffi::sqlite3_file>,
}

/// What a write read from `counters`, and when.
#[derive(Clone, Copy, Debug)]
struct Known {
    size: u64,
    settings_version: i64,
    /// The connection's `total_changes` then: rows changed by its statements, trigger
    /// programs included.
    changes: u64,
}

impl Pin {
    pub(crate) fn new() -> Pin {
        Pin {
            stmt: Cell::new(std::ptr::null_mut()),
            state: Cell::new(State::Free),
            known: Cell::new(None),
            stamp: Cell::new(None),
            readable: Cell::new(false),
            main: Cell::new(std::ptr::null_mut()),
        }
    }

    fn commit_stamp(&self, conn: &Connection) -> Option<u128> {
        if self.main.get().is_null() {
            // SAFETY: a valid handle; SQLite gives its own file pointer, valid while the
            // connection is open (the pin does not outlive it).
            let db = unsafe { conn.handle() };
            self.main
                .set(super::volume::file(db, ffi::SQLITE_FCNTL_FILE_POINTER));
        }
        crate::wal_vfs::commit_stamp(self.main.get())
    }

    /// After a commit on this pin's connection: notes the WAL index as it stands (ours,
    /// unless another commit came in between; then the next write finds out the slow way).
    pub(crate) fn committed(&self, conn: &Connection) {
        if self.held() {
            self.stamp.set(self.commit_stamp(conn));
            self.readable.set(false);
        }
    }

    /// Before a read on this pin's connection (which must not wait: busy timeout 0): keeps
    /// the read transaction when the WAL index shows no commit since it began, else lets it
    /// go and begins one after reading the stamp. So a read never sees an older snapshot
    /// than the latest commit of any process, and a run of reads without commits between
    /// them takes the WAL's read lock once (none of SQLite's `-shm` locking per read).
    /// Without a stamp (another VFS) nothing is kept, and neither is it while the WAL holds
    /// [`KICK_FRAMES`](crate::checkpoint::KICK_FRAMES) frames or more (a checkpoint is then
    /// asked for): readers that never stop would otherwise keep their read marks for good,
    /// and the WAL could never restart (`reliability::wal`).
    pub(crate) fn hold_for_read(&self, conn: &Connection) {
        let now = self.commit_stamp(conn);
        if self.held() {
            if self.readable.get() && now.is_some() && now == self.stamp.get() {
                self.state.set(State::Used);
                return;
            }
            self.release();
        }
        let short = |s: u128| crate::wal_vfs::stamp_frames(s) < crate::checkpoint::KICK_FRAMES;
        if !now.is_some_and(short) {
            return;
        }
        self.hold(conn);
        if self.held() {
            self.stamp.set(now);
            self.readable.set(true);
        }
    }

    /// Before a write on this pin's connection: lets the pin go when the WAL index shows a
    /// commit since this connection's last (SQLite would refuse the pinned write, after
    /// taking the write lock). Without a stamp the pin stays: SQLite still checks.
    pub(crate) fn hold_for_write(&self, conn: &Connection) {
        if self.held()
            && let Some(before) = self.stamp.get()
            && self.commit_stamp(conn) != Some(before)
        {
            self.release();
        }
    }

    /// Inside a write transaction on this pin's connection: remembers the `counters` row
    /// (accounted size, settings version) as it now is.
    pub(crate) fn remember_counters(&self, conn: &Connection, size: u64, settings_version: i64) {
        if self.held() {
            self.known.set(Some(Known {
                size,
                settings_version,
                changes: conn.total_changes(),
            }));
        }
    }

    /// Inside a write transaction on this pin's connection whose only changes since the
    /// remembered read are `changes` rows by one write whose effect on the `counters` row
    /// is known: `added` accounted bytes (a row replaced in place with its size, expiry
    /// and tag kept: 1 change, nothing added, no trigger ran; a new row: 2 changes, the row
    /// and its insert trigger's update of the counters, adding its size). The `counters`
    /// row as it now is. The pin held throughout means no other connection committed
    /// since (the transaction began without reading again, see the module comment), and
    /// any other statement of this one that changed a row (the counters' own triggers
    /// included) would show in `total_changes`.
    pub(crate) fn counters_after(
        &self,
        conn: &Connection,
        changes: u64,
        added: u64,
    ) -> Option<(u64, i64)> {
        let k = self.known.get().filter(|_| self.held())?;
        (conn.total_changes() == k.changes + changes)
            .then_some((k.size + added, k.settings_version))
    }

    pub(crate) fn held(&self) -> bool {
        self.state.get() != State::Free
    }

    /// Inside a write transaction (or right before a statement that is its own): keeps
    /// `conn`'s read transaction open past the commit. `conn` must be this pin's connection.
    pub(crate) fn hold(&self, conn: &Connection) {
        if self.held() {
            self.state.set(State::Used);
            return;
        }
        // SAFETY: a valid handle; the statement is this pin's, made on `conn` and finalized
        // (by `finalize`) before `conn` closes.
        unsafe {
            if self.stmt.get().is_null() {
                let mut stmt = std::ptr::null_mut();
                let rc = ffi::sqlite3_prepare_v3(
                    conn.handle(),
                    PIN_SQL.as_ptr(),
                    -1,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut stmt,
                    std::ptr::null_mut(),
                );
                if rc != ffi::SQLITE_OK {
                    ffi::sqlite3_finalize(stmt);
                    return;
                }
                self.stmt.set(stmt);
            }
            if ffi::sqlite3_step(self.stmt.get()) == ffi::SQLITE_ROW {
                self.state.set(State::Used);
            } else {
                ffi::sqlite3_reset(self.stmt.get());
            }
        }
    }

    /// Ends the kept read transaction (if no statement of the connection still reads).
    /// True if there was one.
    pub(crate) fn release(&self) -> bool {
        self.known.set(None);
        self.stamp.set(None);
        self.readable.set(false);
        if self.state.replace(State::Free) == State::Free {
            return false;
        }
        // SAFETY: this pin's statement, on its open connection.
        unsafe { ffi::sqlite3_reset(self.stmt.get()) };
        true
    }

    /// Applies a sweep; true if the pin is still held afterwards.
    pub(crate) fn sweep(&self, which: Sweep) -> bool {
        match (self.state.get(), which) {
            (State::Free, _) => false,
            (State::Used, Sweep::Idle) => {
                self.state.set(State::Idle);
                true
            }
            (State::Idle, _) | (State::Used, Sweep::All) => {
                self.release();
                false
            }
        }
    }

    /// Finalizes the statement; called while its connection is still open.
    pub(crate) fn finalize(&self) {
        self.state.set(State::Free);
        self.known.set(None);
        self.readable.set(false);
        // SAFETY: this pin's statement (or null, a no-op), on its still open connection.
        unsafe { ffi::sqlite3_finalize(self.stmt.replace(std::ptr::null_mut())) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cache;
    use crate::cache::Db;
    use crate::schema;
    use crate::wal_vfs::tests::SHM_LOCKS;

    /// One write transaction on `db` that adds 1 to `counters.hits` and keeps its pin;
    /// returns the shared-memory lock calls it made.
    fn add_one(db: &Db) -> rusqlite::Result<u64> {
        let before = SHM_LOCKS.with(Cell::get);
        let c = db.connection();
        c.execute_batch("BEGIN IMMEDIATE")?;
        c.execute("UPDATE counters SET hits = hits + 1", [])?;
        db.pin().hold(c);
        c.execute_batch("COMMIT")?;
        Ok(SHM_LOCKS.with(Cell::get) - before)
    }

    fn hits(c: &Connection) -> i64 {
        c.query_row("SELECT hits FROM counters", [], |r| r.get(0))
            .unwrap()
    }

    /// The mechanism, on one connection without a pool or a checkpoint thread: after its
    /// first write, a pinned connection's writes take the write lock and nothing else; a
    /// commit by another connection makes its next `BEGIN` fail with
    /// `SQLITE_BUSY_SNAPSHOT` (never a write from the older snapshot), and once the pin is
    /// released it writes from the newer one.
    #[test]
    fn a_pinned_write_takes_only_the_write_lock_and_never_starts_from_an_old_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = schema::open_connection(dir.path(), 0, 100).unwrap();
        schema::migrate(&mut c).unwrap();
        let other = schema::open_connection(dir.path(), 0, 100).unwrap();
        let db = Db::new(c);
        let first = add_one(&db).unwrap();
        assert!(db.pin().held());
        assert!(first > 2, "the first write also reads: {first} lock calls");
        for _ in 0..10 {
            assert_eq!(
                add_one(&db).unwrap(),
                2,
                "the write lock, taken and released"
            );
        }
        // Readers elsewhere see every commit while the pin is held.
        assert_eq!(hits(&other), 11);
        other
            .execute("UPDATE counters SET hits = hits + 100", [])
            .unwrap();
        let refused = add_one(&db).unwrap_err();
        assert_eq!(
            refused.sqlite_error().map(|e| e.extended_code),
            Some(ffi::SQLITE_BUSY_SNAPSHOT),
            "{refused}"
        );
        db.connection().execute_batch("ROLLBACK").ok();
        assert!(db.pin().release());
        assert!(add_one(&db).unwrap() > 2, "a fresh read lock");
        assert_eq!(
            hits(db.connection()),
            112,
            "written from the newer snapshot"
        );
        assert_eq!(hits(&other), 112);
        // The WAL index's stamp tells a write it will be refused before it asks.
        db.pin().committed(db.connection());
        db.pin().hold_for_write(db.connection());
        assert!(db.pin().held(), "no commit since ours");
        other
            .execute("UPDATE counters SET hits = hits + 100", [])
            .unwrap();
        db.pin().hold_for_write(db.connection());
        assert!(!db.pin().held(), "let go: another commit came");
        assert!(add_one(&db).unwrap() > 2);
        assert_eq!(hits(&other), 213);
        assert!(db.pin().release());
        assert!(!db.pin().release(), "released once");
    }

    /// The counters a pin remembers are given back only while nothing but the one known
    /// write changed rows since (a replacement in place, or a new row and its trigger), on
    /// this connection, with the pin held throughout.
    #[test]
    fn remembered_counters_are_given_back_only_after_exactly_the_known_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = schema::open_connection(dir.path(), 0, 100).unwrap();
        schema::migrate(&mut c).unwrap();
        schema::insert_test_rows(&c, 0, 3, 10);
        let db = Db::new(c);
        let c = db.connection();
        let pin = db.pin();
        let replace = || {
            c.execute("UPDATE cache SET value = x'01' WHERE rowid = 1", [])
                .unwrap()
        };
        add_one(&db).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        pin.remember_counters(c, 42, 7);
        assert_eq!(pin.counters_after(c, 1, 0), None, "no change yet");
        replace();
        assert_eq!(pin.counters_after(c, 1, 0), Some((42, 7)));
        // A new row: two changes (the row, its trigger's update of the counters).
        pin.remember_counters(c, 42, 7);
        schema::insert_test_rows(c, 10, 1, 10);
        assert_eq!(pin.counters_after(c, 1, 0), None, "not a replacement");
        assert_eq!(pin.counters_after(c, 2, 14), Some((56, 7)));
        // A change whose trigger updates the counters, then another: three rows in all.
        pin.remember_counters(c, 42, 7);
        schema::insert_test_rows(c, 11, 1, 10);
        replace();
        assert_eq!(pin.counters_after(c, 1, 0), None);
        assert_eq!(pin.counters_after(c, 2, 14), None);
        pin.remember_counters(c, 43, 7);
        c.execute("UPDATE counters SET hits = hits + 1", [])
            .unwrap();
        assert_eq!(pin.counters_after(c, 1, 0), Some((43, 7)), "one change");
        replace();
        assert_eq!(pin.counters_after(c, 1, 0), None, "two changes");
        pin.remember_counters(c, 44, 7);
        c.execute_batch("COMMIT").unwrap();
        assert!(pin.release());
        replace();
        assert_eq!(pin.counters_after(c, 1, 0), None, "the pin was let go");
        pin.remember_counters(c, 45, 7);
        assert_eq!(
            pin.counters_after(c, 1, 0),
            None,
            "not remembered without a pin"
        );
    }

    fn open(dir: &std::path::Path) -> Cache {
        Cache::builder(dir).memory_cache_size(0).open().unwrap()
    }

    /// Two handles on one directory (two pools, as two processes would have): each one's
    /// writes keep a pin, and each starts from the other's commits: alternating increments
    /// add up, and a read on a handle whose pooled connection kept a pin sees the other's
    /// latest write.
    #[test]
    fn handles_writing_in_turn_see_each_others_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path()), open(dir.path()));
        for i in 0..100 {
            a.incr(b"n", 1, Some(0)).unwrap();
            assert_eq!(b.incr(b"n", 1, Some(0)).unwrap(), 2 * i + 2);
        }
        assert_eq!(a.get(b"n").unwrap(), Some(b"200".to_vec()));
        for i in 0..20u8 {
            a.set(b"k", &[i], None, None).unwrap();
            b.set(b"k", &[i, i], None, None).unwrap();
            assert_eq!(a.get(b"k").unwrap(), Some(vec![i, i]));
            assert!(a.delete(b"k").unwrap());
            assert_eq!(b.get(b"k").unwrap(), None);
        }
    }

    /// Issue 18: reads of rows keep their connection's read transaction while the WAL index
    /// shows no commit since it began, so a run of reads takes SQLite's `-shm` locks once;
    /// yet every read, on the request's task (`record_now`) or a blocking one (`get`), sees
    /// the other handle's (process's) latest commit. Without the stamp check the reads
    /// after the other handle's writes would return the older values.
    #[test]
    fn kept_reads_see_every_commit_of_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path()), open(dir.path()));
        let value = |r: Option<Option<crate::Record>>| match r.expect("answered") {
            Some(crate::Record {
                value: crate::Value::Inline(v),
                ..
            }) => v,
            other => panic!("{other:?}"),
        };
        b.set(b"k", b"0", None, None).unwrap();
        a.set(b"other", b"x", None, None).unwrap(); // leaves a connection idle
        for i in 0..20u8 {
            assert_eq!(value(a.record_now(b"k").unwrap()), vec![b'0' + i % 10]);
            let before = SHM_LOCKS.with(Cell::get);
            for _ in 0..3 {
                assert_eq!(value(a.record_now(b"k").unwrap()), vec![b'0' + i % 10]);
                assert_eq!(a.get(b"k").unwrap(), Some(vec![b'0' + i % 10]));
            }
            assert_eq!(
                SHM_LOCKS.with(Cell::get) - before,
                0,
                "reads without a commit between them keep their read transaction"
            );
            b.set(b"k", &[b'0' + (i + 1) % 10], None, None).unwrap();
            if i % 2 == 0 {
                assert_eq!(a.get(b"k").unwrap(), Some(vec![b'0' + (i + 1) % 10]));
            }
        }
        // A delete by the other handle is seen as well.
        assert!(b.delete(b"k").unwrap());
        assert_eq!(a.record_now(b"k").unwrap().map(|r| r.is_none()), Some(true));
        assert_eq!(a.get(b"k").unwrap(), None);
    }

    /// A handle that wrote and then went idle does not stop another process's RESTART
    /// checkpoint for long: the checkpoint thread releases the idle pin (here within the
    /// 10 s busy timeout the RESTART waits; it takes one to two sweep ticks).
    #[test]
    fn an_idle_pin_never_stops_a_restart_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path());
        for i in 0..10u8 {
            cache.set(&[i], b"value", None, None).unwrap();
        }
        let plain = Connection::open(dir.path().join(schema::DB_FILE)).unwrap();
        plain.busy_timeout(Duration::from_secs(10)).unwrap();
        let (busy, log, done): (i64, i64, i64) = plain
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0, "no reader left on the WAL");
        assert_eq!(log, done, "every frame copied back");
        // And the handle writes on.
        cache.set(b"after", b"v", None, None).unwrap();
        assert_eq!(cache.get(b"after").unwrap(), Some(b"v".to_vec()));
    }
}
