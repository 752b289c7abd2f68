//! A client socket whose task has just read defers its next write by one scheduler round, so
//! the answers to the requests that became ready together leave together.
//!
//! Why: on a loaded proxy the runtime reads a round of requests (every connection the last
//! poll of the socket driver found ready) and answers each within its task's poll. Written at
//! once, each answer wakes the client again: a client on another CPU that has just handled
//! the previous answer is asleep in `epoll_wait`, and waking it costs the writing CPU an
//! inter-processor interrupt inside `write` (`sock_def_readable`; about a quarter of hoard's
//! CPU per 1 KiB hit under `wrk -c32` in a VM, `perf record`). Deferred by one round, the
//! round's answers are written back to back after all its requests were handled, and a client
//! woken by the first is still busy with it when the others arrive.
//!
//! Invariants: at most one deferral between two writes that reach the socket (the next write
//! after a deferral goes through, whatever was read in between: a client that keeps sending,
//! an upload or a tunnel, can never hold its own answers back); a deferral wakes its own task
//! before returning `Pending`, so it waits for nothing but the scheduler; nothing is buffered
//! here (a deferred write consumed no bytes, and flush and shutdown go straight through).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io`, deferring the first write after each read by one round of the scheduler.
#[derive(Debug)]
pub struct WriteRound<T> {
    io: T,
    turn: Turn,
}

/// Where a stream is between reading and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Nothing read since the last write: writes go through.
    Quiet,
    /// Bytes were read since the last write: the next write waits a round.
    Read,
    /// A write waited a round: the next one goes through, whatever is read meanwhile.
    Deferred,
}

impl<T> WriteRound<T> {
    pub fn new(io: T) -> Self {
        WriteRound {
            io,
            turn: Turn::Quiet,
        }
    }

    fn on_read(&mut self) {
        if self.turn == Turn::Quiet {
            self.turn = Turn::Read;
        }
    }

    /// Writes through `write` unless it is the first after a read: then the task is woken to
    /// come back after the tasks already scheduled, and nothing is written now.
    fn write<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>>
    where
        T: Unpin,
    {
        if self.turn == Turn::Read {
            self.turn = Turn::Deferred;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let res = write(Pin::new(&mut self.io), cx);
        if res.is_ready() {
            self.turn = Turn::Quiet;
        }
        res
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteRound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteRound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// Counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(s: &mut WriteRound<tokio::io::DuplexStream>, cx: &mut Context<'_>) -> Poll<usize> {
        match Pin::new(s).poll_write(cx, b"answer") {
            Poll::Ready(r) => Poll::Ready(r.unwrap()),
            Poll::Pending => Poll::Pending,
        }
    }

    fn read(s: &mut WriteRound<tokio::io::DuplexStream>, cx: &mut Context<'_>) -> usize {
        let mut b = [0u8; 64];
        let mut rb = ReadBuf::new(&mut b);
        match Pin::new(s).poll_read(cx, &mut rb) {
            Poll::Ready(r) => {
                r.unwrap();
                rb.filled().len()
            }
            Poll::Pending => 0,
        }
    }

    #[test]
    fn the_first_write_after_a_read_waits_one_round_and_wakes_its_task() {
        let (a, mut peer) = tokio::io::duplex(1024);
        let mut s = WriteRound::new(a);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);

        // Nothing read yet: writes go through.
        assert_eq!(write(&mut s, &mut cx), Poll::Ready(6));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);

        // A read, then the first write is deferred (the task woken to come back), the next
        // goes through, and so does every write until the next read.
        assert!(Pin::new(&mut peer).poll_write(&mut cx, b"GET").is_ready());
        assert_eq!(read(&mut s, &mut cx), 3);
        assert_eq!(write(&mut s, &mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(write(&mut s, &mut cx), Poll::Ready(6));
        assert_eq!(write(&mut s, &mut cx), Poll::Ready(6));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);

        // A read that found nothing does not arm it.
        assert_eq!(read(&mut s, &mut cx), 0);
        assert_eq!(write(&mut s, &mut cx), Poll::Ready(6));

        // A client that keeps sending cannot hold its answers back: after one deferral the
        // next write goes through, however much was read in between.
        assert!(Pin::new(&mut peer).poll_write(&mut cx, b"more").is_ready());
        assert_eq!(read(&mut s, &mut cx), 4);
        let woken = count.0.load(Ordering::SeqCst);
        assert_eq!(write(&mut s, &mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), woken + 1);
        assert!(Pin::new(&mut peer).poll_write(&mut cx, b"again").is_ready());
        assert_eq!(read(&mut s, &mut cx), 5);
        assert_eq!(write(&mut s, &mut cx), Poll::Ready(6));

        // The deferred write consumed nothing: the peer got exactly the written answers.
        let mut got = [0u8; 64];
        let mut rb = ReadBuf::new(&mut got);
        assert!(Pin::new(&mut peer).poll_read(&mut cx, &mut rb).is_ready());
        assert_eq!(rb.filled(), b"answeransweransweransweranswer");
    }
}
