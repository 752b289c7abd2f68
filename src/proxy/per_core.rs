//! The per-core mode's other threads (`scheduler = "per-core"`, more than one thread): each
//! runs a single-threaded runtime that accepts on its own listener of the shared port
//! (`listeners`) and serves those connections itself, with the proxy's one [`Admission`]
//! (connection slots, `allow`, refusals) and one state (store, memory front, coalescing).
//!
//! Invariants: on shutdown every sibling stops accepting before the main runtime waits for
//! the connections to end (so no connection is admitted after that wait began), and each
//! sibling keeps running its connections, fills and refreshes until the main runtime has
//! finished its whole shutdown (they may be what it waits for); only then do the threads end.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::admission::{Admission, accept};
use crate::runtime::Siblings;

/// The running siblings.
pub(super) struct Cores {
    /// `false` once the siblings are to stop accepting.
    accepting: watch::Sender<bool>,
    /// Closed when every sibling's accept loop has ended (each holds a sender).
    accepts_ended: mpsc::Receiver<()>,
    /// `true` once the main runtime's shutdown is done.
    finished: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Cores {
    /// Start a sibling for each listener. A sibling that cannot start is logged and left
    /// out (its listener closes: the kernel sends its share to the others).
    pub(super) fn start(
        siblings: &Siblings,
        listeners: Vec<std::net::TcpListener>,
        admission: &Arc<Admission>,
    ) -> Cores {
        let (accepting, accepting_rx) = watch::channel(true);
        let (finished, finished_rx) = watch::channel(false);
        let (ended_tx, accepts_ended) = mpsc::channel(1);
        let mut threads = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let index = i + 1;
            let admission = admission.clone();
            let mut accepting = accepting_rx.clone();
            let mut finished = finished_rx.clone();
            let ended = ended_tx.clone();
            let started = siblings.start(index, move || async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => {
                        let stop = async {
                            let _ = accepting.wait_for(|a| !*a).await;
                        };
                        accept(&l, &admission, index, stop).await;
                    }
                    Err(e) => tracing::error!(index, error = %e, "per-core listener unusable"),
                }
                drop(admission);
                drop(ended);
                let _ = finished.wait_for(|f| *f).await;
            });
            match started {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(index, error = %e, "per-core thread not started"),
            }
        }
        Cores {
            accepting,
            accepts_ended,
            finished,
            threads,
        }
    }

    /// Tell every sibling to stop accepting, and wait until each has (and has let go of the
    /// admission, whose connection watcher the shutdown waits on).
    pub(super) async fn stop_accepting(&mut self) {
        let _ = self.accepting.send(false);
        while self.accepts_ended.recv().await.is_some() {}
    }

    /// The main runtime's shutdown is done: let the siblings end, and wait for their threads.
    pub(super) async fn finish(self) {
        let _ = self.finished.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a per-core thread panicked");
                }
            }
        })
        .await;
    }
}
