//! The write path's statements, kept prepared with their pooled connection ([`Db`]), so
//! that running one is bind, step and reset: rusqlite's `prepare_cached` also trims and
//! hashes the SQL twice, allocates a copy of it and relinks its LRU list on every call,
//! about 1,200 instructions per statement and 11% of a `set` (four statements).
//!
//! Invariant: a [`Db`] finalizes its statements before its connection closes (field order),
//! and the connection never moves while they exist (it is boxed): they borrow it for
//! `'static` only in name. A connection that is not a [`Db`]'s (the checkpointer's, a
//! test's) runs the same SQL through `prepare_cached`.

use crate::error::Result;
use rusqlite::{Connection, PrepFlags, Statement, ffi};
use std::cell::RefCell;
use std::ffi::{CStr, c_void};

use super::pin::Pin;
use super::{DELETE_LIVE_INLINE, UPSERT};

/// Name under which a [`Db`]'s statements are attached to its connection
/// (`sqlite3_set_clientdata`).
const CLIENT_DATA: &CStr = c"hoard-store-prepared";

/// The statements kept prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hot {
    Begin,
    Commit,
    Upsert,
    DeleteLiveInline,
    SizeAndSettingsVersion,
}

impl Hot {
    const COUNT: usize = 5;

    pub(crate) fn sql(self) -> &'static str {
        match self {
            Hot::Begin => "BEGIN IMMEDIATE",
            Hot::Commit => "COMMIT",
            Hot::Upsert => UPSERT,
            Hot::DeleteLiveInline => DELETE_LIVE_INLINE,
            Hot::SizeAndSettingsVersion => {
                "SELECT size, settings_version FROM counters WHERE id = 0"
            }
        }
    }
}

/// Statements prepared on one connection, each made on first use, and its pin (reachable
/// from the connection, as the statements are).
struct Statements {
    hot: [RefCell<Option<Statement<'static>>>; Hot::COUNT],
    pin: Pin,
}

/// A pooled connection with its prepared statements and its pin.
pub(crate) struct Db {
    /// Dropped first: finalized while the connection is open.
    statements: Box<Statements>,
    conn: Box<Connection>,
}

// SAFETY: the statements borrow only `conn`, which moves with them (a `Db` is used by one
// thread at a time, as a `Connection` is); nothing else holds a reference into it.
unsafe impl Send for Db {}

impl Db {
    pub(crate) fn new(conn: Connection) -> Db {
        let db = Db {
            statements: Box::new(Statements {
                hot: Default::default(),
                pin: Pin::new(),
            }),
            conn: Box::new(conn),
        };
        // SAFETY: a valid handle; the pointer stays valid until `drop` detaches it (the
        // box never moves its contents). No destructor: the `Db` owns the statements.
        unsafe {
            ffi::sqlite3_set_clientdata(
                db.conn.handle(),
                CLIENT_DATA.as_ptr(),
                &*db.statements as *const Statements as *mut c_void,
                None,
            );
        }
        db
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The read transaction this connection may keep between writes (see `pin`).
    pub(crate) fn pin(&self) -> &Pin {
        &self.statements.pin
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // SAFETY: a valid handle; detached before the statements go.
        unsafe {
            ffi::sqlite3_set_clientdata(
                self.conn.handle(),
                CLIENT_DATA.as_ptr(),
                std::ptr::null_mut(),
                None,
            );
        }
        for s in &self.statements.hot {
            s.borrow_mut().take();
        }
        self.statements.pin.finalize();
    }
}

/// The statements of the `Db` whose connection `c` is, if it is one's.
fn attached(c: &Connection) -> Option<&Statements> {
    // SAFETY: a valid handle; a non-null pointer under this name is a live `Db`'s
    // statements (detached before they drop), used on the thread that uses `c`.
    unsafe {
        (ffi::sqlite3_get_clientdata(c.handle(), CLIENT_DATA.as_ptr()) as *const Statements)
            .as_ref()
    }
}

/// The pin of the `Db` whose connection `c` is, if it is one's.
pub(crate) fn pin_of(c: &Connection) -> Option<&Pin> {
    attached(c).map(|s| &s.pin)
}

/// Runs `f` on `which`, prepared once per pooled connection (through `prepare_cached` on
/// another connection, or while the statement is already in use on this one).
pub(crate) fn with<T>(
    c: &Connection,
    which: Hot,
    f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    if let Some(mut slot) = attached(c).and_then(|s| s.hot[which as usize].try_borrow_mut().ok()) {
        if slot.is_none() {
            let stmt = c.prepare_with_flags(which.sql(), PrepFlags::SQLITE_PREPARE_PERSISTENT)?;
            // SAFETY: see the module invariant: `c` is the `Db`'s boxed connection, which
            // outlives the statement.
            *slot = Some(unsafe { std::mem::transmute::<Statement<'_>, Statement<'static>>(stmt) });
        }
        return Ok(f(slot.as_mut().expect("prepared above"))?);
    }
    let mut stmt = c.prepare_cached(which.sql())?;
    Ok(f(&mut stmt)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;
    use rusqlite::StatementStatus;

    /// A `Db`'s connection prepares each statement once and runs it from then on; a plain
    /// connection runs the same SQL through its own cache; dropping a `Db` whose
    /// statements were used closes its connection cleanly.
    #[test]
    fn statements_are_prepared_once_per_pooled_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = schema::open_connection(dir.path(), 0, 100).unwrap();
        schema::migrate(&mut c).unwrap();
        let plain = schema::open_connection(dir.path(), 0, 100).unwrap();
        let db = Db::new(c);
        for _ in 0..3 {
            for conn in [db.connection(), &plain] {
                with(conn, Hot::Begin, |s| s.execute([])).unwrap();
                let size: i64 = with(conn, Hot::SizeAndSettingsVersion, |s| {
                    s.query_row([], |r| r.get(0))
                })
                .unwrap();
                assert_eq!(size, 0);
                with(conn, Hot::Commit, |s| s.execute([])).unwrap();
            }
        }
        let runs = with(db.connection(), Hot::Begin, |s| {
            Ok(s.get_status(StatementStatus::Run))
        })
        .unwrap();
        assert_eq!(runs, 3, "one statement, run three times");
        // Nested use of the same statement falls back to the statement cache.
        let nested = with(db.connection(), Hot::SizeAndSettingsVersion, |_| {
            with(db.connection(), Hot::SizeAndSettingsVersion, |s| {
                s.query_row([], |r| r.get::<_, i64>(0))
            })
            .map_err(|_| rusqlite::Error::InvalidQuery)
        })
        .unwrap();
        assert_eq!(nested, 0);
        drop(db); // panics if a statement outlived its connection's close
    }
}
