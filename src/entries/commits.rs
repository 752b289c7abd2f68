//! Group commit: fills that complete while another fill's write transaction runs are
//! committed together, in one transaction on one blocking thread.
//!
//! Invariants: a fill waits only for its own batch; a batch holds at most [`MAX_BATCH`] fills
//! (bounding how long one transaction holds the store's write lock); a batch is all or
//! nothing: when one fill of it fails (or the commit does), the transaction rolls back and
//! every fill of the batch reports a failure (none is stored; the failing one reports its own
//! error). Under no load a fill commits alone, as before: nothing waits for company.
//!
//! Why: under many concurrent misses each fill paid a `BEGIN IMMEDIATE ... COMMIT` of its
//! own (WAL frames for the same index pages again, the `-shm` locks, a blocking-pool hop);
//! a batch pays them once.

use std::sync::{Arc, Mutex};

use crate::store::{Cache, Error, Result};

/// Fills committed in one transaction at most.
pub const MAX_BATCH: usize = 64;

/// One fill's commit, run inside the batch's transaction.
pub type Job<T> = Box<dyn FnOnce() -> Result<T> + Send>;

type Reply<T> = tokio::sync::oneshot::Sender<Result<T>>;

/// The queue of fills waiting to commit, and whether a blocking thread is draining it.
pub struct Commits<T> {
    state: Mutex<Queue<T>>,
}

struct Queue<T> {
    jobs: Vec<(Job<T>, Reply<T>)>,
    draining: bool,
}

impl<T> std::fmt::Debug for Commits<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("Commits")
            .field("queued", &q.jobs.len())
            .field("draining", &q.draining)
            .finish()
    }
}

impl<T> Default for Commits<T> {
    fn default() -> Self {
        Commits {
            state: Mutex::new(Queue {
                jobs: Vec::new(),
                draining: false,
            }),
        }
    }
}

impl<T> Commits<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Send + 'static> Commits<T> {
    /// Run `job` inside a write transaction of `store`, with whatever other jobs are queued
    /// by the time a blocking thread takes it.
    pub async fn run(self: &Arc<Self>, store: &Cache, job: Job<T>) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.jobs.push((job, tx));
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            let (me, store) = (self.clone(), store.clone());
            drop(tokio::task::spawn_blocking(move || me.drain(&store)));
        }
        rx.await
            .unwrap_or_else(|_| Err(other("the store's commit thread failed")))
    }

    /// Commit batches until the queue is empty (blocking).
    fn drain(&self, store: &Cache) {
        // Jobs cannot panic through here (`run_job`); should anything else, the queue must
        // not be left "being drained" by nobody: the jobs still queued fail (their replies
        // are dropped) and the next fill starts a drainer.
        struct Done<'a, T>(&'a Commits<T>);
        impl<T> Drop for Done<'_, T> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut q = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
                    q.draining = false;
                    q.jobs.clear();
                }
            }
        }
        let _done = Done(self);
        loop {
            let batch: Vec<(Job<T>, Reply<T>)> = {
                let mut q = self.lock();
                if q.jobs.is_empty() {
                    q.draining = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.jobs.drain(..n).collect()
            };
            commit_batch(store, batch);
        }
    }
}

/// One transaction for `batch` (a lone job runs as it would alone: its writes open their own).
fn commit_batch<T>(store: &Cache, batch: Vec<(Job<T>, Reply<T>)>) {
    let (jobs, replies): (Vec<Job<T>>, Vec<Reply<T>>) = batch.into_iter().unzip();
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let reply = replies.into_iter().next().expect("one reply");
        let _ = reply.send(run_job(job));
        return;
    }
    let mut done = Vec::with_capacity(jobs.len());
    let mut failed_at = None;
    let res = store.transact(|_| {
        for (i, job) in jobs.into_iter().enumerate() {
            match run_job(job) {
                Ok(v) => done.push(v),
                Err(e) => {
                    failed_at = Some(i);
                    return Err(e);
                }
            }
        }
        Ok(())
    });
    match res {
        Ok(()) => {
            for (reply, v) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok(v));
            }
        }
        Err(e) => {
            let mut e = Some(e);
            let first = failed_at.unwrap_or(0);
            for (i, reply) in replies.into_iter().enumerate() {
                let err = match (i == first, e.take()) {
                    (true, Some(e)) => e,
                    (_, taken) => {
                        e = taken;
                        other("another fill committed in the same transaction failed")
                    }
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// A job's result; a job that panics fails (its batch rolls back) instead of ending the drainer.
fn run_job<T>(job: Job<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
        .unwrap_or_else(|_| Err(other("a fill's commit panicked")))
}

fn other(msg: &str) -> Error {
    Error::Io(std::io::Error::other(msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        (dir, cache)
    }

    /// Jobs queued while a batch runs are committed together, each sees its own result,
    /// and every write is there afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions_and_all_land() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<u32>::default());
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (commits, cache) = (commits.clone(), cache.clone());
                tokio::spawn(async move {
                    let c = cache.clone();
                    let job: Job<u32> = Box::new(move || {
                        c.set(format!("k{i}").as_bytes(), b"v", None, None)?;
                        Ok(i)
                    });
                    commits.run(&cache, job).await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i as u32);
        }
        for i in 0..200 {
            assert!(
                cache.get(format!("k{i}").as_bytes()).unwrap().is_some(),
                "k{i}"
            );
        }
        assert!(!commits.lock().draining);
    }

    /// A batch is all or nothing: one failing job rolls back the others' writes and each
    /// fill of the batch reports a failure.
    #[test]
    fn a_failing_job_fails_its_whole_batch() {
        let (_dir, cache) = store();
        let mut batch: Vec<(Job<()>, Reply<()>)> = Vec::new();
        let mut rxs = Vec::new();
        for i in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let c = cache.clone();
            let job: Job<()> = Box::new(move || {
                c.set(format!("b{i}").as_bytes(), b"v", None, None)?;
                if i == 1 {
                    return Err(other("disk on fire"));
                }
                Ok(())
            });
            batch.push((job, tx));
            rxs.push(rx);
        }
        commit_batch(&cache, batch);
        let results: Vec<_> = rxs
            .into_iter()
            .map(|r| r.blocking_recv().unwrap())
            .collect();
        assert!(results.iter().all(|r| r.is_err()));
        assert!(
            results[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("disk on fire")
        );
        for i in 0..3 {
            assert!(
                cache.get(format!("b{i}").as_bytes()).unwrap().is_none(),
                "b{i} rolled back"
            );
        }
    }

    /// A panicking job fails alone (and its batch), and the queue stays usable at once.
    #[tokio::test]
    async fn a_panicking_job_leaves_the_queue_usable() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<()>::default());
        let boom: Job<()> = Box::new(|| panic!("job panicked"));
        assert!(commits.run(&cache, boom).await.is_err());
        let c = cache.clone();
        let fine: Job<()> = Box::new(move || {
            c.set(b"after", b"v", None, None)?;
            Ok(())
        });
        commits.run(&cache, fine).await.unwrap();
        assert!(cache.get(b"after").unwrap().is_some());
    }
}
