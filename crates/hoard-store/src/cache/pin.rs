//! The read transaction a pooled connection keeps open from one write to the next (the
//! pin), so that a write transaction begins without taking a WAL read lock again.
//!
//! A write transaction in WAL mode takes and releases a read lock, and moves its read mark
//! after every commit (the WAL grew past every mark): 4 `fcntl`s on the `-shm` file, plus
//! the write lock's 2. A connection that still reads when it commits keeps its read lock
//! and its snapshot, which includes its own commit; its next `BEGIN IMMEDIATE` only takes
//! the write lock, and SQLite refuses it (`SQLITE_BUSY_SNAPSHOT`) if anyone committed in
//! between, so a write never starts from an old snapshot. The pin is that read: one row of
//! `counters` stepped inside a write transaction and left unfinished.
//!
//! Invariant: a pin is held only by a connection in the pool or in a write; every other
//! use of a connection releases it first (`Inner::conn`, `Inner::idle_conn`), so no read
//! sees an old snapshot. A pin stops checkpoints at its read mark and keeps the WAL from
//! restarting, so it is released when its write fails or finds an older snapshot, before a
//! checkpoint is asked for or a RESTART is run, and by the checkpoint thread once its
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
}

impl Pin {
    pub(crate) fn new() -> Pin {
        Pin {
            stmt: Cell::new(std::ptr::null_mut()),
            state: Cell::new(State::Free),
        }
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
                    ffi::SQLITE_PREPARE_PERSISTENT as u32,
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
        // SAFETY: this pin's statement (or null, a no-op), on its still open connection.
        unsafe { ffi::sqlite3_finalize(self.stmt.replace(std::ptr::null_mut())) };
    }
}
