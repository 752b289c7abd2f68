//! Background WAL checkpoints, so a writer never pays for copying the WAL back into the
//! database and its fsync.
//!
//! Invariant: connections of this crate run with `wal_autocheckpoint = 0`; each open
//! [`Cache`](super::Cache) handle owns one thread that runs a PASSIVE checkpoint (never
//! blocks readers or writers) after every [`CHECKPOINT_EVERY`] commits of this handle and
//! once a second while there were commits. The thread ends when the handle drops.
//!
//! A PASSIVE checkpoint copies frames back but never resets the WAL while any reader still
//! uses it, and under steady load some reader always does: the WAL then grows without bound
//! (1.6 GB in 20 s of `benches/soak.sh` at a 20 MiB size limit). So writers look at the
//! WAL's size every [`WAL_SIZE_CHECK_EVERY`] commits and, above [`WAL_RESTART_BYTES`], the
//! committing writer (its transaction over) runs a RESTART checkpoint: it waits (busy
//! timeout) for readers to move off the WAL, holding other writers off meanwhile
//! (back-pressure), so the next commit starts the WAL from its beginning again and SQLite
//! trims the file to `journal_size_limit`. This thread cannot do it: while it waits for
//! the write lock it holds the checkpoint lock, and busy writers starve it.
//!
//! Not TRUNCATE: a WAL truncated to zero bytes makes every following commit append to
//! the file, and appending (block allocation, new page-cache pages) cost `set` more than
//! overwriting the WAL in place (38 µs vs 23 µs per 1 KiB `set` in
//! `STORE_COMPARE_PROFILE_SETS=1 store_compare`). (Checkpointing every 64 commits
//! instead of 256 changed nothing measurable and costs more CPU.)

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::schema;

/// Commits of one handle between checkpoint requests.
pub(crate) const CHECKPOINT_EVERY: u64 = 256;
/// WAL size above which a writer resets it with a RESTART checkpoint (`journal_size_limit`).
pub(crate) const WAL_RESTART_BYTES: u64 = schema::JOURNAL_SIZE_LIMIT;
/// Commits of one handle between two looks at the WAL's size.
pub(crate) const WAL_SIZE_CHECK_EVERY: u64 = 32;
/// Idle interval after which pending commits are checkpointed anyway.
const IDLE: Duration = Duration::from_secs(1);

/// Handle to the checkpoint thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    wal: PathBuf,
    tx: Mutex<Option<Sender<()>>>,
    commits: AtomicU64,
    dirty: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    pub(crate) fn start(dir: PathBuf) -> Checkpointer {
        let wal = dir.join(format!("{}-wal", schema::DB_FILE));
        let (tx, rx) = mpsc::channel::<()>();
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = dirty.clone();
        let thread = std::thread::Builder::new()
            .name("hoard-store-checkpoint".into())
            .spawn(move || {
                let Ok(conn) = schema::open_connection(&dir, 0, 16) else {
                    return;
                };
                loop {
                    match rx.recv_timeout(IDLE) {
                        Ok(()) => {}
                        Err(RecvTimeoutError::Timeout) if flag.load(Ordering::Relaxed) => {}
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    flag.store(false, Ordering::Relaxed);
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok();
        Checkpointer {
            wal,
            tx: Mutex::new(Some(tx)),
            commits: AtomicU64::new(0),
            dirty,
            thread: Mutex::new(thread),
        }
    }

    /// Called after each commit of the handle. True when the WAL is over
    /// [`WAL_RESTART_BYTES`]: the caller should run a RESTART checkpoint itself, after its
    /// transaction ended.
    pub(crate) fn committed(&self) -> bool {
        self.dirty.store(true, Ordering::Relaxed);
        let n = self.commits.fetch_add(1, Ordering::Relaxed);
        if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1
            && let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            let _ = tx.send(());
        }
        n % WAL_SIZE_CHECK_EVERY == WAL_SIZE_CHECK_EVERY - 1
            && std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > WAL_RESTART_BYTES)
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
        for i in 0..CHECKPOINT_EVERY {
            conn.execute("UPDATE counters SET hits = ?1", [i as i64])
                .unwrap();
            assert!(!c.committed(), "a small WAL needs no help");
        }
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
