//! Shared state of a handle ([`Inner`]) and its connection pool; the write transaction
//! (`BEGIN IMMEDIATE` ... `COMMIT`, file cleanup either way, generation bumps). Writes
//! keep their connection's read transaction open for the next write (`pin`).

use crate::buffer::AccessBuffer;
use crate::checkpoint::{self, AfterCommit, Checkpointer};
use crate::clock::Clock;
use crate::error::Result;
use crate::files;
use crate::memory::{self, Generations, MemoryLayer};
use crate::retry::{self, with_retry_for};
use crate::schema;
use crate::settings::{EvictionPolicy, Settings};
use rusqlite::Connection;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// Shared state behind every clone of a [`Cache`].
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) pool: Arc<Pool>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: AtomicU8,
    pub(crate) statistics: AtomicBool,
    pub(crate) min_file_size: AtomicU64,
    pub(crate) tuning: Mutex<(u64, i64)>,
    /// Last settings read from the database, with their `counters.settings_version` when
    /// read inside a write transaction (`None`: unknown, re-read by the next write).
    pub(crate) settings: Mutex<(Settings, Option<i64>)>,
    pub(crate) checkpointer: Checkpointer,
    pub(crate) buffer: AccessBuffer,
    /// Shared change counters (`cache.gen`); every write bumps them (see `memory`).
    pub(crate) gens: Option<Generations>,
    /// Copies of recently read small values, valid under `gens`.
    pub(crate) memory: Option<MemoryLayer>,
    /// Fail-soft timeout: busy waits give up with `Error::Timeout` after it (see
    /// [`CacheBuilder::timeout`]); `None`: the full retry budget.
    pub(crate) timeout: Option<std::time::Duration>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.flush();
        self.checkpointer.stop();
    }
}

/// A pooled connection, returned to the pool on drop.
pub(crate) struct Conn<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) conn: Option<Db>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("connection present until drop")
            .connection()
    }
}

impl Conn<'_> {
    pub(crate) fn pin(&self) -> &pin::Pin {
        self.conn
            .as_ref()
            .expect("connection present until drop")
            .pin()
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && c.connection().is_autocommit()
            && self.inner.pool.put(c)
        {
            self.inner.checkpointer.sweep_soon();
        }
    }
}

/// Idle connections (at most [`MAX_IDLE_CONNECTIONS`], last in first out).
pub(crate) struct Pool(Mutex<Idle>);

struct Idle {
    dbs: Vec<Db>,
    /// The checkpoint thread knows there are pins to sweep.
    sweeping: bool,
}

impl Pool {
    pub(crate) fn new(db: Db) -> Pool {
        Pool(Mutex::new(Idle {
            dbs: vec![db],
            sweeping: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<Db> {
        self.lock().dbs.pop()
    }

    /// Returns `db` to the pool (or drops it if the pool is full). True when it keeps a pin
    /// the checkpoint thread does not know of yet (the caller wakes it).
    fn put(&self, db: Db) -> bool {
        let mut idle = self.lock();
        if idle.dbs.len() >= MAX_IDLE_CONNECTIONS {
            return false;
        }
        let pinned = db.pin().held();
        idle.dbs.push(db);
        pinned && !std::mem::replace(&mut idle.sweeping, true)
    }

    /// Drops the idle connections.
    pub(crate) fn clear(&self) {
        self.lock().dbs.clear();
    }

    /// Applies a sweep to the idle connections' pins (see `pin`); true if any is still held.
    pub(crate) fn sweep(&self, which: Sweep) -> bool {
        let mut idle = self.lock();
        let mut held = false;
        for db in &idle.dbs {
            held |= db.pin().sweep(which);
        }
        idle.sweeping = held;
        held
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.lock().dbs.len())
            .finish()
    }
}

/// Files to clean up when a write transaction ends.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Files renamed into place by this transaction: removed if it rolls back.
    pub(crate) created: Vec<PathBuf>,
    /// Files of rows deleted or replaced by this transaction: removed after it commits.
    pub(crate) unlink: Vec<PathBuf>,
    /// Hashes of keys whose rows this transaction changed: their generation counters are
    /// bumped again when it ends.
    pub(crate) changed: Vec<u64>,
    /// The transaction changed rows it cannot name: bump the global counter when it ends.
    pub(crate) changed_all: bool,
}

/// Rolls back an open transaction unless disarmed (also on panic).
pub(crate) struct Rollback<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Inner {
    pub(crate) fn policy(&self) -> EvictionPolicy {
        EvictionPolicy::ALL[self.policy.load(Ordering::Relaxed) as usize % 4]
    }

    pub(crate) fn cache_settings(&self, s: &Settings) {
        self.cache_settings_at(s, None);
    }

    /// The settings as of `version` (`counters.settings_version`, read in the caller's
    /// write transaction): the cached copy if it is that version's, else the row, read
    /// and cached. So a write reads the settings row only after something changed it.
    pub(crate) fn settings_at(&self, c: &Connection, version: i64) -> Result<Settings> {
        {
            let known = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            if known.1 == Some(version) {
                return Ok(known.0.clone());
            }
        }
        let s = read_settings(c)?;
        self.cache_settings_at(&s, Some(version));
        Ok(s)
    }

    fn cache_settings_at(&self, s: &Settings, version: Option<i64>) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = (s.clone(), version);
        self.policy
            .store(policy_to_u8(s.eviction_policy), Ordering::Relaxed);
        self.statistics.store(s.statistics, Ordering::Relaxed);
        self.min_file_size.store(s.min_file_size, Ordering::Relaxed);
    }

    /// A pooled connection (or a new one) for any use: a pin it kept is released.
    pub(crate) fn conn(&self) -> Result<Conn<'_>> {
        let c = self.write_conn()?;
        c.pin().release();
        Ok(c)
    }

    /// A pooled connection for a write, with the pin its last write kept, if any.
    fn write_conn(&self) -> Result<Conn<'_>> {
        let pooled = self.pool.take();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let (mmap, cache) = *self.tuning.lock().unwrap_or_else(|p| p.into_inner());
                let mut c = schema::open_connection(&self.dir, mmap, cache)?;
                c.busy_timeout(self.busy_timeout())?;
                self.checkpointer.watch(&mut c)?;
                Db::new(c)
            }
        };
        Ok(Conn {
            inner: self,
            conn: Some(conn),
        })
    }

    /// An idle pooled connection, if one is there (never opens one: that is file I/O), with
    /// the pin its last use kept: for a row's read, which first asks the pin whether its
    /// snapshot is still the latest (`Pin::hold_for_read`).
    pub(crate) fn idle_conn(&self) -> Option<Conn<'_>> {
        Some(Conn {
            inner: self,
            conn: Some(self.pool.take()?),
        })
    }

    /// SQLite's busy timeout for this handle's connections: the fail-soft timeout if
    /// shorter than [`schema::BUSY_TIMEOUT`].
    pub(crate) fn busy_timeout(&self) -> std::time::Duration {
        self.timeout
            .map_or(schema::BUSY_TIMEOUT, |t| t.min(schema::BUSY_TIMEOUT))
    }

    /// How long one operation retries on `SQLITE_BUSY` (see `retry::budget`).
    pub(crate) fn retry_budget(&self) -> std::time::Duration {
        retry::budget(self.timeout)
    }

    /// Runs `f` on a pooled connection, retrying on `SQLITE_BUSY`.
    /// Inside a [`Cache::transact`] of this handle on this thread, runs on its connection
    /// (so it sees the transaction's own writes).
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&Connection) -> Result<T>) -> Result<T> {
        let budget = self.retry_budget();
        if let Some(r) = self.joined(|c, _| with_retry_for(budget, || f(c))) {
            return r;
        }
        let conn = self.conn()?;
        with_retry_for(budget, || f(&conn))
    }

    /// [`Inner::read`] of rows alone (no write, no statement left open): under the
    /// connection's pin while its snapshot is the latest commit (`Pin::hold_for_read`).
    pub(crate) fn read_row<T>(&self, mut f: impl FnMut(&Connection) -> Result<T>) -> Result<T> {
        let budget = self.retry_budget();
        if let Some(r) = self.joined(|c, _| with_retry_for(budget, || f(c))) {
            return r;
        }
        let conn = self.write_conn()?;
        conn.pin().hold_for_read(&conn);
        with_retry_for(budget, || f(&conn))
    }

    /// Calls `f` with the connection and pending files of the transaction this handle (any
    /// clone of it) has open on this thread, if any; `None` otherwise.
    pub(crate) fn joined<R>(
        &self,
        f: impl FnOnce(&Connection, &RefCell<Pending>) -> R,
    ) -> Option<R> {
        let me = self as *const Inner as usize;
        let open = OPEN.with(|o| o.borrow().iter().rev().find(|e| e.0 == me).copied());
        // SAFETY: an entry is pushed by `OpenTx::new` from references that outlive the
        // guard, and the guard removes it before they go out of scope; entries are
        // thread-local, so they are only dereferenced on the thread that borrowed them.
        open.map(|(_, c, p)| unsafe { f(&*c, &*p) })
    }

    /// Runs `f` inside `BEGIN IMMEDIATE` ... `COMMIT`; cleans up files either way.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection, &mut Pending) -> Result<T>,
    ) -> Result<T> {
        self.write_cell(|c, p| f(c, &mut p.borrow_mut()))
    }

    /// [`Inner::write`] with the pending files in a cell, so that a [`Cache::transact`] can
    /// let calls nested in it join. Inside a transaction of this handle on this thread, `f`
    /// runs in that transaction (no `BEGIN`/`COMMIT` of its own).
    pub(crate) fn write_cell<T>(
        &self,
        f: impl FnOnce(&Connection, &RefCell<Pending>) -> Result<T>,
    ) -> Result<T> {
        let mut f = Some(f);
        if let Some(r) = self.joined(|c, p| (f.take().expect("called once"))(c, p)) {
            return r;
        }
        self.write_cell_outer(f.take().expect("not called yet"))
    }

    /// Runs `f` inside `BEGIN IMMEDIATE` ... `COMMIT`; cleans up files either way.
    fn write_cell_outer<T>(
        &self,
        f: impl FnOnce(&Connection, &RefCell<Pending>) -> Result<T>,
    ) -> Result<T> {
        let conn = self.write_conn()?;
        conn.pin().hold_for_write(&conn);
        let budget = self.retry_budget();
        with_retry_for(budget, || {
            let begin = || prepared::with(&conn, Hot::Begin, |s| s.execute([]));
            match begin() {
                // Busy or an older snapshot (someone committed since): without the pin,
                // SQLite's busy handler waits for the write lock and reads afresh.
                Err(_) if conn.pin().release() => begin()?,
                r => r?,
            };
            Ok(())
        })?;
        let mut guard = Rollback {
            conn: &conn,
            armed: true,
        };
        let cell = RefCell::new(Pending::default());
        let mut wal_too_big = false;
        let result = f(&conn, &cell).and_then(|v| {
            conn.pin().hold(&conn);
            with_retry_for(budget, || {
                prepared::with(&conn, Hot::Commit, |s| s.execute([]))?;
                Ok(())
            })?;
            guard.armed = false;
            wal_too_big = self.after_commit(&conn);
            Ok(v)
        });
        if result.is_err() {
            conn.pin().release();
        }
        drop(guard);
        let pending = cell.into_inner();
        let cleanup = if result.is_ok() {
            &pending.unlink
        } else {
            &pending.created
        };
        for p in cleanup {
            files::unlink(p);
        }
        if let Some(g) = &self.gens {
            for &h in &pending.changed {
                g.bump(h);
            }
            if pending.changed_all {
                g.bump_all();
            }
        }
        if wal_too_big {
            self.restart_wal(&conn);
        }
        result
    }

    /// Tells the checkpointer about a commit on `conn`; releases `conn`'s pin if a checkpoint
    /// was asked for or the WAL must be restarted (true: the caller restarts it).
    fn after_commit(&self, conn: &Conn<'_>) -> bool {
        let next = self.checkpointer.committed();
        if next != AfterCommit::Nothing {
            conn.pin().release();
        }
        conn.pin().committed(conn);
        next == AfterCommit::RestartWal
    }

    /// Back-pressure (see `checkpoint`), after a commit left the WAL too long: this writer
    /// restarts it, waiting for readers at most RESTART_WAIT (the whole busy timeout would
    /// stall every writer that long); on failure a later commit tries again.
    fn restart_wal(&self, conn: &Connection) {
        let _ = conn.busy_timeout(checkpoint::RESTART_WAIT);
        let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        let _ = conn.busy_timeout(self.busy_timeout());
    }

    /// Runs one statement as its own (autocommit) write transaction, outside any
    /// transaction of this handle on this thread (`None` inside one: the caller takes its
    /// general path). `key`'s change counter is bumped before and after, as a write
    /// transaction does for each key it changes (see `memory`). Returns the rows changed.
    ///
    /// For a statement whose trigger may abort it midway (a `DELETE` of a row, which
    /// updates the counters), SQLite keeps a statement journal inside `BEGIN IMMEDIATE`:
    /// a copy of each page the statement changes, a fifth of a `delete`. As the whole
    /// transaction it needs none, unless another statement of the connection is still
    /// reading: so the statement runs without the connection's pin (see `pin`; with it, a
    /// `delete` was 76,044 instructions instead of 52,207).
    pub(crate) fn write_alone(
        &self,
        key: &[u8],
        which: Hot,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<usize>> {
        if self.joined(|_, _| ()).is_some() {
            return Ok(None);
        }
        let conn = self.conn()?;
        let hash = self.gens.as_ref().map(|g| {
            let h = memory::key_hash(key);
            g.bump(h);
            h
        });
        let n = with_retry_for(self.retry_budget(), || {
            prepared::with(&conn, which, |s| s.execute(params))
        });
        if let (Some(g), Some(h)) = (&self.gens, hash) {
            g.bump(h);
        }
        let n = n?;
        if n > 0 && self.after_commit(&conn) {
            self.restart_wal(&conn);
        }
        Ok(Some(n))
    }

    /// Registers a change to `key`'s row inside a write transaction: invalidates copies of
    /// it now and again when the transaction ends (see `memory`).
    pub(crate) fn changed(&self, p: &mut Pending, key: &[u8]) {
        if let Some(g) = &self.gens {
            let h = memory::key_hash(key);
            g.bump(h);
            p.changed.push(h);
        }
    }

    /// Registers changes to rows that cannot be named: invalidates every copy.
    pub(crate) fn changed_all(&self, p: &mut Pending) {
        if let Some(g) = &self.gens {
            g.bump_all();
            p.changed_all = true;
        }
    }
}

thread_local! {
    /// Transactions open on this thread: (address of the [`Inner`], its connection, its
    /// pending files). Pushed and popped by [`OpenTx`] only.
    static OPEN: RefCell<Vec<OpenEntry>> = const { RefCell::new(Vec::new()) };
}

type OpenEntry = (usize, *const Connection, *const RefCell<Pending>);

/// Registers a transaction as open on this thread for as long as it lives, so that calls on
/// the same cache made inside it join it (see [`Inner::joined`]).
pub(crate) struct OpenTx(());

impl OpenTx {
    pub(crate) fn new(inner: &Inner, conn: &Connection, pending: &RefCell<Pending>) -> OpenTx {
        let e: OpenEntry = (inner as *const Inner as usize, conn, pending);
        OPEN.with(|o| o.borrow_mut().push(e));
        OpenTx(())
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        OPEN.with(|o| o.borrow_mut().pop());
    }
}
