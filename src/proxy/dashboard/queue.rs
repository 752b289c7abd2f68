//! The queue between an event stream's feeding task and its socket, bounded in bytes: a
//! subscriber that reads nothing holds at most [`STREAM_BYTES`] of queued events, whatever
//! their size.
//!
//! Invariant: `queued` is the sum of the lengths of the chunks sent and not yet taken by the
//! socket side; a chunk that would take it over the budget is refused (the sender counts it
//! as dropped), never waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Bytes of events queued for one event stream at most (a few hundred access events of
/// ordinary URLs; 128 of the largest an event carries, see
/// [`AccessEvent::bound`](crate::proxy::metrics::AccessEvent::bound)).
pub const STREAM_BYTES: usize = 256 * 1024;
/// Chunks queued for one event stream at most, whatever their size.
const STREAM_CHUNKS: usize = 256;

/// Why a chunk was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The budget (bytes or chunks) is used up: the subscriber is behind.
    Full,
    /// The socket side is gone.
    Closed,
}

/// The feeding side.
#[derive(Debug)]
pub struct QueueTx {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// The socket side (inside the response body).
#[derive(Debug)]
pub struct QueueRx {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `budget` bytes (and [`STREAM_CHUNKS`] chunks).
pub fn queue(budget: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: queued.clone(),
            budget,
        },
        QueueRx { rx, queued },
    )
}

impl QueueTx {
    /// Queue `chunk` if it fits the budget; never waits.
    pub fn try_send(&self, chunk: Bytes) -> Result<(), Refused> {
        let len = chunk.len();
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        // Only this side adds, so checking then adding cannot overshoot.
        if self.queued.load(Ordering::Acquire) + len > self.budget {
            return Err(Refused::Full);
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        match self.tx.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => Refused::Full,
                    mpsc::error::TrySendError::Closed(_) => Refused::Closed,
                })
            }
        }
    }

    /// Bytes queued and not yet taken by the socket side.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Completes when the socket side is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl QueueRx {
    /// The next chunk; its bytes leave the budget.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx).map(|c| {
            if let Some(b) = &c {
                self.queued.fetch_sub(b.len(), Ordering::AcqRel);
            }
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn a_subscriber_that_reads_nothing_holds_at_most_the_budget() {
        let (tx, mut rx) = queue(10_000);
        let chunk = Bytes::from(vec![b'x'; 3_000]);
        let sent = (0..100)
            .filter(|_| tx.try_send(chunk.clone()).is_ok())
            .count();
        assert_eq!(sent, 3, "3 x 3,000 fit in 10,000, the rest dropped");
        assert_eq!(tx.queued(), 9_000);
        assert_eq!(tx.try_send(chunk.clone()), Err(Refused::Full));
        assert_eq!(tx.try_send(Bytes::from(vec![b'y'; 1_000])), Ok(()));
        assert_eq!(tx.queued(), 10_000);
        // Reading frees room.
        assert_eq!(
            poll_fn(|cx| rx.poll_recv(cx)).await.map(|b| b.len()),
            Some(3_000)
        );
        assert_eq!(tx.queued(), 7_000);
        assert_eq!(tx.try_send(chunk.clone()), Ok(()));
        // Small chunks are bounded by count too.
        let (tx, _rx) = queue(usize::MAX);
        let small = (0..1_000)
            .filter(|_| tx.try_send(Bytes::from_static(b"a")).is_ok())
            .count();
        assert_eq!(small, STREAM_CHUNKS);
        assert_eq!(tx.queued(), STREAM_CHUNKS);
        let (tx, rx) = queue(10);
        drop(rx);
        assert_eq!(tx.try_send(Bytes::from_static(b"a")), Err(Refused::Closed));
    }
}
