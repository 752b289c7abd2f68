//! Cache fill: stream an origin body to the client while writing it to the store.
//!
//! Invariants: the entry commits only after the origin body ended cleanly with the declared
//! length and within `max_object_size`; otherwise the half-written value is dropped (no row,
//! no file). A client that goes away, or takes no chunk for its stall bound (it is then
//! dropped), does not stop a fill that is still storing, so waiters coalesced behind it still
//! get the entry. An origin failure mid-body reaches the client as a body error, so its
//! connection is aborted rather than ending with a short body. No blocking thread waits on the
//! origin or a client: the async loop owns the store writer and hands it one batch at a time.
//!
//! A body that had already arrived whole when its head was answered ([`Arrived::take`], the
//! usual case of a small response) is answered to the client as one buffer, written with the
//! head, and only stored here: no queue, no second write to the client's socket. Such a fill
//! is a small future of its own ([`run`] boxes only the streaming one): spawning it copies
//! a few hundred bytes, not the streaming loop's state.
//!
//! A fill that replaces a stored response ([`after_commit`]) hands its client the end of the
//! response only after its commit: a streamed body's last chunk and end wait for it (the
//! caller holds a whole body's response itself), so nobody is served the replaced response
//! after its client has the new one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;

mod after_commit;

pub use after_commit::{AfterCommit, CommitSignal, after_commit};

use super::body::BodySender;
use super::origin::OriginBody;
use crate::coalesce::{Outcome, Permit};
use crate::entries::lease::Lease;
use crate::entries::{EntryWriter, FillPlan};
use crate::http_cache::CacheStatus;

/// Bytes a fill holds for a client that reads slower than the origin sends (beyond its
/// channel). Past that the fill waits for the client, but never longer than its stall bound.
const CLIENT_LAG: usize = 4 * 1024 * 1024;

/// The client a fill streams to.
#[derive(Debug)]
pub struct ToClient {
    /// The client's response body.
    pub body: BodySender,
    /// A client that takes no chunk for this long is dropped (its body fails) while the fill
    /// goes on storing for everyone else.
    pub stall: Duration,
    /// A replacing fill's: the body's last chunk and its end wait for this.
    pub end_after: Option<AfterCommit>,
}

/// Who waits for a fill to end, woken in this order once its commit is over (or nothing is
/// stored): the client of a replacing fill (the end of its response), other processes (the
/// lease goes: those polling for this key see the entry), this process's requests for the key
/// (the flight ends with what became of the entry).
#[derive(Debug, Default)]
pub struct Waiters {
    pub client: Option<CommitSignal>,
    pub lease: Option<Lease>,
    pub permit: Option<Permit>,
}

impl Waiters {
    /// The fill's end: `stored`, or not (`too_large`: the key may pass for a while).
    fn wake(self, stored: bool, too_large: bool) {
        let Waiters {
            client,
            lease,
            permit,
        } = self;
        drop(client);
        drop(lease);
        if let Some(p) = permit {
            p.finish(if stored {
                Outcome::Stored
            } else if too_large {
                Outcome::Uncacheable
            } else {
                Outcome::Abandoned
            });
        }
    }
}

/// Bytes of an origin body [`Arrived::take`] collects at most (beyond its last chunk): a
/// longer body streams through the fill's queue as before.
pub const READY_LIMIT: usize = 64 * 1024;

/// An origin body, with the part of it that had already arrived when its head was answered.
#[derive(Debug)]
pub struct Arrived {
    body: OriginBody,
    chunks: Vec<Bytes>,
    len: usize,
    end: Option<End>,
}

/// How an origin body ended while [`Arrived::take`] read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its last frame was read.
    Complete,
    /// It failed (the fill must not store it).
    Failed,
}

impl From<OriginBody> for Arrived {
    /// A body of which nothing was read yet.
    fn from(body: OriginBody) -> Self {
        Arrived {
            body,
            chunks: Vec::new(),
            len: 0,
            end: None,
        }
    }
}

impl Arrived {
    /// Read what `body` already holds, without waiting, until it ends or `limit` bytes are
    /// read (hyper's client has usually decoded a small body with its head).
    pub fn take(body: OriginBody, limit: usize) -> Arrived {
        let mut a = Arrived::from(body);
        let mut cx = Context::from_waker(Waker::noop());
        while a.len < limit && a.end.is_none() {
            match Pin::new(&mut a.body).poll_frame(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(None) => a.end = Some(End::Complete),
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "origin body failed");
                    a.end = Some(End::Failed);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        a.len += data.len();
                        a.chunks.push(data);
                    }
                    if a.body.is_end_stream() {
                        a.end = Some(End::Complete);
                    }
                }
            }
        }
        a
    }

    /// The whole body, when it arrived complete with the `expected` length (if declared).
    pub fn whole(&self, expected: Option<u64>) -> Option<Bytes> {
        if self.end != Some(End::Complete) || expected.is_some_and(|n| n != self.len as u64) {
            return None;
        }
        match self.chunks.as_slice() {
            [] => Some(Bytes::new()),
            [one] => Some(one.clone()),
            many => Some(Bytes::from(many.concat())),
        }
    }
}

/// Where the chunks of an origin body go: the store's writer (while it stores) and the
/// client's queue (while there is a client).
struct Sink {
    writer: Option<EntryWriter>,
    feed: Option<Feed>,
    total: u64,
    too_large: bool,
    max_object_size: u64,
}

impl Sink {
    /// One chunk of the body: counted, stored unless the body grew past the limit, queued
    /// for the client.
    async fn take(&mut self, data: Bytes) {
        self.total += data.len() as u64;
        let storing = self.writer.as_ref().is_some_and(EntryWriter::is_storing);
        if self.total > self.max_object_size && storing {
            self.too_large = true;
            if let Some(w) = self.writer.take() {
                w.abandon().await;
            }
        }
        if let Some(w) = self.writer.as_mut() {
            w.push(data.clone()).await;
        }
        if let Some(f) = self.feed.as_mut() {
            f.push(data);
        }
    }
}

/// Chunks waiting for the client, and when it last took one.
struct Feed {
    to: ToClient,
    queue: VecDeque<Bytes>,
    queued: usize,
    since: tokio::time::Instant,
    /// A replacing fill's latest chunk, kept back from the client: it may be the last, which
    /// goes only after the commit (a body of known length is complete without its end).
    last: Option<Bytes>,
}

impl Feed {
    fn new(to: ToClient) -> Self {
        Feed {
            to,
            queue: VecDeque::new(),
            queued: 0,
            since: tokio::time::Instant::now(),
            last: None,
        }
    }

    fn push(&mut self, b: Bytes) {
        let b = match self.to.end_after {
            Some(_) => match self.last.replace(b) {
                Some(earlier) => earlier,
                None => return,
            },
            None => b,
        };
        self.enqueue(b);
    }

    fn enqueue(&mut self, b: Bytes) {
        if self.queue.is_empty() {
            self.since = tokio::time::Instant::now();
        }
        self.queued += b.len();
        self.queue.push_back(b);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let b = self.queue.pop_front()?;
        self.queued -= b.len();
        self.since = tokio::time::Instant::now();
        Some(b)
    }

    /// Hand the rest to the client, then end its body cleanly (a replacing fill's last chunk
    /// and end after its commit); a client that takes nothing for the stall bound is dropped.
    async fn drain(mut self) {
        if !self.send_queued().await {
            return;
        }
        if let Some(after) = self.to.end_after.take() {
            after.wait().await;
            if let Some(last) = self.last.take() {
                self.enqueue(last);
                if !self.send_queued().await {
                    return;
                }
            }
        }
        self.to.body.finish();
    }

    /// Hand the queued chunks to the client: `false` when it went away or was dropped.
    async fn send_queued(&mut self) -> bool {
        while !self.queue.is_empty() {
            let tx = self.to.body.tx().clone();
            match tokio::time::timeout(self.to.stall, tx.reserve_owned()).await {
                Ok(Ok(permit)) => {
                    if let Some(b) = self.pop() {
                        permit.send(Ok(b));
                    }
                }
                Ok(Err(_)) => return false, // the client went away
                Err(_) => {
                    tracing::info!(stall = ?self.to.stall, "client not reading a fill: dropped");
                    // The caller drops the feed, and with it the sender: the body fails.
                    return false;
                }
            }
        }
        true
    }
}

/// Run the fill to completion. `body` is the origin body, with what of it already arrived
/// ([`Arrived::take`]; an [`OriginBody`] converts with nothing read). `to_client` receives the
/// body; a client that goes away or takes no chunk for its stall bound is dropped, and the
/// fill goes on storing. The origin body is abandoned (not stored, the client's body fails)
/// when no chunk arrives within `chunk_timeout` or it is not complete within `body_timeout`.
/// `waiters` are woken when the fill ends.
pub fn run(
    plan: FillPlan,
    body: impl Into<Arrived>,
    to_client: Option<ToClient>,
    waiters: Waiters,
    chunk_timeout: Duration,
    body_timeout: Option<Duration>,
) -> impl Future<Output = ()> + Send + 'static {
    use futures_util::future::Either;
    let body = body.into();
    if to_client.is_none() && body.end == Some(End::Complete) {
        return Either::Left(store_arrived(plan, body, waiters));
    }
    Either::Right(Box::pin(stream(
        plan,
        body,
        to_client,
        waiters,
        chunk_timeout,
        body_timeout,
    )))
}

impl Arrived {
    /// The whole body arrived (its last frame was read, nothing failed).
    pub fn is_complete(&self) -> bool {
        self.end == Some(End::Complete)
    }

    /// What the response head can tell of its size against `max_object_size`, with the
    /// declared length `expected` (a declared length over the limit has no fill plan at all).
    pub fn size_at_head(&self, expected: Option<u64>, max_object_size: u64) -> SizeAtHead {
        match (expected, self.is_complete()) {
            (Some(_), _) => SizeAtHead::Fits,
            (None, true) if self.len as u64 <= max_object_size => SizeAtHead::Fits,
            (None, true) => SizeAtHead::TooLarge,
            (None, false) => SizeAtHead::Unknown,
        }
    }
}

/// Whether a response's size is known to fit the store when its head is sent, which is when
/// `Cache-Status` is written (RFC 9211 2.6: `stored` says the cache stored it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeAtHead {
    /// Declared (`Content-Length`, within the limit) or arrived whole within it: `stored`.
    Fits,
    /// Arrived whole, over `max_object_size`: not stored, `detail=too-large`.
    TooLarge,
    /// No declared length, still streaming: stored only if it ends within the limit, which
    /// the head cannot say: no `stored`, `detail=unknown-length`.
    Unknown,
}

impl SizeAtHead {
    /// The `Cache-Status` of a fill that starts with this response.
    pub fn status(self, fwd: CacheStatus) -> CacheStatus {
        match self {
            SizeAtHead::Fits => fwd.stored(true),
            SizeAtHead::TooLarge => fwd.with_detail("too-large"),
            SizeAtHead::Unknown => fwd.with_detail("unknown-length"),
        }
    }
}

/// The fill of a body that arrived whole, nobody to stream it to, no shared tier to copy it
/// to ([`FillPlan::is_shared`]), without a task: the body goes to the store's group commit at
/// once, and the waiters are woken on the committing thread after the commit; `token` keeps
/// the proxy's shutdown (and tests awaiting fills) waiting until then.
pub fn commit_arrived(
    plan: FillPlan,
    body: Arrived,
    waiters: Waiters,
    token: tokio_util::task::task_tracker::TaskTrackerToken,
) {
    debug_assert!(body.is_complete());
    let complete = plan.expected_len().is_none_or(|n| n == body.len as u64);
    let too_large = body.len as u64 > plan.max_object_size();
    if !complete || too_large {
        return waiters.wake(false, too_large);
    }
    plan.commit_whole(body.chunks, move |stored| {
        waiters.wake(stored, false);
        drop(token);
    });
}

/// The fill of a body that arrived whole, nobody to stream it to: store it, then wake.
async fn store_arrived(plan: FillPlan, body: Arrived, waiters: Waiters) {
    let complete = plan.expected_len().is_none_or(|n| n == body.len as u64);
    let too_large = body.len as u64 > plan.max_object_size();
    let stored = if complete && !too_large {
        let mut w = plan.start();
        for data in body.chunks {
            w.push(data).await;
        }
        w.commit().await
    } else {
        false
    };
    waiters.wake(stored, too_large);
}

/// The fill of a body still arriving, or of one a client takes: see [`run`].
async fn stream(
    plan: FillPlan,
    body: Arrived,
    to_client: Option<ToClient>,
    waiters: Waiters,
    chunk_timeout: Duration,
    body_timeout: Option<Duration>,
) {
    let deadline = body_timeout.map(|t| tokio::time::Instant::now() + t);
    let expected_len = plan.expected_len();
    let Arrived {
        mut body,
        chunks,
        end,
        ..
    } = body;
    let mut sink = Sink {
        feed: to_client.map(Feed::new),
        max_object_size: plan.max_object_size(),
        writer: Some(plan.start()),
        total: 0,
        too_large: false,
    };
    for data in chunks {
        sink.take(data).await;
    }
    let mut origin_since = tokio::time::Instant::now();
    let complete = match end {
        Some(End::Complete) => expected_len.is_none_or(|n| n == sink.total),
        Some(End::Failed) => false,
        None => loop {
            let storing = sink.writer.as_ref().is_some_and(EntryWriter::is_storing);
            if !storing && sink.feed.is_none() {
                break false;
            }
            // The origin is read unless a slow client already has `CLIENT_LAG` bytes
            // waiting; while it is not read, its chunk timeout does not run.
            let read_origin = sink.feed.as_ref().is_none_or(|f| f.queued < CLIENT_LAG);
            if !read_origin {
                origin_since = tokio::time::Instant::now();
            }
            let wake = origin_since + chunk_timeout;
            let wake = deadline.map_or(wake, |d| d.min(wake));
            let waiting = sink.feed.as_ref().is_some_and(|f| !f.queue.is_empty());
            let (room, stalled) = match &sink.feed {
                Some(f) if waiting => (
                    Some(f.to.body.tx().clone().reserve_owned()),
                    f.since + f.to.stall,
                ),
                _ => (None, wake),
            };
            tokio::select! {
                biased;
                r = async { room?.await.ok() }, if waiting => {
                    match (r, sink.feed.as_mut()) {
                        (Some(permit), Some(f)) => {
                            if let Some(b) = f.pop() {
                                permit.send(Ok(b));
                            }
                        }
                        // The client went away: the fill goes on for the store.
                        _ => sink.feed = None,
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(stalled), if waiting => {
                    if let Some(f) = sink.feed.take() {
                        tracing::info!(stall = ?f.to.stall, "client not reading a fill: dropped");
                        f.to.body.abort();
                    }
                    continue;
                }
                frame = tokio::time::timeout_at(wake, body.frame()), if read_origin => {
                    let frame = match frame {
                        Err(_) => {
                            tracing::debug!("origin body stalled");
                            break false;
                        }
                        Ok(None) => break expected_len.is_none_or(|n| n == sink.total),
                        Ok(Some(Err(e))) => {
                            tracing::debug!(error = %e, "origin body failed");
                            break false;
                        }
                        Ok(Some(Ok(f))) => f,
                    };
                    origin_since = tokio::time::Instant::now();
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not stored
                    };
                    sink.take(data).await;
                }
            }
        },
    };
    let Sink {
        writer,
        feed,
        too_large,
        ..
    } = sink;
    // The client's body ends now (once it has taken what is queued), not after the commit;
    // a replacing fill's last chunk and end wait for the commit (`Feed::drain`).
    if let Some(f) = feed {
        if complete {
            tokio::spawn(f.drain());
        } else {
            f.to.body.abort();
        }
    }
    let stored = match writer {
        Some(w) if complete => w.commit().await,
        Some(w) => {
            w.abandon().await;
            false
        }
        None => false,
    };
    waiters.wake(stored, too_large);
}
