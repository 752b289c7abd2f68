//! An I/O stream that reports the bytes it moves to an [`Observer`]: the client socket
//! (idle timeout, raw request-head scanning) and both ends of a CONNECT tunnel (tunnel idle
//! timeout) are wrapped in it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::task::{Context, Poll};
use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told when bytes move through an [`Observed`] stream.
pub trait Observer {
    /// `bytes` were just read.
    fn on_read(&self, bytes: &[u8]);
    /// Some bytes were just written.
    fn on_write(&self);
}

/// `io`, reporting to `observer`.
#[derive(Debug)]
pub struct Observed<T, O> {
    pub io: T,
    pub observer: O,
}

impl<T: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for Observed<T, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.observer.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for Observed<T, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.observer.on_write();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.observer.on_write();
        }
        res
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

/// When bytes last moved through an observed stream, either way (a tunnel, an admin
/// connection): the clock of their idle timeouts.
#[derive(Debug)]
pub struct LastMoved {
    start: Instant,
    ms: AtomicU64,
}

impl LastMoved {
    /// Nothing moved yet: now.
    pub fn new() -> Self {
        LastMoved {
            start: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }

    /// Bytes moved now.
    pub fn touch(&self) {
        self.ms
            .fetch_max(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When bytes last moved.
    pub fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
}

impl Observer for Arc<LastMoved> {
    fn on_read(&self, _: &[u8]) {
        self.touch();
    }

    fn on_write(&self) {
        self.touch();
    }
}
