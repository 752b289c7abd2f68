//! Stampede protection, end to end: one origin request per key however many clients ask at
//! once (coalescing in-process and across processes sharing a cache directory), XFetch early
//! refresh with an injected random source, stale-while-revalidate / stale-if-error windows,
//! hit-for-pass, and bounded waits. Every count is exact; every wait is bounded.

mod coalescing;
mod processes;
mod windows;
mod xfetch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::proxy::harness::{Body, RawResponse, Seen, send};

/// What the origin does with the `n`-th request (counting from 0).
pub enum Act {
    /// Answer after the delay.
    Reply(Duration, Response<Body>),
    /// Close the connection without an answer after the delay.
    Reset(Duration),
}

type Handler = dyn Fn(usize, &Request<Bytes>) -> Act + Send + Sync;

/// An in-process origin whose delay and answer depend on the request number, counting and
/// logging every request on arrival (before its delay).
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Origin {
    pub async fn start(
        handler: impl Fn(usize, &Request<Bytes>) -> Act + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn({
            let (hits, seen) = (hits.clone(), seen.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (hits, seen, handler) = (hits.clone(), seen.clone(), handler.clone());
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (hits, seen, handler) = (hits.clone(), seen.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let req = Request::from_parts(parts, body);
                            let n = hits.fetch_add(1, Ordering::SeqCst);
                            seen.lock().unwrap().push(Seen {
                                method: req.method().clone(),
                                path: req.uri().path().to_owned(),
                                headers: req.headers().clone(),
                                body: req.body().clone(),
                            });
                            match handler(n, &req) {
                                Act::Reply(delay, res) => {
                                    tokio::time::sleep(delay).await;
                                    Ok::<_, std::io::Error>(res)
                                }
                                Act::Reset(delay) => {
                                    tokio::time::sleep(delay).await;
                                    Err(std::io::Error::other("origin resets"))
                                }
                            }
                        }
                    });
                    tokio::spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        let _ = conn.await;
                    });
                }
            }
        });
        Origin {
            addr,
            hits,
            seen,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests that carried `If-None-Match` (revalidations).
    pub fn conditional(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.headers.contains_key("if-none-match"))
            .count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
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

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `n` concurrent `GET target` on fresh connections to `proxies` (round robin), each with
/// the time it took.
pub async fn burst(proxies: &[SocketAddr], target: &str, n: usize) -> Vec<(RawResponse, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let proxy = proxies[i % proxies.len()];
            let target = target.to_owned();
            tokio::spawn(async move {
                let t = Instant::now();
                let res = send(proxy, "GET", &target, &[]).await;
                (res, t.elapsed())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

/// The `detail` parameter of the response's `Cache-Status`, if any.
pub fn detail(res: &RawResponse) -> Option<String> {
    let raw = res.cache_status().raw;
    let (_, rest) = raw.split_once("detail=")?;
    Some(
        rest.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .to_owned(),
    )
}

/// A body of `chunks` equal chunks, one every `gap` (an origin sending slowly).
pub struct SlowBody {
    chunk: Bytes,
    left: usize,
    gap: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SlowBody {
    pub fn boxed(chunk: Bytes, chunks: usize, gap: Duration) -> Body {
        SlowBody {
            chunk,
            left: chunks,
            gap,
            sleep: None,
        }
        .boxed()
    }
}

impl HttpBody for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let gap = self.gap;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}
