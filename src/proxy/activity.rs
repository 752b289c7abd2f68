//! What a client connection is doing, for the limits that act on it: when it last moved
//! bytes and how many requests it has in flight (idle timeout), whether a response has bytes
//! the client does not take (send stall), the raw request heads (framing guard), and whether
//! it waits for a request and since when (slot reuse at `max-connections`, `reclaim`).
//!
//! Invariant: a request counts as in flight from the moment hyper hands it over until its
//! response body ends or is dropped ([`InFlight`], [`GuardedBody`]); a connection with a
//! request in flight is never idle and never reclaimed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};
use super::framing::{Scanner, Violation};
use super::observed::Observer;

/// When a connection last moved bytes, and how many of its requests are in flight.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read, write or finished response.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds since `start` of the last write to the client.
    wrote_ms: AtomicU64,
    /// For each response body in flight: since when (milliseconds since `start`) it has had
    /// bytes ready that hyper has not asked for, or [`NOT_READY`].
    sends: Mutex<Vec<Weak<AtomicU64>>>,
    /// Request heads as read (HTTP/1), for what hyper lets through.
    scanner: std::sync::Mutex<Scanner>,
    /// Milliseconds since `start` of the first byte read while no request was in flight (a
    /// request head on its way), or [`NO_HEAD`]; cleared when hyper hands the request over.
    head_ms: AtomicU64,
    /// The connection speaks HTTP/2 (it began with the preface): its frames between requests
    /// (SETTINGS, PING, WINDOW_UPDATE) are not a head on its way.
    multiplexed: AtomicBool,
    /// Asked to close to make room at `max-connections` (`reclaim`).
    asked: AtomicBool,
    /// The client socket's descriptor (-1: none, e.g. an intercepted connection), for
    /// [`abort`](Self::abort).
    socket: AtomicI32,
    reclaim: tokio::sync::Notify,
}

/// A response body waiting on its source (or done), not on the client.
const NOT_READY: u64 = u64::MAX;
/// No request head is being read.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            wrote_ms: AtomicU64::new(0),
            sends: Mutex::new(Vec::new()),
            scanner: Default::default(),
            head_ms: AtomicU64::new(NO_HEAD),
            multiplexed: AtomicBool::new(false),
            socket: AtomicI32::new(-1),
            asked: AtomicBool::new(false),
            reclaim: tokio::sync::Notify::new(),
        }
    }

    /// Since when the connection has been waiting for a request, if it is: no request in
    /// flight, not yet asked to close, and either nothing read since its last response (the
    /// time of its last activity) or a request head being read for at least `head_grace`
    /// (the time its first byte came).
    pub(super) fn waiting_since(&self, head_grace: Duration, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 || self.asked.load(Ordering::Relaxed) {
            return None;
        }
        match self.head_ms.load(Ordering::Acquire) {
            NO_HEAD => Some(self.last()),
            ms => {
                let since = self.start + Duration::from_millis(ms);
                (now.saturating_duration_since(since) >= head_grace).then_some(since)
            }
        }
    }

    /// Part of a request head is read and no request is in flight.
    pub(super) fn head_pending(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_ms.load(Ordering::Acquire) != NO_HEAD
    }

    /// The plain client socket this activity watches (its descriptor stays open as long as
    /// the connection that polls its response bodies).
    #[cfg(unix)]
    pub(super) fn set_socket(&self, fd: std::os::fd::RawFd) {
        self.socket.store(fd, Ordering::Relaxed);
    }

    /// A response body failed after its head was sent: make the connection end with a reset,
    /// not a clean close. An HTTP/1.0 client (or any response framed by the close) would take
    /// a clean close for the end of a complete body. Only for HTTP/1: an HTTP/2 body may be
    /// polled by a task that outlives the connection, when the descriptor may name another
    /// socket (there, hyper resets the stream).
    fn abort(&self) {
        #[cfg(unix)]
        {
            let fd = self.socket.load(Ordering::Relaxed);
            if fd >= 0 && !self.multiplexed.load(Ordering::Relaxed) {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: `fd` is this connection's open socket (see `set_socket`); the option
                // value is a valid `linger` of the size given.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
        }
    }

    /// Ask the connection to close (its task wakes in [`asked_to_close`](Self::asked_to_close)).
    pub(super) fn ask_to_close(&self) {
        self.asked.store(true, Ordering::Relaxed);
        self.reclaim.notify_one();
    }

    pub(super) fn was_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// Resolves once the connection was asked to close.
    pub(super) async fn asked_to_close(&self) {
        self.reclaim.notified().await
    }

    fn scan(&self, bytes: &[u8]) {
        self.scanner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(bytes);
    }

    /// The framing verdict on the request hyper has just parsed.
    pub(super) fn framing(&self) -> Option<Violation> {
        self.scanner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Track a response body's readiness (see `sends`).
    fn register_send(&self, ready: &Arc<AtomicU64>) {
        let mut sends = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        sends.retain(|w| w.strong_count() > 0);
        sends.push(Arc::downgrade(ready));
    }

    /// When the connection is to be dropped for a client that does not take its response:
    /// `send` after the later of the last write to the client and the moment the oldest
    /// waiting body got ready. `None` while no body has bytes waiting for the client (a body
    /// waiting on its origin, however long, is no reason).
    pub(super) fn send_stall_deadline(&self, send: Duration) -> Option<Instant> {
        let oldest = self
            .sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .filter(|&ms| ms != NOT_READY)?;
        let since = oldest.max(self.wrote_ms.load(Ordering::Relaxed));
        Some(self.start + Duration::from_millis(since) + send)
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    pub(super) fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last().elapsed() >= idle
    }

    /// When the connection becomes idle if nothing happens (a request in flight postpones it).
    pub(super) fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Instant::now() + idle
        } else {
            self.last() + idle
        }
    }
}

/// Counts a request as in flight until its response body is finished or dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_ms.store(NO_HEAD, Ordering::Release);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight, and tells its connection's
/// activity whether it has bytes ready that the client has not taken: from when it is made
/// (its head is ready) and after each frame until hyper polls it again.
#[derive(Debug)]
pub(super) struct GuardedBody {
    inner: ProxyBody,
    ready: Arc<AtomicU64>,
    _guard: InFlight,
}

impl GuardedBody {
    /// `inner`, counted as in flight by `guard` until it ends or is dropped.
    pub(super) fn new(inner: ProxyBody, guard: InFlight) -> Self {
        let ready = Arc::new(AtomicU64::new(guard.0.now_ms()));
        guard.0.register_send(&ready);
        GuardedBody {
            inner,
            ready,
            _guard: guard,
        }
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        self.ready.store(NOT_READY, Ordering::Release);
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &res {
            self._guard.0.abort();
        }
        let ready = match &res {
            Poll::Ready(Some(Ok(_))) => self._guard.0.now_ms(),
            _ => NOT_READY,
        };
        self.ready.store(ready, Ordering::Release);
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket reports to its connection's activity: bytes moved (idle timeout) and
/// request bytes read (the raw head scanner).
impl Observer for Arc<Activity> {
    fn on_read(&self, bytes: &[u8]) {
        let now = self.now_ms();
        self.last_ms.fetch_max(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_ms.load(Ordering::Relaxed) == NO_HEAD
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            if bytes.starts_with(b"PRI * HTTP/2.0") {
                self.multiplexed.store(true, Ordering::Relaxed);
            } else {
                self.head_ms.store(now, Ordering::Release);
            }
        }
        self.scan(bytes);
    }

    fn on_write(&self) {
        let ms = self.now_ms();
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
        self.wrote_ms.fetch_max(ms, Ordering::Relaxed);
    }
}
