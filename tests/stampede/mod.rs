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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};

use crate::proxy::harness::{Body, RawResponse, send};
pub use crate::support::{Act, Origin};

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
