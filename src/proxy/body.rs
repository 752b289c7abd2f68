//! Response bodies the proxy sends: empty, one buffer, a store value read on demand, a channel
//! fed by a cache fill, or an upstream body passed straight through.
//!
//! Invariants: an error frame from the source, or a source that stops before it said it was
//! done, surfaces as a body error, so hyper aborts the client connection instead of ending a
//! short body cleanly. No blocking thread ever waits on a client: a store value is read one
//! bounded chunk at a time, only when hyper asks for the next frame (the client can take more).

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::origin::OriginBody;
use super::request_body::RequestBody;

/// Boxed error type for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The next frame of a hyper body, its error boxed.
pub(super) fn poll_incoming(
    body: &mut hyper::body::Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(body)
        .poll_frame(cx)
        .map_err(|e| Box::new(e) as BoxError)
}

/// Largest chunk read from a value file at once.
pub const FILE_CHUNK: usize = 256 * 1024;
/// The first chunk of a value file; each next one is twice the last, up to [`FILE_CHUNK`].
/// A client that stops reading early (or an HTTP/2 client opening 100 streams and reading
/// none) holds a small chunk per response, not 256 KiB; one that keeps reading reaches full
/// chunks after four reads.
pub const FIRST_FILE_CHUNK: usize = 16 * 1024;

/// A response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// No bytes.
    Empty,
    /// One buffer.
    Full(Option<Bytes>),
    /// Chunks sent by another task through a [`BodySender`]; `Err`, an abort or a sender
    /// dropped before `finish` aborts the response.
    Channel {
        /// Receiving end.
        rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
        /// How the sender ended (see [`BodySender`]).
        end: Arc<AtomicU8>,
        /// Expected total length, if known.
        len: Option<u64>,
    },
    /// A store value read one chunk per frame (see [`ProxyBody::from_reader`]).
    File(Box<FileBody>),
    /// A hyper body (upstream response, or a client request without a body) streamed
    /// through unchanged.
    Incoming(hyper::body::Incoming),
    /// A client's request body under its stall timer, recording its progress and how it
    /// ended for the upstream layer ([`RequestBody`]); only requests that have a body.
    Client(Box<RequestBody>),
    /// An origin response body streamed through, cut with an error when no chunk arrives
    /// within the chunk timeout or the whole body takes longer than the body timeout.
    Origin(Box<TimedBody>),
}

/// An origin body under a per-chunk and a total deadline.
#[derive(Debug)]
pub struct TimedBody {
    body: OriginBody,
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

    /// A client's request body: [`ProxyBody::Incoming`] when it has no bytes (no allocation),
    /// else a [`RequestBody`] failing when no byte comes for `stall`.
    pub fn client(inner: hyper::body::Incoming, stall: std::time::Duration) -> Self {
        if inner.is_end_stream() {
            ProxyBody::Incoming(inner)
        } else {
            ProxyBody::Client(Box::new(RequestBody::new(inner, stall)))
        }
    }

    /// An origin body: an error when no chunk comes within `chunk` or the whole body is not
    /// done within `total` (from now).
    pub fn origin(
        body: OriginBody,
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
    pub fn channel(capacity: usize, len: Option<u64>) -> (BodySender, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        let end = Arc::new(AtomicU8::new(SENDING));
        (
            BodySender {
                tx,
                end: end.clone(),
            },
            ProxyBody::Channel { rx, end, len },
        )
    }

    /// Stream a store value of `len` bytes whose xxh3-64 is `digest` from `reader`. The last
    /// chunk is held back until the digest matches; on a mismatch or a short read the body
    /// ends in an error (the client's connection is aborted, never handed wrong bytes that
    /// look complete) and `on_corrupt` runs (on a blocking thread).
    pub fn from_reader<R: ChunkSource + 'static>(
        reader: R,
        len: u64,
        digest: u64,
        on_corrupt: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self::file(reader, len, Some(digest), Box::new(on_corrupt))
    }

    /// Like [`from_reader`](Self::from_reader) for part of a value already verified in full
    /// (a byte range): a short read still aborts the body, but there is no digest to check.
    pub fn from_verified_reader<R: Read + Send + 'static>(reader: R, len: u64) -> Self {
        Self::file(Blocking(reader), len, None, Box::new(|| {}))
    }

    fn file<R: ChunkSource + 'static>(
        reader: R,
        len: u64,
        digest: Option<u64>,
        on_corrupt: Box<dyn FnOnce() + Send>,
    ) -> Self {
        ProxyBody::File(Box::new(FileBody {
            len,
            state: FileState::Idle(Box::new(FileCursor {
                reader: Box::new(reader),
                remaining: len,
                next: FIRST_FILE_CHUNK,
                chunk: Vec::new(),
                hasher: digest.map(|d| (xxhash_rust::xxh3::Xxh3::new(), d)),
                on_corrupt: Some(on_corrupt),
                inline: len <= INLINE_BODY,
            })),
        }))
    }
}

/// `end` values of a channel body.
const SENDING: u8 = 0;
const FINISHED: u8 = 1;
const ABORTED: u8 = 2;

/// The sending half of a channel body. The body ends cleanly only after [`finish`]
/// (Self::finish); [`abort`](Self::abort), or dropping the sender without `finish`, makes the
/// body fail at its next poll, whatever chunks are still queued.
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    end: Arc<AtomicU8>,
}

impl BodySender {
    /// The channel itself (to send chunks and errors).
    pub fn tx(&self) -> &mpsc::Sender<Result<Bytes, std::io::Error>> {
        &self.tx
    }

    /// Everything was sent: the body ends cleanly once the queued chunks are taken.
    pub fn finish(self) {
        let _ = self
            .end
            .compare_exchange(SENDING, FINISHED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Fail the body now, without waiting for the receiver to take the queued chunks.
    pub fn abort(self) {
        let _ = self
            .end
            .compare_exchange(SENDING, ABORTED, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let _ = self
            .end
            .compare_exchange(SENDING, ABORTED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Chunk reads (and digest updates) of store streams running at once, in the whole process.
/// More streams wait for a permit without a thread; the blocking pool and the CPU stay
/// available to store lookups and fills however many clients stream large values at once.
const FILE_READS_AT_ONCE: usize = 8;
static FILE_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(FILE_READS_AT_ONCE);

/// A store value sent one chunk per frame. Each poll for a frame (hyper polls only when it can
/// take one, i.e. when the client is reading) reads one chunk of at most [`FILE_CHUNK`]
/// bytes: at once on the polling task when all of it is in the page cache
/// ([`ChunkSource::read_cached`], which never waits for a disk), else (the rest of it) with
/// one blocking read on the blocking pool. So a stream in flight holds a blocking thread only
/// for the length of one disk read, never while its client does not read, and at most
/// [`FILE_READS_AT_ONCE`] such reads run at a time: store lookups never queue behind the
/// network, nor behind more than a few bounded disk reads.
pub struct FileBody {
    len: u64,
    state: FileState,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

enum FileState {
    /// Waiting for hyper to ask for the next chunk.
    Idle(Box<FileCursor>),
    /// Waiting for one of the [`FILE_READS`] permits.
    Queued(
        Pin<Box<dyn Future<Output = Option<tokio::sync::SemaphorePermit<'static>>> + Send>>,
        Box<FileCursor>,
    ),
    /// One chunk being read on the blocking pool.
    Reading(tokio::task::JoinHandle<(Box<FileCursor>, std::io::Result<Bytes>)>),
    /// All bytes sent, or failed.
    Done,
}

/// Where a file body's bytes come from: read on a blocking thread, or, for what is already in
/// memory, at once on the task that polls the body.
pub trait ChunkSource: Read + Send {
    /// Appends to `out` up to `max` bytes that are in memory now (the page cache), never
    /// waiting for a disk; `Ok(None)`: that would wait, read on a blocking thread instead.
    fn read_cached(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Option<usize>> {
        let _ = (out, max);
        Ok(None)
    }
}

impl ChunkSource for crate::store::ValueReader {
    fn read_cached(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Option<usize>> {
        hoard_store::ValueReader::read_nowait(self, out, max)
    }
}

/// A reader that can only be read on a blocking thread.
struct Blocking<R>(R);

impl<R: Read> Read for Blocking<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Send> ChunkSource for Blocking<R> {}

/// Where a file body is in its value.
struct FileCursor {
    reader: Box<dyn ChunkSource>,
    /// Bytes of the value not yet sent as chunks.
    remaining: u64,
    /// Size of the next chunk (doubling from [`FIRST_FILE_CHUNK`] to [`FILE_CHUNK`]).
    next: usize,
    /// The chunk being read: what a read without waiting got before it would have waited
    /// (the blocking read goes on from there); empty between chunks.
    chunk: Vec<u8>,
    /// The running hash and the digest the whole value must have.
    hasher: Option<(xxhash_rust::xxh3::Xxh3, u64)>,
    on_corrupt: Option<Box<dyn FnOnce() + Send>>,
    /// Chunks in the page cache may be copied on the polling task: the value is at most
    /// [`INLINE_BODY`] bytes.
    inline: bool,
}

/// The largest value whose chunks are copied (and hashed) on the task that polls the body when
/// they are in the page cache. Larger ones always go through the blocking pool, at most
/// [`FILE_READS_AT_ONCE`] reads at once: the copying one response costs a worker stays
/// bounded, and clients streaming many large values cannot take the workers from the rest.
pub const INLINE_BODY: u64 = 1024 * 1024;

impl FileCursor {
    /// Length of the chunk being read.
    fn chunk_len(&self) -> usize {
        self.remaining.min(self.next as u64) as usize
    }

    /// The next chunk if all of it is in memory now, read on the calling task; `None` when a
    /// read would wait (what was read stays in `chunk` for [`next_chunk`](Self::next_chunk)).
    fn next_chunk_nowait(&mut self) -> Option<std::io::Result<Bytes>> {
        if !self.inline {
            return None;
        }
        let want = self.chunk_len();
        while self.chunk.len() < want {
            let max = want - self.chunk.len();
            match self.reader.read_cached(&mut self.chunk, max) {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(self.failed_nowait(e)),
            }
        }
        Some(self.finish(Ok(()), want).or_else(|e| self.failed_nowait(e)))
    }

    /// A failure met on the polling task: `on_corrupt` (a store delete) goes to a blocking
    /// thread.
    fn failed_nowait(&mut self, e: std::io::Error) -> std::io::Result<Bytes> {
        if let Some(f) = self.on_corrupt.take() {
            tokio::task::spawn_blocking(f);
        }
        Err(e)
    }

    /// Read the rest of the next chunk (blocking).
    fn next_chunk(&mut self) -> std::io::Result<Bytes> {
        let want = self.chunk_len();
        let missing = (want - self.chunk.len()) as u64;
        // `read_to_end` fills spare capacity without zeroing it first.
        let read = (&mut self.reader)
            .take(missing)
            .read_to_end(&mut self.chunk)
            .and_then(|n| match n as u64 == missing {
                true => Ok(()),
                false => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stored body shorter than recorded",
                )),
            });
        let res = self.finish(read, want);
        if res.is_err()
            && let Some(f) = self.on_corrupt.take()
        {
            f();
        }
        res
    }

    /// The chunk of `want` bytes read (or the read's failure): the last chunk is returned only
    /// if the digest matches.
    fn finish(&mut self, read: std::io::Result<()>, want: usize) -> std::io::Result<Bytes> {
        let mut res = read.map(|()| Bytes::from(std::mem::take(&mut self.chunk)));
        if let (Ok(b), Some((hasher, digest))) = (&res, &mut self.hasher) {
            hasher.update(b);
            if self.remaining == want as u64 && hasher.digest() != *digest {
                res = Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stored body does not match its digest",
                ));
            }
        }
        if res.is_ok() {
            self.remaining -= want as u64;
            self.next = (self.next * 2).min(FILE_CHUNK);
        }
        res
    }
}

impl FileBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match std::mem::replace(&mut self.state, FileState::Done) {
                FileState::Done => return Poll::Ready(None),
                FileState::Idle(cur) if cur.remaining == 0 => return Poll::Ready(None),
                FileState::Idle(mut cur) => {
                    // In the page cache: read here, no blocking thread and no permit.
                    match cur.next_chunk_nowait() {
                        Some(Ok(b)) => {
                            self.state = FileState::Idle(cur);
                            return Poll::Ready(Some(Ok(Frame::data(b))));
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                        None => {}
                    }
                    let permit = Box::pin(async { FILE_READS.acquire().await.ok() });
                    self.state = FileState::Queued(permit, cur);
                }
                FileState::Queued(mut permit, mut cur) => match permit.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = FileState::Queued(permit, cur);
                        return Poll::Pending;
                    }
                    Poll::Ready(permit) => {
                        self.state = FileState::Reading(tokio::task::spawn_blocking(move || {
                            let res = cur.next_chunk();
                            drop(permit);
                            (cur, res)
                        }));
                    }
                },
                FileState::Reading(mut task) => match Pin::new(&mut task).poll(cx) {
                    Poll::Pending => {
                        self.state = FileState::Reading(task);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok((cur, Ok(b)))) => {
                        self.state = FileState::Idle(cur);
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    Poll::Ready(Ok((_, Err(e)))) => return Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Some(Err(Box::new(std::io::Error::other(e)))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            FileState::Done => true,
            FileState::Idle(cur) => cur.remaining == 0,
            FileState::Queued(..) | FileState::Reading(_) => false,
        }
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
            ProxyBody::Channel { rx, end, .. } => {
                let cut = || {
                    Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "body source ended before the body was complete",
                    )) as BoxError)))
                };
                if end.load(Ordering::Acquire) == ABORTED {
                    return cut();
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(None) if end.load(Ordering::Acquire) == FINISHED => {
                        Poll::Ready(None)
                    }
                    Poll::Ready(None) => cut(),
                    Poll::Pending => Poll::Pending,
                }
            }
            ProxyBody::File(f) => f.poll_frame(cx),
            ProxyBody::Incoming(inc) => poll_incoming(inc, cx),
            ProxyBody::Client(b) => b.poll_frame(cx),
            ProxyBody::Origin(t) => match Pin::new(&mut t.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let wake = t.next_wake();
                    t.sleep.as_mut().reset(wake);
                    Poll::Ready(Some(Ok(f)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
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
            ProxyBody::File(f) => f.is_end_stream(),
            ProxyBody::Incoming(inc) => inc.is_end_stream(),
            ProxyBody::Client(b) => b.is_end_stream(),
            ProxyBody::Origin(t) => t.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Channel { len: Some(n), .. } => SizeHint::with_exact(*n),
            ProxyBody::Channel { len: None, .. } => SizeHint::default(),
            ProxyBody::File(f) => SizeHint::with_exact(f.len),
            ProxyBody::Incoming(inc) => inc.size_hint(),
            ProxyBody::Client(b) => b.size_hint(),
            ProxyBody::Origin(t) => t.body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;
