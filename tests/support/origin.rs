//! The in-process origin of the integration tests: hyper on `127.0.0.1:0` (HTTP/1.1, or h2 and
//! HTTP/1.1 over TLS), answering through a handler that sees each request's ordinal.
//!
//! Invariant: every request is counted and logged on arrival, before the handler's delay, so
//! a test's exact origin counts include requests still being answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::listen::{Listening, listen};

/// Response body type of the in-process origin.
pub type Body = BoxBody<Bytes, Infallible>;

/// A body with a known length: hyper sends it with `Content-Length`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// Builds an origin response.
pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(body)).expect("valid test response")
}

/// What the origin does with the `n`-th request (counting from 0).
pub enum Act {
    /// Answer after the delay.
    Reply(Duration, Response<Body>),
    /// Close the connection without an answer after the delay.
    Reset(Duration),
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    /// What arrived of the body (up to the failure, when reading it failed).
    pub body: Bytes,
    /// The body arrived whole: its declared length or its last chunk, no error before.
    pub complete: bool,
}

#[derive(Default)]
struct Log {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

type Handler = dyn Fn(usize, &Request<Bytes>) -> Act + Send + Sync;

/// An in-process origin on `127.0.0.1:0` that counts and logs every request.
pub struct Origin {
    pub addr: SocketAddr,
    log: Arc<Log>,
    _listening: Listening,
}

impl Origin {
    /// Starts an origin answering every request with `handler`.
    pub async fn start(
        handler: impl Fn(&Request<Bytes>) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        Self::start_delayed(Duration::ZERO, handler).await
    }

    /// Like [`Origin::start`], but every response is delayed by `delay` (a slow origin).
    pub async fn start_delayed(
        delay: Duration,
        handler: impl Fn(&Request<Bytes>) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(move |_, req| Act::Reply(delay, handler(req))).await
    }

    /// An origin whose delay and answer depend on the request's ordinal.
    pub async fn start_with(
        handler: impl Fn(usize, &Request<Bytes>) -> Act + Send + Sync + 'static,
    ) -> Self {
        Self::serve(None, Arc::new(handler)).await
    }

    /// Like [`Origin::start_with`], over TLS with `config` (h2 or HTTP/1.1 by ALPN).
    pub async fn start_tls(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(usize, &Request<Bytes>) -> Act + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Some(config), Arc::new(handler)).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>, handler: Arc<Handler>) -> Self {
        let log = Arc::new(Log::default());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listening = listen({
            let log = log.clone();
            move |stream| {
                let (log, handler, acceptor) = (log.clone(), handler.clone(), acceptor.clone());
                async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        answer(log.clone(), handler.clone(), req)
                    });
                    match acceptor {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                        }
                    }
                }
            }
        })
        .await;
        Origin {
            addr: listening.addr,
            log,
            _listening: listening,
        }
    }

    /// Absolute URL of `path` on this origin (for forward-mode requests).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Total number of requests received.
    pub fn hits(&self) -> usize {
        self.log.hits.load(Ordering::SeqCst)
    }

    /// Number of requests received for `method path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let seen = self.log.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.method.as_str() == method && s.path == path)
            .count()
    }

    /// The last request received for `path`.
    pub fn last(&self, path: &str) -> Seen {
        let seen = self.log.seen.lock().unwrap();
        seen.iter()
            .rev()
            .find(|s| s.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("origin never saw {path}"))
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    /// Requests that carried `If-None-Match` (revalidations).
    pub fn conditional(&self) -> usize {
        self.log
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.headers.contains_key("if-none-match"))
            .count()
    }

    /// Waits (bounded) until the origin has seen `n` requests; returns the count then.
    pub async fn wait_hits(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.hits() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.hits()
    }
}

/// One request: collected, counted and logged, then answered as the handler says.
async fn answer(
    log: Arc<Log>,
    handler: Arc<Handler>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let (mut body, mut got) = (body, Vec::new());
    let complete = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
            Some(Err(_)) => break false,
            None => break true,
        }
    };
    let body = Bytes::from(got);
    let req = Request::from_parts(parts, body);
    let n = log.hits.fetch_add(1, Ordering::SeqCst);
    log.seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string()),
        headers: req.headers().clone(),
        body: req.body().clone(),
        complete,
    });
    match handler(n, &req) {
        Act::Reply(delay, res) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(res)
        }
        Act::Reset(delay) => {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::other("origin resets"))
        }
    }
}
