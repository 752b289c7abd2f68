//! A client's request body on its way to an origin: hyper's `Incoming` under the client's
//! stall bound (`idle-timeout`), recording in an [`Upload`] how far it got and how it ended, so
//! the upstream layer tells a client's failure (bad framing, a cut body, a stalled upload) from
//! an origin's, and starts the response clock when the body has been forwarded.
//!
//! Invariants: a body that did not end cleanly ends in an error frame, never a clean end, so
//! the origin never receives a cut body as if it were complete; what failed is recorded here,
//! by the body itself (`Upload::fault`), never guessed from error text. Requests without a body
//! never get one of these (no allocation, clock read or atomic on that path).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::BoxError;

/// Why a client's request body failed while it was being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// Its chunked framing is malformed (a bad or overflowing chunk size, no CRLF after a
    /// chunk's data, ...): RFC 9112 7.1.
    Framing,
    /// It ended before its declared length or last chunk (the client closed, or reset).
    Cut,
    /// No byte of it came for the stall bound (`idle-timeout`).
    Stalled,
}

impl ClientBodyFault {
    /// Stable name (Cache-Status detail, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientBodyFault::Framing => "request-body-framing",
            ClientBodyFault::Cut => "request-body-cut",
            ClientBodyFault::Stalled => "request-body-timeout",
        }
    }

    /// The status the client gets (RFC 9112 6.3: a framing error is the client's, answered
    /// 400 and the connection closed; RFC 9110 15.5.9: 408 for a request not completed in time).
    pub fn status(self) -> StatusCode {
        match self {
            ClientBodyFault::Framing | ClientBodyFault::Cut => StatusCode::BAD_REQUEST,
            ClientBodyFault::Stalled => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The fault of a failed read, by the kind of the I/O error hyper's decoder gave (it
    /// reports malformed chunked framing as `InvalidInput`/`InvalidData` and a body that
    /// stopped early as `UnexpectedEof`); a failure without one (the connection failed, an
    /// HTTP/2 stream reset by the client) is a cut body.
    fn of_io(kind: Option<io::ErrorKind>) -> Self {
        match kind {
            Some(io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData) => {
                ClientBodyFault::Framing
            }
            _ => ClientBodyFault::Cut,
        }
    }

    fn of(e: &hyper::Error) -> Self {
        let mut src = std::error::Error::source(e);
        let mut kind = None;
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                kind = Some(io.kind());
                break;
            }
            src = s.source();
        }
        Self::of_io(kind)
    }
}

/// The error frame of a failed [`RequestBody`].
#[derive(Debug, thiserror::Error)]
#[error("client request body failed ({})", fault.as_str())]
pub struct ClientBodyError {
    /// What failed.
    pub fault: ClientBodyFault,
    #[source]
    source: Option<hyper::Error>,
}

/// What the upstream layer sees of an upload in flight (shared with its [`RequestBody`]).
#[derive(Debug, Default)]
pub struct Upload {
    /// Frames forwarded so far.
    frames: AtomicU64,
    /// The body's last poll found no bytes from the client (it waits on the client, under
    /// its own stall timer); `false` after a frame (it waits to be polled again).
    waiting_on_client: AtomicBool,
    /// When the body ended cleanly.
    ended: OnceLock<Instant>,
    /// How it failed.
    fault: OnceLock<ClientBodyFault>,
}

/// What the wait for an origin's response head does next, after [`Upload::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Keep waiting; look again at this time.
    At(Instant),
    /// The response timeout has passed: after the body ended, or with the origin taking no
    /// byte of it for that long.
    TimedOut,
}

/// The state of an upload at one moment (what [`Upload::check`] decides from).
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    frames: u64,
    waiting_on_client: bool,
    ended: Option<Instant>,
    failed: bool,
}

impl Upload {
    /// How the body failed, if it did.
    pub fn fault(&self) -> Option<ClientBodyFault> {
        self.fault.get().copied()
    }

    /// Frames forwarded so far (what [`check`](Self::check) compares with).
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Decide, at `now`, after `limit` (the response timeout) since the last look, when
    /// `frames` were forwarded: the clock runs from the body's end, and while it streams
    /// only when the origin takes nothing (a client that sends nothing is its own body's
    /// stall timer's to end). Updates `frames` to the count seen.
    pub fn check(&self, frames: &mut u64, now: Instant, limit: Duration) -> Check {
        let snap = Snapshot {
            frames: self.frames(),
            waiting_on_client: self.waiting_on_client.load(Ordering::Relaxed),
            ended: self.ended.get().copied(),
            failed: self.fault.get().is_some(),
        };
        decide(snap, frames, now, limit)
    }

    fn end(&self) {
        let _ = self.ended.set(Instant::now());
    }

    fn fail(&self, fault: ClientBodyFault) {
        let _ = self.fault.set(fault);
    }
}

/// [`Upload::check`] on a snapshot (time is a parameter).
fn decide(s: Snapshot, seen: &mut u64, now: Instant, limit: Duration) -> Check {
    if let Some(ended) = s.ended {
        let deadline = ended + limit;
        return if now >= deadline {
            Check::TimedOut
        } else {
            Check::At(deadline)
        };
    }
    // Failed: the send ends with the body's error. Moving or waiting on the client: the
    // client's pace is bounded by the body's own stall timer.
    if s.failed || s.frames != *seen || s.waiting_on_client {
        *seen = s.frames;
        return Check::At(now + limit);
    }
    Check::TimedOut
}

/// A client's request body with a stall timer, feeding an [`Upload`].
#[derive(Debug)]
pub struct RequestBody {
    inner: hyper::body::Incoming,
    upload: Arc<Upload>,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer runs (set on the first poll that found no bytes, cleared by a frame).
    armed: bool,
}

impl RequestBody {
    /// `inner` (a body that is not empty), failing when no byte comes for `stall`.
    pub fn new(inner: hyper::body::Incoming, stall: Duration) -> Self {
        RequestBody {
            inner,
            upload: Arc::new(Upload::default()),
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
        }
    }

    /// The upload's record, for the upstream layer.
    pub fn upload(&self) -> Arc<Upload> {
        self.upload.clone()
    }

    fn failure(
        &mut self,
        fault: ClientBodyFault,
        source: Option<hyper::Error>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.upload.fail(fault);
        Poll::Ready(Some(Err(Box::new(ClientBodyError { fault, source }))))
    }

    /// The next frame (see [`Body::poll_frame`]).
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(fault) = self.upload.fault() {
            // Never a clean end after a failure, however often it is asked.
            return Poll::Ready(Some(Err(Box::new(ClientBodyError {
                fault,
                source: None,
            }))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.armed = false;
                let up = &self.upload;
                up.waiting_on_client.store(false, Ordering::Relaxed);
                up.frames.fetch_add(1, Ordering::Relaxed);
                if self.inner.is_end_stream() {
                    up.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => self.failure(ClientBodyFault::of(&e), Some(e)),
            Poll::Ready(None) => {
                self.upload.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                self.upload.waiting_on_client.store(true, Ordering::Relaxed);
                if !self.armed {
                    self.armed = true;
                    let at = Instant::now() + self.stall;
                    self.timer.as_mut().reset(at);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => self.failure(ClientBodyFault::Stalled, None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Whether the body has ended (recorded as its end when it has).
    pub fn is_end_stream(&self) -> bool {
        let end = self.upload.fault().is_none() && self.inner.is_end_stream();
        if end {
            self.upload.end();
        }
        end
    }

    /// The body's size hint.
    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_by_io_error_kind() {
        use io::ErrorKind::*;
        let cases = [
            (Some(InvalidInput), ClientBodyFault::Framing, 400),
            (Some(InvalidData), ClientBodyFault::Framing, 400),
            (Some(UnexpectedEof), ClientBodyFault::Cut, 400),
            (Some(ConnectionReset), ClientBodyFault::Cut, 400),
            (None, ClientBodyFault::Cut, 400),
        ];
        for (kind, fault, status) in cases {
            assert_eq!(ClientBodyFault::of_io(kind), fault, "{kind:?}");
            assert_eq!(fault.status().as_u16(), status, "{kind:?}");
        }
        assert_eq!(ClientBodyFault::Stalled.status().as_u16(), 408);
    }

    macro_rules! check {
        ($name:ident, $snap:expr, seen: $seen:expr, $want:expr, seen_after: $after:expr) => {
            #[test]
            fn $name() {
                let t0 = Instant::now();
                let limit = Duration::from_secs(10);
                let now = t0 + Duration::from_secs(30);
                let snap: Snapshot = $snap(t0);
                let mut seen = $seen;
                let want: Check = $want(now, t0, limit);
                assert_eq!(decide(snap, &mut seen, now, limit), want);
                assert_eq!(seen, $after);
            }
        };
    }

    fn streaming(frames: u64, waiting_on_client: bool) -> impl Fn(Instant) -> Snapshot {
        move |_| Snapshot {
            frames,
            waiting_on_client,
            ended: None,
            failed: false,
        }
    }

    fn ended_at(secs: u64) -> impl Fn(Instant) -> Snapshot {
        move |t0: Instant| Snapshot {
            frames: 3,
            waiting_on_client: false,
            ended: Some(t0 + Duration::from_secs(secs)),
            failed: false,
        }
    }

    check!(
        a_moving_upload_keeps_the_wait_going,
        streaming(5, false),
        seen: 4,
        |now, _, limit| Check::At(now + limit),
        seen_after: 5
    );
    check!(
        an_upload_waiting_on_its_client_is_the_stall_timers_to_end,
        streaming(4, true),
        seen: 4,
        |now, _, limit| Check::At(now + limit),
        seen_after: 4
    );
    check!(
        an_origin_taking_nothing_for_the_limit_times_out,
        streaming(4, false),
        seen: 4,
        |_, _, _| Check::TimedOut,
        seen_after: 4
    );
    check!(
        the_clock_starts_when_the_body_ends,
        ended_at(25),
        seen: 0,
        |_, t0, limit| Check::At(t0 + Duration::from_secs(25) + limit),
        seen_after: 0
    );
    check!(
        a_body_ended_longer_ago_than_the_limit_times_out,
        ended_at(20),
        seen: 0,
        |_, _, _| Check::TimedOut,
        seen_after: 0
    );
    check!(
        a_failed_body_leaves_the_end_to_the_send,
        |_| Snapshot {
            frames: 2,
            waiting_on_client: false,
            ended: None,
            failed: true
        },
        seen: 2,
        |now, _, limit| Check::At(now + limit),
        seen_after: 2
    );
}
