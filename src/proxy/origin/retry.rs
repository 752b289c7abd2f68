//! One retry of a request whose reused keep-alive connection the origin closed under it (RFC
//! 9112 9.3.1): an origin that closes an idle connection just as hoard sends on it gives no
//! response, through no fault of the request.
//!
//! Invariant: a request is sent a second time only when all of these hold: its method is
//! idempotent (RFC 9110 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and it has no body
//! ([`Replay::of`]); the connection it went out on had already carried a response (marked by
//! [`note_answered`] through the connector's [`Tracked`] wrapper: a fresh connection that
//! fails is the origin's answer, never retried); and hyper reports that connection closed or
//! reset before a response head ([`closed_before_head`]). At most once: the second attempt's
//! failure is the client's 502. hyper-util's own `retry_canceled_requests` covers only
//! requests not yet written.

use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use futures_util::future::MapOk;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, Connected, Connection};

use super::interim::Interim;
use crate::proxy::body::ProxyBody;

/// Send `req` through `client`, and once more when the request is a [`Replay`] and it failed
/// on a reused connection that closed before a response head.
pub async fn send<C>(
    client: &Client<C, ProxyBody>,
    mut req: Request<ProxyBody>,
    interim: &Interim,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let replay = Replay::of(&req);
    interim.watch(&mut req);
    let res = match client.request(req).await {
        Err(e) => match replay {
            Some(r) if closed_before_head(&e) && on_reused_connection(&e) => {
                tracing::debug!(uri = %r.uri, error = %e, "reused origin connection closed; sending again");
                let mut again = r.request();
                interim.watch(&mut again);
                client.request(again).await?
            }
            _ => return Err(e),
        },
        Ok(res) => res,
    };
    note_answered(&res);
    Ok(res)
}

/// Whether a connection has carried a response head: shared by the connection's `Connected`
/// info (hyper-util hands it to every response and error on that connection).
#[derive(Debug, Clone, Default)]
pub struct Answered(Arc<AtomicBool>);

/// A transport that tells hyper-util, through its `Connected` extras, whether it has
/// answered before.
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    answered: Answered,
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.answered.clone())
    }
}

/// A connector whose connections are [`Tracked`].
#[derive(Debug, Clone)]
pub struct Tracking<C>(pub C);

impl<C: tower_service::Service<Uri>> tower_service::Service<Uri> for Tracking<C> {
    type Response = Tracked<C::Response>;
    type Error = C::Error;
    type Future = MapOk<C::Future, fn(C::Response) -> Tracked<C::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        fn track<T>(io: T) -> Tracked<T> {
            Tracked {
                io,
                answered: Answered::default(),
            }
        }
        self.0
            .call(dst)
            .map_ok(track as fn(C::Response) -> Tracked<C::Response>)
    }
}

/// Mark the connection `res` came on as having answered (its next request is on a reused
/// connection).
pub fn note_answered<B>(res: &Response<B>) {
    if let Some(a) = res.extensions().get::<Answered>() {
        a.0.store(true, Ordering::Relaxed);
    }
}

/// The head of a request that may be sent again: idempotent, without a body.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of `req`'s head when `req` may be retried.
    pub fn of<B: Body>(req: &Request<B>) -> Option<Replay> {
        (req.method().is_idempotent() && req.body().is_end_stream()).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    /// The request to send again.
    pub fn request(self) -> Request<ProxyBody> {
        let mut req = Request::new(ProxyBody::Empty);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Whether `e` happened on a connection that had answered before.
pub fn on_reused_connection(e: &hyper_util::client::legacy::Error) -> bool {
    let Some(info) = e.connect_info() else {
        return false;
    };
    let mut extras = http::Extensions::new();
    info.get_extras(&mut extras);
    extras
        .get::<Answered>()
        .is_some_and(|a| a.0.load(Ordering::Relaxed))
}

/// Whether `e` is the connection closing or resetting before a response head (not a connect
/// failure, not a malformed response).
pub fn closed_before_head(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<io::Error>()
            && is_closed(io.kind())
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// An I/O error that means the peer closed or reset the connection.
fn is_closed(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;

    #[test]
    fn only_idempotent_requests_without_a_body_are_replayed() {
        let empty = || ProxyBody::Empty;
        let some = || ProxyBody::full(Bytes::from_static(b"x"));
        // (method, has a body, replayed)
        let cases = [
            (Method::GET, false, true),
            (Method::HEAD, false, true),
            (Method::OPTIONS, false, true),
            (Method::TRACE, false, true),
            (Method::PUT, false, true),
            (Method::DELETE, false, true),
            (Method::PUT, true, false),
            (Method::GET, true, false),
            (Method::POST, false, false),
            (Method::POST, true, false),
            (Method::PATCH, false, false),
            (Method::CONNECT, false, false),
        ];
        for (method, body, want) in cases {
            let mut req = Request::new(if body { some() } else { empty() });
            *req.method_mut() = method.clone();
            *req.uri_mut() = Uri::from_static("http://origin.test/a");
            req.headers_mut()
                .insert("x-one", http::HeaderValue::from_static("1"));
            let replay = Replay::of(&req);
            assert_eq!(replay.is_some(), want, "{method} body={body}");
            if let Some(r) = replay {
                let again = r.request();
                assert_eq!(again.method(), method);
                assert_eq!(again.uri(), req.uri());
                assert_eq!(again.headers(), req.headers());
                assert!(again.body().is_end_stream());
            }
        }
    }

    #[test]
    fn closed_kinds() {
        for (kind, want) in [
            (io::ErrorKind::ConnectionReset, true),
            (io::ErrorKind::ConnectionAborted, true),
            (io::ErrorKind::BrokenPipe, true),
            (io::ErrorKind::UnexpectedEof, true),
            (io::ErrorKind::TimedOut, false),
            (io::ErrorKind::InvalidData, false),
            (io::ErrorKind::ConnectionRefused, false),
        ] {
            assert_eq!(is_closed(kind), want, "{kind:?}");
        }
    }
}
