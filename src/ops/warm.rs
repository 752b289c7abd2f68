//! `hoard warm`: fetch a list of URLs through a running proxy so they are stored, with
//! bounded concurrency, progress on stderr, and a summary by outcome (from each response's
//! `Cache-Status`).
//!
//! Each worker keeps one keep-alive HTTP/1.1 connection to the proxy and sends absolute-form
//! `GET`s (`https://` URLs too: the proxy fetches and stores them under their `https://`
//! key). A body is read to its end so the proxy's fill completes. Nothing here panics on a
//! network error: every failure becomes a [`Failure`] with its reason.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::proxy::metrics::outcome;

/// How a URL was warmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Warmed {
    /// The proxy fetched it and stored it (or refreshed it after a 304).
    Stored,
    /// It was already stored and fresh (a hit).
    AlreadyFresh,
}

/// Why a URL was not warmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "kebab-case")]
pub enum Failure {
    /// The line is not an absolute http(s) URL.
    BadUrl(String),
    /// The proxy could not be reached or the connection broke.
    Proxy(String),
    /// No complete answer within the timeout.
    Timeout,
    /// The answer was an error status (the `Cache-Status` says more).
    Status(u16, String),
    /// The answer was served but not stored (its `Cache-Status`: uncacheable, bypass...).
    NotStored(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::BadUrl(e) => write!(f, "not an absolute http(s) URL: {e}"),
            Failure::Proxy(e) => write!(f, "proxy: {e}"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Status(s, cs) => write!(f, "status {s} ({cs})"),
            Failure::NotStored(cs) => write!(f, "not stored ({cs})"),
        }
    }
}

/// One URL's result.
#[derive(Debug, Clone, Serialize)]
pub struct UrlResult {
    /// The URL as given.
    pub url: String,
    /// Warmed, or why not.
    pub result: Result<Warmed, Failure>,
}

/// `hoard warm`'s summary.
#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    /// URLs fetched and stored.
    pub stored: u64,
    /// URLs that were already fresh.
    pub already_fresh: u64,
    /// URLs that failed, with their reasons.
    pub failed: Vec<(String, Failure)>,
    /// Body bytes received.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl WarmReport {
    /// Whether every URL was warmed.
    pub fn all_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Options of a warm run.
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// The proxy (`http://host:port`).
    pub proxy: Uri,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Time allowed per URL (head and body).
    pub timeout: Duration,
}

/// The URLs of a list: one per line; blank lines and `#` comments ignored.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Classify a response by status and `Cache-Status`.
pub fn classify(status: u16, cache_status: &str) -> Result<Warmed, Failure> {
    let ours = cache_status.rsplit(',').next().unwrap_or("").trim();
    let stored = ours.split(';').skip(1).any(|p| p.trim() == "stored");
    if outcome(cache_status) == "hit" && status < 500 {
        return Ok(Warmed::AlreadyFresh);
    }
    if stored {
        return Ok(Warmed::Stored);
    }
    if status >= 400 {
        return Err(Failure::Status(status, ours.to_string()));
    }
    Err(Failure::NotStored(ours.to_string()))
}

/// What progress is printed as URLs complete.
#[derive(Debug, Default)]
struct Counts {
    done: AtomicU64,
    stored: AtomicU64,
    fresh: AtomicU64,
    failed: AtomicU64,
}

/// Warm `urls` through the proxy; progress goes to stderr (a bar on a terminal, a line every
/// 2 s otherwise).
pub async fn warm(urls: Vec<String>, opts: &WarmOptions, tty: bool) -> WarmReport {
    let start = Instant::now();
    let total = urls.len() as u64;
    let queue: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(urls.into()));
    let counts = Arc::new(Counts::default());
    let bytes = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (queue, counts, bytes, results) = (
            queue.clone(),
            counts.clone(),
            bytes.clone(),
            results.clone(),
        );
        let opts = opts.clone();
        workers.push(tokio::spawn(async move {
            let mut conn: Option<Sender> = None;
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(url) = next else { return };
                let result =
                    match tokio::time::timeout(opts.timeout, one(&opts.proxy, &url, &mut conn))
                        .await
                    {
                        Ok(Ok((r, n))) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                            r
                        }
                        Ok(Err(f)) => {
                            conn = None;
                            Err(f)
                        }
                        Err(_) => {
                            conn = None;
                            Err(Failure::Timeout)
                        }
                    };
                match &result {
                    Ok(Warmed::Stored) => &counts.stored,
                    Ok(Warmed::AlreadyFresh) => &counts.fresh,
                    Err(_) => &counts.failed,
                }
                .fetch_add(1, Ordering::Relaxed);
                counts.done.fetch_add(1, Ordering::Relaxed);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(UrlResult { url, result });
            }
        }));
    }
    let progress = {
        let counts = counts.clone();
        tokio::spawn(async move {
            let every = if tty {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(2)
            };
            loop {
                tokio::time::sleep(every).await;
                print_progress(&counts, total, tty, false);
            }
        })
    };
    for w in workers {
        let _ = w.await;
    }
    progress.abort();
    print_progress(&counts, total, tty, true);
    let mut stored = 0;
    let mut already_fresh = 0;
    let mut failed = Vec::new();
    for r in std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner())) {
        match r.result {
            Ok(Warmed::Stored) => stored += 1,
            Ok(Warmed::AlreadyFresh) => already_fresh += 1,
            Err(f) => failed.push((r.url, f)),
        }
    }
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    WarmReport {
        stored,
        already_fresh,
        failed,
        bytes: bytes.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn print_progress(c: &Counts, total: u64, tty: bool, last: bool) {
    let done = c.done.load(Ordering::Relaxed);
    let (s, f, x) = (
        c.stored.load(Ordering::Relaxed),
        c.fresh.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
    );
    let mut err = std::io::stderr().lock();
    if tty {
        const W: u64 = 30;
        let filled = (done * W).checked_div(total).unwrap_or(W) as usize;
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {done}/{total}  stored {s}  fresh {f}  failed {x}",
            "#".repeat(filled),
            ".".repeat(W as usize - filled)
        );
        if last {
            let _ = writeln!(err);
        }
    } else {
        let _ = writeln!(
            err,
            "warm: {done}/{total} done (stored {s}, already fresh {f}, failed {x})"
        );
    }
}

/// Fetch one URL through the proxy on `conn` (opened or reopened as needed): its result
/// and the body bytes received.
async fn one(
    proxy: &Uri,
    url: &str,
    conn: &mut Option<Sender>,
) -> Result<(Result<Warmed, Failure>, u64), Failure> {
    let target: Uri = match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        Ok(_) => return Ok((Err(Failure::BadUrl("no http(s) scheme and host".into())), 0)),
        Err(e) => return Ok((Err(Failure::BadUrl(e.to_string())), 0)),
    };
    let (status, cs, n) = fetch(proxy, &target, conn, false).await?;
    let result = match classify(status, &cs) {
        Err(Failure::NotStored(ours)) if ours.contains("detail=unknown-length") => {
            confirm(proxy, &target, conn)
                .await?
                .ok_or(Failure::NotStored(ours))
        }
        r => r,
    };
    Ok((result, n))
}

/// Attempts of [`confirm`], and the pause between them (the fill commits after its last
/// chunk reached the client: a moment later, not at once).
const CONFIRM_TRIES: u32 = 10;
const CONFIRM_PAUSE: Duration = Duration::from_millis(100);

/// A body of unknown length was sent before the proxy knew whether it would be stored
/// (`detail=unknown-length`): ask again with `only-if-cached` (answered from the cache or
/// 504, never from the origin) until it is a hit (`Some(Stored)`) or the tries run out
/// (`None`: not stored, e.g. it was over `max-object-size`).
async fn confirm(
    proxy: &Uri,
    target: &Uri,
    conn: &mut Option<Sender>,
) -> Result<Option<Warmed>, Failure> {
    for _ in 0..CONFIRM_TRIES {
        let (status, cs, _) = fetch(proxy, target, conn, true).await?;
        if matches!(classify(status, &cs), Ok(Warmed::AlreadyFresh)) {
            return Ok(Some(Warmed::Stored));
        }
        tokio::time::sleep(CONFIRM_PAUSE).await;
    }
    Ok(None)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// GET `target` through the proxy (with `Cache-Control: only-if-cached` when
/// `only_if_cached`), reading the body to its end: status, `Cache-Status`, body bytes.
async fn fetch(
    proxy: &Uri,
    target: &Uri,
    conn: &mut Option<Sender>,
    only_if_cached: bool,
) -> Result<(u16, String, u64), Failure> {
    let host = target
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut req = Request::get(target.clone())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "hoard-warm");
    if only_if_cached {
        req = req.header(http::header::CACHE_CONTROL, "only-if-cached");
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::BadUrl(e.to_string()))?;
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => conn.insert(connect(proxy).await?),
    };
    sender
        .ready()
        .await
        .map_err(|e| Failure::Proxy(e.to_string()))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Proxy(e.to_string()))?;
    let status = res.status().as_u16();
    let cs = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = res.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Proxy(format!("body: {e}")))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, cs, n))
}

async fn connect(proxy: &Uri) -> Result<Sender, Failure> {
    let host = proxy.host().unwrap_or("127.0.0.1");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = proxy.port_u16().unwrap_or(3128);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| Failure::Proxy(format!("connect {host}:{port}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Proxy(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_cache_status() {
        let cases = [
            (
                200,
                "hoard; fwd=uri-miss; fwd-status=200; stored",
                Ok(Warmed::Stored),
            ),
            (200, "hoard; hit; ttl=50", Ok(Warmed::AlreadyFresh)),
            (
                200,
                "hoard; fwd=stale; fwd-status=304; stored; ttl=60",
                Ok(Warmed::Stored),
            ),
            (
                200,
                "hoard; fwd=uri-miss; fwd-status=200; detail=uncacheable",
                Err(Failure::NotStored(
                    "hoard; fwd=uri-miss; fwd-status=200; detail=uncacheable".into(),
                )),
            ),
            (
                502,
                "hoard; fwd=uri-miss; detail=connect-error",
                Err(Failure::Status(
                    502,
                    "hoard; fwd=uri-miss; detail=connect-error".into(),
                )),
            ),
        ];
        for (status, cs, want) in cases {
            assert_eq!(classify(status, cs), want, "{cs}");
        }
        assert_eq!(
            parse_list("# list\nhttp://a/\n\n  http://b/  \n"),
            vec!["http://a/", "http://b/"]
        );
    }
}
