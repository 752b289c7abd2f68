//! The dashboard of the admin server: `GET /` (a self-contained page: HTML, CSS and JS
//! compiled into the binary, no CDN), `GET /events` (server-sent events: every request as
//! it happens, and counters each second), `GET /api/store` (the store summary of `hoard
//! stats`), `GET /api/urls` (stored URLs with their heads) and `POST /api/purge`.
//!
//! Invariants: the request feed costs an unwatched proxy one relaxed load per request
//! ([`Metrics::publish`](super::metrics::Metrics::publish)); a subscriber that falls behind
//! loses events (bounded broadcast, then a queue to its socket bounded in bytes,
//! [`queue::STREAM_BYTES`], filled with `try_send`), it never blocks a request, and one that
//! reads nothing holds at most that many bytes. An event stream writes at least once a second,
//! so the admin server's idle timeout never cuts it while it is read, and it holds one of
//! the admin server's connection slots like any other connection. A purge comes only from a
//! `purge-allow` client, with the `X-Hoard-Purge` header (which a cross-site form or a
//! simple cross-origin fetch cannot send) and no foreign `Origin` or `Sec-Fetch-Site`.

mod heavy;
mod queue;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

pub use self::heavy::Gate;
use self::heavy::heavy;
use self::queue::{QueueRx, QueueTx, Refused, STREAM_BYTES, queue};
use super::metrics::{Served, Subscription};
use super::pipeline;
use super::service::State;
use crate::ops;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page may load only its own script and style and talk only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The header a purge must carry (a custom header: browsers send it cross-origin only
/// after a CORS preflight, which this server never approves).
pub const PURGE_HEADER: &str = "x-hoard-purge";

/// How often counters are sent (also the heartbeat keeping the connection busy).
const TICK: Duration = Duration::from_secs(1);
/// Largest purge request body.
const MAX_PURGE_BODY: usize = 8 * 1024;
/// URLs returned by one `/api/urls` call at most.
const MAX_URLS: usize = 200;

/// Body of an admin response: whole, or an event stream fed by a task.
#[derive(Debug)]
pub enum AdminBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// Server-sent events until the feeding task ends or the client goes.
    Stream(QueueRx),
}

impl AdminBody {
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        AdminBody::Full(Some(b.into()))
    }
}

impl http_body::Body for AdminBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            AdminBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            AdminBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AdminBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AdminBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            AdminBody::Full(None) => SizeHint::with_exact(0),
            AdminBody::Stream(_) => SizeHint::default(),
        }
    }
}

fn respond(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut res = Response::new(AdminBody::full(body));
    *res.status_mut() = code;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    res
}

fn json(code: StatusCode, v: &impl Serialize) -> Response<AdminBody> {
    match serde_json::to_vec(v) {
        Ok(b) => respond(code, "application/json", b),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render JSON: {e}"),
        ),
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    error: &'a str,
}

fn problem(code: StatusCode, msg: &str) -> Response<AdminBody> {
    json(code, &Problem { error: msg })
}

/// Answer a dashboard path, or `None` when the path is not the dashboard's.
pub async fn route(
    st: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    gate: &Gate,
) -> Option<Response<AdminBody>> {
    let path = req.uri().path().to_string();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let res = match (path.as_str(), get) {
        ("/", true) | ("/index.html", true) => {
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(CSP),
            );
            r.headers_mut()
                .insert("x-frame-options", header::HeaderValue::from_static("DENY"));
            r
        }
        ("/app.js", true) => respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        ("/app.css", true) => respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        ("/events", true) => events(st),
        ("/api/store", true) => store_summary(st, gate).await,
        ("/api/urls", true) => urls(st, req.uri(), gate).await,
        ("/api/purge", false) if req.method() == Method::POST => purge(st, req, peer).await,
        (
            "/" | "/index.html" | "/app.js" | "/app.css" | "/events" | "/api/store" | "/api/urls",
            false,
        )
        | ("/api/purge", true) => {
            let mut r = problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if path == "/api/purge" {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            r
        }
        _ => return None,
    };
    Some(res)
}

/// What `/events` sends each second: this process's counters since it started.
#[derive(Debug, Serialize)]
struct Tick {
    time_ms: u64,
    /// Requests handled (every outcome).
    requests: u64,
    /// Origin exchanges made (fetches and revalidations).
    upstream_requests: u64,
    /// Hits, cacheable misses and their bytes.
    served: Served,
    /// Events this subscriber lost because it fell behind.
    dropped: u64,
}

/// Why an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// The client closed the connection (or the admin server dropped it).
    ClientGone,
    /// The proxy is going away (the feed closed).
    FeedClosed,
}

/// `GET /events`: `event: access` per request, `event: tick` per second.
fn events(st: &Arc<State>) -> Response<AdminBody> {
    let (tx, rx) = queue(STREAM_BYTES);
    let sub = st.metrics.subscribe();
    let st = st.clone();
    tokio::spawn(async move {
        let why = feed(&st, sub, &tx).await;
        tracing::debug!(?why, "dashboard event stream ended");
    });
    let mut res = Response::new(AdminBody::Stream(rx));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

fn sse(event: &str, data: &impl Serialize) -> Option<Bytes> {
    let json = serde_json::to_string(data).ok()?;
    Some(Bytes::from(format!("event: {event}\ndata: {json}\n\n")))
}

async fn feed(st: &State, mut sub: Subscription, tx: &QueueTx) -> StreamEnd {
    // Reconnect after 2 s if the stream breaks (EventSource does it by itself).
    if tx
        .try_send(Bytes::from_static(b"retry: 2000\n: hoard\n\n"))
        .is_err()
    {
        return StreamEnd::ClientGone;
    }
    let mut dropped = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let chunk = tokio::select! {
            ev = sub.rx.recv() => match ev {
                Ok(ev) => sse("access", &*ev),
                Err(RecvError::Lagged(n)) => {
                    dropped += n;
                    continue;
                }
                Err(RecvError::Closed) => return StreamEnd::FeedClosed,
            },
            _ = tick.tick() => {
                let (requests, upstream_requests) = st.metrics.totals();
                sse("tick", &Tick {
                    time_ms: super::metrics::unix_ms(),
                    requests,
                    upstream_requests,
                    served: st.metrics.live(),
                    dropped,
                })
            }
            _ = tx.closed() => return StreamEnd::ClientGone,
        };
        let Some(chunk) = chunk else { continue };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(Refused::Full) => dropped += 1,
            Err(Refused::Closed) => return StreamEnd::ClientGone,
        }
    }
}

/// `GET /api/store`: the summary of `hoard stats` (entries, size, limit, served counts,
/// top hosts by bytes). Walks every row: fine for the dashboard's occasional refresh.
async fn store_summary(st: &State, gate: &Gate) -> Response<AdminBody> {
    let store = st.store.clone();
    match heavy(gate, move || ops::stats(&store, 10)).await {
        Ok(Ok(r)) => json(StatusCode::OK, &r),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// One stored URL with the head of its (first) variant.
#[derive(Debug, Serialize)]
struct UrlRow {
    url: String,
    host: String,
    size: u64,
    variants: u64,
    status: Option<u16>,
    age: Option<u64>,
    ttl: Option<u64>,
    fresh: Option<bool>,
    vary: Vec<String>,
    cache_status: Option<String>,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
struct UrlList {
    total: usize,
    urls: Vec<UrlRow>,
}

/// The value of query parameter `name` (percent-decoded, `+` as space).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `url` matches the search `q`: a prefix when `q` names a scheme, else a
/// substring (case-insensitive).
fn url_matches(url: &str, q: &str) -> bool {
    let q = q.trim();
    if q.is_empty() {
        return true;
    }
    if q.contains("://") {
        return url.starts_with(q);
    }
    url.to_ascii_lowercase().contains(&q.to_ascii_lowercase())
}

/// `GET /api/urls?q=PREFIX-OR-TEXT&host=HOST&limit=N`.
async fn urls(st: &State, uri: &Uri, gate: &Gate) -> Response<AdminBody> {
    let q = query_param(uri, "q").unwrap_or_default();
    let host = query_param(uri, "host").filter(|h| !h.trim().is_empty());
    let limit = query_param(uri, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50)
        .min(MAX_URLS);
    let store = st.store.clone();
    let rules = st.cfg.rules.clone();
    let res = heavy(gate, move || {
        let page = ops::list_page(
            &store,
            host.as_deref(),
            |method, url| method == "GET" && url_matches(url, &q),
            limit,
        )?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for e in &page.urls {
            let shown = ops::show(&store, &e.url, &rules, now).ok().flatten();
            let first = shown.as_ref().and_then(|s| s.variants.first());
            out.push(UrlRow {
                url: e.url.clone(),
                host: e.host.clone(),
                size: e.size,
                variants: e.variants,
                status: e.status,
                age: first.map(|v| v.age),
                ttl: first.map(|v| v.ttl),
                fresh: first.map(|v| v.fresh),
                vary: shown.as_ref().map(|s| s.vary.clone()).unwrap_or_default(),
                cache_status: shown.as_ref().map(|s| s.cache_status.clone()),
                headers: first.map(|v| v.headers.clone()).unwrap_or_default(),
            });
        }
        Ok::<_, ops::OpsError>(UrlList {
            total: page.total,
            urls: out,
        })
    })
    .await;
    match res {
        Ok(Ok(l)) => json(StatusCode::OK, &l),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Why a purge request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeRefusal {
    /// The client is outside `purge-allow`.
    NotAllowed,
    /// No `X-Hoard-Purge` header (a cross-site form or simple request).
    MissingHeader,
    /// `Origin` or `Sec-Fetch-Site` says the request comes from another site.
    CrossSite,
}

impl PurgeRefusal {
    fn message(self) -> &'static str {
        match self {
            PurgeRefusal::NotAllowed => {
                "purging is not allowed from this address (see purge-allow)"
            }
            PurgeRefusal::MissingHeader => "a purge needs the X-Hoard-Purge header",
            PurgeRefusal::CrossSite => "cross-site purge refused",
        }
    }
}

/// Whether a purge request may proceed: `purge-allow`, the custom header, same origin.
pub fn check_purge(
    headers: &HeaderMap,
    peer: SocketAddr,
    purge_allow: &[crate::config::IpNet],
) -> Result<(), PurgeRefusal> {
    if !purge_allow.iter().any(|n| n.contains(peer.ip())) {
        return Err(PurgeRefusal::NotAllowed);
    }
    if !headers.contains_key(PURGE_HEADER) {
        return Err(PurgeRefusal::MissingHeader);
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PurgeRefusal::CrossSite);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let same = match (origin.to_str().ok(), host) {
            (Some(o), Some(h)) => o.strip_prefix("http://") == Some(h),
            _ => false,
        };
        if !same {
            return Err(PurgeRefusal::CrossSite);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Purged {
    url: String,
    removed: u64,
}

/// `POST /api/purge` with the URL as the body (text).
async fn purge(st: &State, req: Request<Incoming>, peer: SocketAddr) -> Response<AdminBody> {
    if let Err(why) = check_purge(req.headers(), peer, &st.cfg.purge_allow) {
        tracing::info!(%peer, reason = why.message(), "dashboard purge refused");
        return problem(StatusCode::FORBIDDEN, why.message());
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "purge body too large or broken",
            );
        }
    };
    let url = String::from_utf8_lossy(&body).trim().to_string();
    let target: Uri = match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "the body must be an absolute http(s) URL",
            );
        }
    };
    let removed = pipeline::invalidate(st, vec![target]).await;
    tracing::info!(%peer, %url, removed, "dashboard purge");
    let code = if removed > 0 {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    json(code, &Purged { url, removed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_checks() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let far: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let allow = vec!["127.0.0.0/8".parse::<crate::config::IpNet>().unwrap()];
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let ok = [(PURGE_HEADER, "1"), ("host", "127.0.0.1:3129")];
        let cases: Vec<(HeaderMap, SocketAddr, Result<(), PurgeRefusal>)> = vec![
            (h(&ok), lo, Ok(())),
            (h(&ok), far, Err(PurgeRefusal::NotAllowed)),
            (
                h(&[("host", "127.0.0.1:3129")]),
                lo,
                Err(PurgeRefusal::MissingHeader),
            ),
            (
                h(&[
                    ok[0],
                    ok[1],
                    ("origin", "http://127.0.0.1:3129"),
                    ("sec-fetch-site", "same-origin"),
                ]),
                lo,
                Ok(()),
            ),
            (
                h(&[ok[0], ok[1], ("origin", "http://evil.example")]),
                lo,
                Err(PurgeRefusal::CrossSite),
            ),
            (
                h(&[ok[0], ok[1], ("sec-fetch-site", "cross-site")]),
                lo,
                Err(PurgeRefusal::CrossSite),
            ),
        ];
        for (i, (headers, peer, want)) in cases.into_iter().enumerate() {
            assert_eq!(check_purge(&headers, peer, &allow), want, "case {i}");
        }
    }

    #[test]
    fn query_and_search() {
        let u: Uri = "/api/urls?q=http%3A%2F%2Fa.example%2Fx&host=a+b"
            .parse()
            .unwrap();
        assert_eq!(query_param(&u, "q").as_deref(), Some("http://a.example/x"));
        assert_eq!(query_param(&u, "host").as_deref(), Some("a b"));
        assert_eq!(query_param(&u, "none"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert!(url_matches("http://a.example/x/y", "http://a.example/x"));
        assert!(!url_matches(
            "http://b.example/http://a.example/x",
            "http://a.example/x"
        ));
        assert!(url_matches("http://a.example/Img.png", "img"));
        assert!(url_matches("http://a.example/", ""));
    }
}
