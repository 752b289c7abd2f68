//! The seam between the proxy and origins: [`Origin`] sends one request and gives back a
//! response head with an [`OriginBody`]. Production sends through the pooled hyper client
//! (`upstream::HyperOrigin`); the pipeline's unit tests send to a scripted origin, so the cache
//! state machine runs without a socket.
//!
//! A request that went out on a reused connection the origin closed before answering is sent
//! once more when that is safe ([`retry`]); an origin's interim (1xx) responses are bounded
//! per request ([`interim`]).
//!
//! Invariant: everything after the send (the response timeout, the head size limit, metrics,
//! 304 merges, fills, pass-through) is the same code for every origin; an [`Origin`] only
//! transports.

pub mod interim;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

use super::body::{BoxError, ProxyBody, poll_incoming};
use super::upstream::UpstreamError;

/// What [`Origin::send`] returns: boxed once per origin request (never on a cache hit).
pub type OriginFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<OriginBody>, UpstreamError>> + Send + 'a>>;

/// Something that answers requests the cache sends forward.
pub trait Origin: Send + Sync + std::fmt::Debug {
    /// Send `req` (absolute URI, upstream headers already rewritten) and wait for the
    /// response head. Timeouts are the caller's (`Upstream::send`).
    fn send(&self, req: Request<ProxyBody>) -> OriginFuture<'_>;
}

/// A response body from an origin.
#[derive(Debug)]
pub enum OriginBody {
    /// From a real connection (no allocation beyond hyper's own).
    Hyper(hyper::body::Incoming),
    /// Any other body (a scripted origin's).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "made only by the scripted origins of unit tests")
    )]
    Other(UnsyncBoxBody<Bytes, BoxError>),
}

impl OriginBody {
    /// A body of any type (boxed once).
    #[cfg(test)]
    pub fn other<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        OriginBody::Other(body.map_err(Into::into).boxed_unsync())
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OriginBody::Hyper(b) => poll_incoming(b, cx),
            OriginBody::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Hyper(b) => b.is_end_stream(),
            OriginBody::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Hyper(b) => b.size_hint(),
            OriginBody::Other(b) => b.size_hint(),
        }
    }
}
