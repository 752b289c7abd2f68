//! Response bodies the proxy sends: empty, one buffer, a channel fed by a task (store reads,
//! cache fills), or an upstream body passed straight through.
//!
//! Invariant: an error frame from the source surfaces as a body error, so hyper aborts the
//! client connection instead of ending a short body cleanly.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Boxed error type for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Chunk size for reading value files.
pub const FILE_CHUNK: usize = 256 * 1024;

/// A response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// No bytes.
    Empty,
    /// One buffer.
    Full(Option<Bytes>),
    /// Chunks sent by another task; `Err` aborts the response.
    Channel {
        /// Receiving end.
        rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        /// Expected total length, if known.
        len: Option<u64>,
    },
    /// A hyper body (upstream response or client request) streamed through unchanged.
    Incoming(hyper::body::Incoming),
    /// An origin response body streamed through, cut with an error when no chunk arrives
    /// within the chunk timeout or the whole body takes longer than the body timeout.
    Origin(Box<TimedBody>),
}

/// An origin body under a per-chunk and a total deadline.
#[derive(Debug)]
pub struct TimedBody {
    body: hyper::body::Incoming,
    chunk: std::time::Duration,
    deadline: Option<tokio::time::Instant>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn next_wake(&self) -> tokio::time::Instant {
        let chunk = tokio::time::Instant::now() + self.chunk;
        self.deadline.map_or(chunk, |d| d.min(chunk))
    }
}

impl ProxyBody {
    /// A body of one buffer.
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }

    /// An origin body: an error when no chunk comes within `chunk` or the whole body is not
    /// done within `total` (from now).
    pub fn origin(
        body: hyper::body::Incoming,
        chunk: std::time::Duration,
        total: Option<std::time::Duration>,
    ) -> Self {
        let deadline = total.map(|t| tokio::time::Instant::now() + t);
        let mut t = TimedBody {
            body,
            chunk,
            deadline,
            sleep: Box::pin(tokio::time::sleep(chunk)),
        };
        let wake = t.next_wake();
        t.sleep.as_mut().reset(wake);
        ProxyBody::Origin(Box::new(t))
    }

    /// A channel body and its sender.
    pub fn channel(
        capacity: usize,
        len: Option<u64>,
    ) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ProxyBody::Channel { rx, len })
    }

    /// Stream a blocking reader (a store value of `len` bytes whose xxh3-64 is `digest`) from
    /// a blocking thread. The last chunk is held back until the digest matches; on a mismatch
    /// or a short read the body ends in an error (the client's connection is aborted, never
    /// handed wrong bytes that look complete) and `on_corrupt` runs.
    pub fn from_reader<R: Read + Send + 'static>(
        reader: R,
        len: u64,
        digest: u64,
        on_corrupt: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self::stream_reader(reader, len, Some(digest), on_corrupt)
    }

    /// Like [`from_reader`](Self::from_reader) for part of a value already verified in full
    /// (a byte range): a short read still aborts the body, but there is no digest to check.
    pub fn from_verified_reader<R: Read + Send + 'static>(reader: R, len: u64) -> Self {
        Self::stream_reader(reader, len, None, || {})
    }

    fn stream_reader<R: Read + Send + 'static>(
        mut reader: R,
        len: u64,
        digest: Option<u64>,
        on_corrupt: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (tx, body) = Self::channel(4, Some(len));
        tokio::task::spawn_blocking(move || {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut remaining = len;
            while remaining > 0 {
                let want = remaining.min(FILE_CHUNK as u64) as usize;
                // `read_to_end` fills spare capacity without zeroing it first.
                let mut buf = Vec::with_capacity(want);
                let mut res = match (&mut reader).take(want as u64).read_to_end(&mut buf) {
                    Ok(n) if n == want => Ok(Bytes::from(buf)),
                    Ok(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "stored body shorter than recorded",
                    )),
                    Err(e) => Err(e),
                };
                if let (Ok(b), Some(digest)) = (&res, digest) {
                    hasher.update(b);
                    if remaining == want as u64 && hasher.digest() != digest {
                        res = Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "stored body does not match its digest",
                        ));
                    }
                }
                let failed = res.is_err();
                if failed {
                    on_corrupt();
                    let _ = tx.blocking_send(res);
                    return;
                }
                if tx.blocking_send(res).is_err() {
                    return;
                }
                remaining -= want as u64;
            }
        });
        body
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Channel { rx, .. } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ProxyBody::Incoming(inc) => match Pin::new(inc).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ProxyBody::Origin(t) => match Pin::new(&mut t.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let wake = t.next_wake();
                    t.sleep.as_mut().reset(wake);
                    Poll::Ready(Some(Ok(f)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => match t.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "origin body timed out",
                    ))))),
                    Poll::Pending => Poll::Pending,
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Channel { .. } => false,
            ProxyBody::Incoming(inc) => inc.is_end_stream(),
            ProxyBody::Origin(t) => t.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Channel { len: Some(n), .. } => SizeHint::with_exact(*n),
            ProxyBody::Channel { len: None, .. } => SizeHint::default(),
            ProxyBody::Incoming(inc) => inc.size_hint(),
            ProxyBody::Origin(t) => t.body.size_hint(),
        }
    }
}
