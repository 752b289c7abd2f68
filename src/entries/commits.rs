//! Group commit: fills that complete while another fill's write transaction runs are
//! committed together, in one transaction on one blocking thread.
//!
//! Invariants: a fill waits only for its own batch; a batch holds at most [`MAX_BATCH`] fills
//! (bounding how long one transaction holds the store's write lock); a batch is all or
//! nothing: when one fill of it fails (or the commit does), the transaction rolls back and
//! every fill of the batch reports a failure (none is stored; the failing one reports its own
//! error). Under no load a fill commits alone, as before: nothing waits for company on a
//! clock. The first fill of an idle queue hands it to a blocking thread only after one pass of
//! the async scheduler ([`tokio::task::yield_now`]), so the fills that complete in that same
//! pass (the other connections' misses answered in it) join its transaction.
//!
//! Why: under many concurrent misses each fill paid a `BEGIN IMMEDIATE ... COMMIT` of its
//! own (WAL frames for the same index pages again, the `-shm` locks, a blocking-pool hop);
//! a batch pays them once. Without the pass, a drainer started at once on an idle queue took
//! the first fill alone, and under 32 connections about half the transactions held one fill.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::{Cache, Error, Result};

/// Fills committed in one transaction at most.
pub const MAX_BATCH: usize = 64;

/// One fill's commit, run inside the batch's transaction.
pub type Job<T> = Box<dyn FnOnce(&Batch<'_>) -> Result<T> + Send>;

/// What the fills of one transaction learn once for all of them.
#[derive(Debug)]
pub struct Batch<'a> {
    store: &'a Cache,
    /// Whether the store holds any partial row, once asked.
    partial_rows: std::cell::OnceCell<bool>,
}

impl<'a> Batch<'a> {
    /// The batch of one write transaction on `store` (begun by the caller).
    pub fn new(store: &'a Cache) -> Self {
        Batch {
            store,
            partial_rows: std::cell::OnceCell::new(),
        }
    }

    /// Whether the store holds any partial row (`partial.rs`): read on the first ask, one
    /// index lookup per transaction instead of one per fill. The answer holds for the
    /// whole transaction: it holds the write lock, so no other fill or process adds one,
    /// and a fill's job only ever removes a partial row.
    pub fn partial_rows(&self) -> Result<bool> {
        if let Some(&known) = self.partial_rows.get() {
            return Ok(known);
        }
        let any = super::partial::any_stored(self.store)?;
        Ok(*self.partial_rows.get_or_init(|| any))
    }
}

/// What a fill does with its commit's result, on the committing thread (it must not block).
pub type Then<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// Where a job's result goes: a fill awaiting it ([`Commits::run`]) or a callback
/// ([`Commits::submit`]).
enum Reply<T> {
    Wait(tokio::sync::oneshot::Sender<Result<T>>),
    Then(Then<T>),
}

impl<T> Reply<T> {
    fn send(self, r: Result<T>) {
        match self {
            Reply::Wait(tx) => drop(tx.send(r)),
            Reply::Then(f) => f(r),
        }
    }
}

/// The queue of fills waiting to commit, and whether a blocking thread is draining it.
pub struct Commits<T> {
    state: Mutex<Queue<T>>,
    /// Transactions run and fills committed in them (fills per transaction, for tests and
    /// measurement).
    transactions: AtomicU64,
    fills: AtomicU64,
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
            .field("transactions", &self.transactions.load(Ordering::Relaxed))
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
            transactions: AtomicU64::new(0),
            fills: AtomicU64::new(0),
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
        if self.queue(job, Reply::Wait(tx)) {
            // The drainer starts after one scheduler pass, or when this future is dropped.
            let start = StartDrainer(Some((self.clone(), store.clone())));
            tokio::task::yield_now().await;
            drop(start);
        }
        rx.await
            .unwrap_or_else(|_| Err(other("the store's commit thread failed")))
    }

    /// [`Commits::run`] without a task waiting: `then` receives the result on the committing
    /// thread. Outside a runtime the job fails (`then` is dropped uncalled).
    pub fn submit(self: &Arc<Self>, store: &Cache, job: Job<T>, then: Then<T>) {
        if self.queue(job, Reply::Then(then)) {
            let start = StartDrainer(Some((self.clone(), store.clone())));
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                drop(h.spawn(async move {
                    tokio::task::yield_now().await;
                    drop(start);
                }));
            }
        }
    }

    /// Queue a job; `true` when the queue was idle (the caller starts its drainer).
    fn queue(&self, job: Job<T>, reply: Reply<T>) -> bool {
        let mut q = self.lock();
        q.jobs.push((job, reply));
        !std::mem::replace(&mut q.draining, true)
    }

    /// (transactions, fills committed in them) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.transactions.load(Ordering::Relaxed),
            self.fills.load(Ordering::Relaxed),
        )
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
            self.transactions.fetch_add(1, Ordering::Relaxed);
            self.fills.fetch_add(batch.len() as u64, Ordering::Relaxed);
            commit_batch(store, batch);
        }
    }
}

/// Starts the queue's drainer on a blocking thread when dropped: after the scheduler pass
/// [`Commits::run`] waits, or at once when that future is dropped during it (the queue must
/// never stay "being drained" by nobody). Outside a runtime the queued jobs fail instead.
struct StartDrainer<T: Send + 'static>(Option<(Arc<Commits<T>>, Cache)>);

impl<T: Send + 'static> Drop for StartDrainer<T> {
    fn drop(&mut self) {
        let Some((me, store)) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(move || me.drain(&store))),
            Err(_) => {
                let mut q = me.lock();
                q.draining = false;
                q.jobs.clear();
            }
        }
    }
}

/// One transaction for `batch`, a lone job too: its writes and the reads between them share
/// it (one `BEGIN`/`COMMIT`, and the connection's pin is kept, see the store's `pin`), and a
/// fill can take the change stamps of its rows inside it (`Cache::write_stamp`) to file them
/// in the memory front after the commit.
fn commit_batch<T>(store: &Cache, batch: Vec<(Job<T>, Reply<T>)>) {
    let (jobs, replies): (Vec<Job<T>>, Vec<Reply<T>>) = batch.into_iter().unzip();
    let mut done = Vec::with_capacity(jobs.len());
    let mut failed_at = None;
    let res = store.transact(|_| {
        let shared = Batch::new(store);
        for (i, job) in jobs.into_iter().enumerate() {
            match run_job(job, &shared) {
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
                reply.send(Ok(v));
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
                reply.send(Err(err));
            }
        }
    }
}

/// A job's result; a job that panics fails (its batch rolls back) instead of ending the drainer.
fn run_job<T>(job: Job<T>, batch: &Batch<'_>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(batch)))
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

    /// A job that sets `key` and answers `v`.
    fn set_job(cache: &Cache, key: String, v: u32) -> Job<u32> {
        let c = cache.clone();
        Box::new(move |_| {
            c.set(key.as_bytes(), b"v", None, None)?;
            Ok(v)
        })
    }

    /// `n` tasks each committing `<prefix><i>`: each sees its own result, and every write is
    /// there afterwards.
    async fn commit_keys(commits: &Arc<Commits<u32>>, cache: &Cache, prefix: &str, n: u32) {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (commits, cache) = (commits.clone(), cache.clone());
                let job = set_job(&cache, format!("{prefix}{i}"), i);
                tokio::spawn(async move { commits.run(&cache, job).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), i as u32);
        }
        for i in 0..n {
            let key = format!("{prefix}{i}");
            assert!(cache.get(key.as_bytes()).unwrap().is_some(), "{key}");
        }
    }

    /// Jobs queued while a batch runs are committed together, each sees its own result,
    /// and every write is there afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions_and_all_land() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<u32>::default());
        commit_keys(&commits, &cache, "k", 200).await;
        // Every fill was counted in a transaction, and the queue takes the next one (the
        // drainer may still be between its last reply and finding the queue empty: asserting
        // `!draining` here raced, 1 in ~100 runs under load).
        assert_eq!(commits.counts().1, 200);
        let last = set_job(&cache, "last".into(), 200);
        assert_eq!(commits.run(&cache, last).await.unwrap(), 200);
        assert!(cache.get(b"last").unwrap().is_some());
    }

    /// The fills that complete in one pass of the scheduler share its first transaction: 10
    /// tasks each committing one key on a one-thread runtime make one transaction of 10
    /// (the drainer used to start at once and take the first fill alone).
    #[tokio::test(flavor = "current_thread")]
    async fn fills_completing_in_one_scheduler_pass_share_one_transaction() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<u32>::default());
        commit_keys(&commits, &cache, "p", 10).await;
        assert_eq!(commits.counts(), (1, 10));
    }

    /// Fills handed over without a task ([`Commits::submit`]) get their results through
    /// their callbacks, after the commit, and those of one pass share a transaction.
    #[tokio::test(flavor = "current_thread")]
    async fn submitted_fills_are_answered_through_their_callbacks() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<u32>::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..5u32 {
            let job = set_job(&cache, format!("s{i}"), i);
            let (tx, c) = (tx.clone(), cache.clone());
            let then: Then<u32> = Box::new(move |r| {
                // Called after the transaction committed: the write is visible.
                let seen = c.get(format!("s{i}").as_bytes()).unwrap().is_some();
                tx.send((r.unwrap(), seen)).unwrap();
            });
            commits.submit(&cache, job, then);
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            got.push(r);
        }
        assert_eq!(got, (0..5).map(|i| (i, true)).collect::<Vec<_>>());
        assert_eq!(commits.counts(), (1, 5));
    }

    /// A fill dropped while it waits for the scheduler pass still starts the drainer: its
    /// job commits, and the queue takes the next fill (it is never left "being drained" by
    /// nobody).
    #[tokio::test(flavor = "current_thread")]
    async fn a_fill_dropped_before_the_drainer_starts_leaves_the_queue_usable() {
        let (_dir, cache) = store();
        let commits = Arc::new(Commits::<()>::default());
        let c = cache.clone();
        let first: Job<()> = Box::new(move |_| c.set(b"dropped", b"v", None, None).map(|_| ()));
        let mut run = Box::pin(commits.run(&cache, first));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            run.as_mut().poll(&mut cx).is_pending(),
            "waits for the pass"
        );
        drop(run);
        let c = cache.clone();
        let next: Job<()> = Box::new(move |_| c.set(b"next", b"v", None, None).map(|_| ()));
        commits.run(&cache, next).await.unwrap();
        assert!(cache.get(b"next").unwrap().is_some());
        assert!(cache.get(b"dropped").unwrap().is_some());
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
            let job: Job<()> = Box::new(move |_| {
                c.set(format!("b{i}").as_bytes(), b"v", None, None)?;
                if i == 1 {
                    return Err(other("disk on fire"));
                }
                Ok(())
            });
            batch.push((job, Reply::Wait(tx)));
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
        let boom: Job<()> = Box::new(|_| panic!("job panicked"));
        assert!(commits.run(&cache, boom).await.is_err());
        let c = cache.clone();
        let fine: Job<()> = Box::new(move |_| {
            c.set(b"after", b"v", None, None)?;
            Ok(())
        });
        commits.run(&cache, fine).await.unwrap();
        assert!(cache.get(b"after").unwrap().is_some());
    }
}
