//! A client's request body on its way to an origin: hyper's `Incoming`, recording in an
//! [`Upload`] how it failed, so the upstream layer tells a client's failure (bad framing, a cut
//! body) from an origin's.
//!
//! Invariants: a body that did not end cleanly ends in an error frame, never a clean end, so
//! the origin never receives a cut body as if it were complete; what failed is recorded here,
//! by the body itself (`Upload::fault`), never guessed from error text. Requests without a body
//! never get one of these (no allocation or atomic on that path).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

/// Why a client's request body failed while it was being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// Its chunked framing is malformed (a bad or overflowing chunk size, no CRLF after a
    /// chunk's data, ...): RFC 9112 7.1.
    Framing,
    /// It ended before its declared length or last chunk (the client closed, or reset).
    Cut,
}

impl ClientBodyFault {
    /// Stable name (Cache-Status detail, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientBodyFault::Framing => "request-body-framing",
            ClientBodyFault::Cut => "request-body-cut",
        }
    }

    /// The status the client gets (RFC 9112 6.3: a framing error is the client's, answered
    /// 400 and the connection closed).
    pub fn status(self) -> StatusCode {
        match self {
            ClientBodyFault::Framing | ClientBodyFault::Cut => StatusCode::BAD_REQUEST,
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
    /// How it failed.
    fault: OnceLock<ClientBodyFault>,
}

impl Upload {
    /// How the body failed, if it did.
    pub fn fault(&self) -> Option<ClientBodyFault> {
        self.fault.get().copied()
    }

    fn fail(&self, fault: ClientBodyFault) {
        let _ = self.fault.set(fault);
    }
}

/// A client's request body, feeding an [`Upload`].
#[derive(Debug)]
pub struct RequestBody {
    inner: hyper::body::Incoming,
    upload: Arc<Upload>,
}

impl RequestBody {
    /// `inner` (a body that is not empty).
    pub fn new(inner: hyper::body::Incoming) -> Self {
        RequestBody {
            inner,
            upload: Arc::new(Upload::default()),
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
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => self.failure(ClientBodyFault::of(&e), Some(e)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the body has ended (never after a failure).
    pub fn is_end_stream(&self) -> bool {
        self.upload.fault().is_none() && self.inner.is_end_stream()
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
    }
}
