//! A fill whose response replaces a stored one hands its client the end of the response only
//! after the store's commit of the new row.
//!
//! Why: until that commit the old row is still the stored response, fresh, so a request that
//! arrives once the reloading client has its answer (on another connection, or in another
//! process on the same directory) would be a hit on the old body: the second request answered
//! version 2, the third version 1. A first miss has nothing older to serve meanwhile and
//! never waits (it is the benchmarked path).
//!
//! Bounded: a commit slower than the bound (a slow disk) does not hold the client; it gets
//! its end then, and an info line says so. A fill that fails or stores nothing ends the wait
//! at once (the signal is dropped): the client gets its body, the failure is logged as before.

use std::time::Duration;

use tokio::sync::oneshot;

/// The fill's side: dropped when the commit is over (stored, failed, or not attempted).
#[derive(Debug)]
pub struct CommitSignal {
    _done: oneshot::Sender<()>,
}

/// The client's side: what holds the end of its response until the commit.
#[derive(Debug)]
pub struct AfterCommit {
    done: oneshot::Receiver<()>,
    bound: Duration,
}

/// A signal for a fill's commit, and the wait for it, at most `bound`.
pub fn after_commit(bound: Duration) -> (CommitSignal, AfterCommit) {
    let (tx, rx) = oneshot::channel();
    (CommitSignal { _done: tx }, AfterCommit { done: rx, bound })
}

impl AfterCommit {
    /// Wait until the fill's commit is over, or the bound passed.
    pub async fn wait(self) {
        // Dropping the sender is the signal: `Err(RecvError)` is the usual outcome.
        if tokio::time::timeout(self.bound, self.done).await.is_err() {
            tracing::info!(
                bound = ?self.bound,
                "a replacing fill's commit took longer than response-timeout: its client gets \
                 the end of the response before the commit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_ends_when_the_signal_is_dropped() {
        let (signal, after) = after_commit(Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        let waiting = tokio::spawn(after.wait());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the wait ended before the commit");
        drop(signal);
        waiting.await.unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "waited for the bound"
        );
    }

    #[tokio::test]
    async fn the_wait_ends_at_the_bound_when_the_commit_takes_longer() {
        let (signal, after) = after_commit(Duration::from_millis(100));
        let t0 = std::time::Instant::now();
        after.wait().await;
        assert!(t0.elapsed() >= Duration::from_millis(100));
        drop(signal);
    }
}
