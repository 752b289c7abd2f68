//! Background WAL checkpoints, so a writer never pays for copying the WAL back into the
//! database and its fsync.
//!
//! Invariant: connections of this crate run with `wal_autocheckpoint = 0` and report the
//! WAL's length after each of their commits through SQLite's WAL hook ([`Checkpointer::watch`]),
//! which costs no system call. Each open [`Cache`](super::Cache) handle owns one thread that
//! runs a PASSIVE checkpoint (never blocks readers or writers) each time the WAL has grown
//! by [`KICK_FRAMES`] frames through this handle's commits, and once a second while there
//! were commits. The thread ends when the handle drops.
//!
//! A PASSIVE checkpoint copies frames back but never resets the WAL while any reader still
//! uses it, and under steady load some reader always does: the WAL then grows without bound
//! (1.6 GB in 20 s of `benches/soak.sh` at a 20 MiB size limit). So a commit that leaves
//! more than [`WAL_RESTART_FRAMES`] frames in the WAL makes its writer (its transaction
//! over) run a RESTART checkpoint: it waits (at most [`RESTART_WAIT`]; then a later commit
//! tries again) for readers to move off the WAL, holding other writers off meanwhile
//! (back-pressure), so the next commit starts the WAL
//! from its beginning again and SQLite trims the file to `journal_size_limit`. This also
//! settles a large transaction at once, as SQLite's own autocheckpoint would. The thread
//! cannot do it: while it waits for the write lock it holds the checkpoint lock, and busy
//! writers starve it.
//!
//! The thread also releases the pins (`cache::pin`) of connections idle in the pool: one
//! to two [`SWEEP_TICK`]s after their last write, and all of them before each checkpoint
//! (a pinned read mark would stop it short).
//!
//! Not TRUNCATE: a WAL truncated to zero bytes makes every following commit append to
//! the file, and appending (block allocation, new page-cache pages) cost `set` more than
//! overwriting the WAL in place (38 µs vs 23 µs per 1 KiB `set` in
//! `STORE_COMPARE_PROFILE_SETS=1 store_compare`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::cache::{SWEEP_TICK, Sweep};
use super::schema;

/// Frames (pages) in the WAL after a commit from which the thread is asked to checkpoint.
pub(crate) const KICK_FRAMES: u64 = 1024;
/// Frames in the WAL above which the committing writer restarts it (`journal_size_limit`
/// in 4 KiB pages).
pub(crate) const WAL_RESTART_FRAMES: u64 = schema::JOURNAL_SIZE_LIMIT / 4096;
/// While the WAL stays over [`WAL_RESTART_FRAMES`], a writer tries to restart it again each
/// time it has grown by this many frames (the first over-limit commit always tries).
pub(crate) const RESTART_STEP: u64 = 512;
/// Longest a writer waits for readers to leave the WAL in one RESTART attempt.
pub(crate) const RESTART_WAIT: Duration = Duration::from_millis(200);
/// Idle interval after which pending commits are checkpointed anyway.
const IDLE: Duration = Duration::from_secs(1);

/// What the committing writer does after [`Checkpointer::committed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterCommit {
    /// Nothing more.
    Nothing,
    /// A checkpoint was asked of the thread: the writer's pin must not stop it.
    Checkpointing,
    /// The WAL is too long: the writer restarts it (see the module comment).
    RestartWal,
}

/// Why the thread is woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// The WAL grew by [`KICK_FRAMES`].
    Checkpoint,
    /// A connection went idle in the pool with a pin.
    Sweep,
}

/// Releases pins of idle pooled connections; true while some are still held.
pub(crate) type Sweeper = Box<dyn Fn(Sweep) -> bool + Send + Sync>;

/// Handle to the checkpoint thread.
pub(crate) struct Checkpointer {
    tx: Mutex<Option<SyncSender<Wake>>>,
    /// The pool's sweep, set once the pool exists.
    sweeper: Arc<std::sync::OnceLock<Sweeper>>,
    /// WAL length in frames after the latest commit of any of this handle's connections.
    frames: Arc<AtomicU64>,
    /// WAL length at the last restart attempt.
    tried_at: AtomicU64,
    /// WAL length at the last checkpoint request.
    kicked_at: AtomicU64,
    dirty: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    pub(crate) fn start(dir: PathBuf) -> Checkpointer {
        // Two pending requests are enough (one of each kind): requests made while one waits
        // are the same request.
        let (tx, rx) = mpsc::sync_channel::<Wake>(2);
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = dirty.clone();
        let sweeper = Arc::new(std::sync::OnceLock::<Sweeper>::new());
        let sweep = sweeper.clone();
        let thread = std::thread::Builder::new()
            .name("hoard-store-checkpoint".into())
            .spawn(move || {
                let Ok(conn) = schema::open_connection(&dir, 0, 16) else {
                    return;
                };
                let sweep = |which| sweep.get().is_some_and(|f| f(which));
                let mut pinned = false;
                let mut idle_at = std::time::Instant::now() + IDLE;
                loop {
                    let until_idle = idle_at.saturating_duration_since(std::time::Instant::now());
                    let wait = if pinned {
                        until_idle.min(SWEEP_TICK)
                    } else {
                        until_idle
                    };
                    match rx.recv_timeout(wait) {
                        Ok(Wake::Checkpoint) => {}
                        Ok(Wake::Sweep) => {
                            pinned = true;
                            continue;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if pinned {
                                pinned = sweep(Sweep::Idle);
                            }
                            if std::time::Instant::now() < idle_at {
                                continue;
                            }
                            idle_at = std::time::Instant::now() + IDLE;
                            if !flag.load(Ordering::Relaxed) {
                                continue;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    flag.store(false, Ordering::Relaxed);
                    pinned = sweep(Sweep::All);
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok();
        Checkpointer {
            tx: Mutex::new(Some(tx)),
            sweeper,
            frames: Arc::new(AtomicU64::new(0)),
            tried_at: AtomicU64::new(0),
            kicked_at: AtomicU64::new(0),
            dirty,
            thread: Mutex::new(thread),
        }
    }

    /// Registers the WAL hook on `conn` (after `wal_autocheckpoint`, which replaces it).
    pub(crate) fn watch(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let frames = self.frames.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(pages.max(0) as u64, Ordering::Relaxed);
            Ok(())
        }))
    }

    /// Gives the thread the pool's sweep (once; later calls are ignored).
    pub(crate) fn sweep_with(&self, sweeper: Sweeper) {
        let _ = self.sweeper.set(sweeper);
    }

    /// A connection went idle in the pool with a pin the thread does not know of.
    pub(crate) fn sweep_soon(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            // Full: the thread is woken anyway. Gone: stopping, the pool goes too.
            let _ = tx.try_send(Wake::Sweep);
        }
    }

    /// Called after each commit of the handle. [`AfterCommit::RestartWal`] when the WAL is
    /// over [`WAL_RESTART_FRAMES`] (on the first such commit, then every [`RESTART_STEP`]
    /// frames): the caller should run a RESTART checkpoint itself, waiting at most
    /// [`RESTART_WAIT`], after its transaction ended.
    pub(crate) fn committed(&self) -> AfterCommit {
        self.dirty.store(true, Ordering::Relaxed);
        let frames = self.frames.load(Ordering::Relaxed);
        // One request per KICK_FRAMES of growth (each checkpoint ends in an fsync). Over the
        // restart limit the writers restart the WAL themselves; the thread would only hold
        // the checkpoint lock they need.
        let kicked = self.kicked_at.load(Ordering::Relaxed);
        // Shorter than at the last request: the WAL started again.
        let base = if frames < kicked { 0 } else { kicked };
        let mut next = AfterCommit::Nothing;
        if frames >= base + KICK_FRAMES && frames <= WAL_RESTART_FRAMES {
            self.kicked_at.store(frames, Ordering::Relaxed);
            if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                // Full: a request is already pending. Gone: the thread could not open a
                // connection, and the writers' RESTART still bounds the WAL.
                let _ = tx.try_send(Wake::Checkpoint);
            }
            next = AfterCommit::Checkpointing;
        }
        if frames <= WAL_RESTART_FRAMES {
            self.tried_at.store(0, Ordering::Relaxed);
            return next;
        }
        let tried = self.tried_at.load(Ordering::Relaxed);
        if (tried == 0 || frames >= tried + RESTART_STEP)
            && self.tried_at.swap(frames, Ordering::Relaxed) == tried
        {
            return AfterCommit::RestartWal;
        }
        next
    }

    /// Stops the thread and waits for it (its connection closes before the handle is gone).
    pub(crate) fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocheckpoint_is_off_and_stop_joins_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_connection(dir.path(), 0, 16).unwrap();
        schema::migrate(&mut conn).unwrap();
        let auto: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "commits never checkpoint inline");
        let c = Checkpointer::start(dir.path().to_path_buf());
        c.watch(&mut conn).unwrap();
        for i in 1..=256 {
            // (A value equal to the stored one writes no page, and then no hook runs.)
            conn.execute("UPDATE counters SET hits = ?1", [i as i64])
                .unwrap();
            assert_eq!(
                c.committed(),
                AfterCommit::Nothing,
                "a small WAL needs no help"
            );
            assert!(c.frames.load(Ordering::Relaxed) > 0, "the hook reports");
        }
        // One transaction of more than WAL_RESTART_FRAMES pages: its writer must restart
        // the WAL.
        conn.execute_batch(&format!(
            "CREATE TABLE big(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO big SELECT randomblob(4000) FROM n;",
            WAL_RESTART_FRAMES + 100
        ))
        .unwrap();
        assert_eq!(c.committed(), AfterCommit::RestartWal);
        // The thread may be running the checkpoint a commit above asked for: then RESTART
        // reports busy (first column 1) and must be asked again (bounded).
        for _ in 0..200 {
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                .unwrap();
            if busy == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        conn.execute("UPDATE counters SET hits = 0", []).unwrap();
        // (hits was 256: this commit writes a page.)
        assert!(
            c.frames.load(Ordering::Relaxed) < KICK_FRAMES,
            "the WAL started again from its beginning"
        );
        assert_eq!(c.committed(), AfterCommit::Nothing);
        c.stop();
        // The thread is gone; the WAL is intact and can be checkpointed.
        let (_, log, done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(log, done);
        assert!(log > 0);
    }
}
