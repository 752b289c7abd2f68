//! Unit tests of the request state machine without a socket: requests enter at
//! `State::dispatch_to` (normalisation, invalidation, the pipeline) with a buffered body, and
//! leave through a scripted [`Origin`] that counts and records every request it is sent. The
//! store is a temporary directory; fills and refreshes are awaited through
//! `State::background`, so no test sleeps to let a fill land.
//!
//! Time: the pipeline reads the clock itself; staleness is scripted with the origin's
//! `Cache-Control` (`max-age=0` is stale for any later request), so no test depends on timing.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use tokio::sync::Semaphore;

use super::*;
use crate::proxy::ProxyConfig;
use crate::proxy::origin::{Origin, OriginBody, OriginFuture};
use crate::proxy::upstream::UpstreamError;
use crate::store::Cache;

/// One answer of the scripted origin.
type Reply = Result<Response<OriginBody>, UpstreamError>;

/// What the scripted origin answers to its `n`th request (from 0).
type Script = dyn Fn(usize, &Parts) -> Reply + Send + Sync;

/// An origin without a socket: answers by ordinal, records what it was sent, and (when gated)
/// holds every answer until the test releases it.
struct Scripted {
    calls: AtomicUsize,
    seen: Mutex<Vec<Parts>>,
    gate: Option<Semaphore>,
    script: Box<Script>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl Origin for Scripted {
    fn send(&self, req: Request<ProxyBody>) -> OriginFuture<'_> {
        let (parts, _body) = req.into_parts();
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(parts.clone());
        Box::pin(async move {
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            (self.script)(n, &parts)
        })
    }
}

impl Scripted {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `n`th request's header `name`.
    fn sent(&self, n: usize, name: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let v = seen.get(n)?.headers.get(name)?;
        Some(v.to_str().unwrap().to_string())
    }
}

/// A response of the scripted origin.
fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut res = Response::new(OriginBody::other(Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        res.headers_mut().append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    if status != 304 {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(res)
}

/// A proxy state over a temporary store whose origin is `script`.
struct Harness {
    st: Arc<State>,
    origin: Arc<Scripted>,
    _dir: tempfile::TempDir,
}

/// What a client got.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    /// A response with its whole body read.
    async fn of(res: Response<ProxyBody>) -> Got {
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Assert that `Cache-Status` holds each of `parts`.
    fn says(&self, parts: &[&str]) {
        let cs = self.cache_status();
        for p in parts {
            assert!(cs.contains(p), "Cache-Status {cs:?} lacks {p:?}");
        }
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

const PEER: &str = "127.0.0.1:40000";

impl Harness {
    fn new(
        gated: bool,
        script: impl Fn(usize, &Parts) -> Reply + Send + Sync + 'static,
    ) -> Harness {
        // XFetch never fires early: ln(1) = 0.
        Harness::with_random(gated, || 1.0, script)
    }

    /// [`Harness::new`] with XFetch's random source.
    fn with_random(
        gated: bool,
        random: fn() -> f64,
        script: impl Fn(usize, &Parts) -> Reply + Send + Sync + 'static,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let local: SocketAddr = "127.0.0.1:3128".parse().unwrap();
        let mut cfg = ProxyConfig::new(local, dir.path());
        cfg.random = random;
        let store = Cache::builder(dir.path()).open().unwrap();
        let origin = Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            gate: gated.then(|| Semaphore::new(0)),
            script: Box::new(script),
        });
        let mut st = State::new(cfg, store, local, None).unwrap();
        st.upstream = st.upstream.clone().with_origin(origin.clone());
        Harness {
            st: Arc::new(st),
            origin,
            _dir: dir,
        }
    }

    fn target(path: &str) -> Uri {
        format!("http://origin.test{path}").parse().unwrap()
    }

    /// `method path` with `headers`, the whole response body read.
    async fn send_only(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        Got::of(self.respond(method, path, headers).await).await
    }

    /// `method path` with `headers`: the response as the pipeline returns it, body unread.
    async fn respond(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<ProxyBody> {
        let req = Self::request(method, path, headers);
        self.st
            .dispatch_to(req, PEER.parse().unwrap(), Self::target(path))
            .await
    }

    /// `method path` with `headers` (and `Host`), bodiless.
    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<ProxyBody> {
        let mut req = Request::new(ProxyBody::Empty);
        *req.method_mut() = Method::from_bytes(method.as_bytes()).unwrap();
        *req.uri_mut() = Self::target(path);
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("origin.test"));
        for (k, v) in headers {
            req.headers_mut().append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }

    /// [`send_only`](Self::send_only), then every fill and refresh it started has ended.
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let got = self.send_only(method, path, headers).await;
        self.settle().await;
        got
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        self.send("GET", path, headers).await
    }

    /// Wait for the background tasks (fills, refreshes) to end.
    async fn settle(&self) {
        self.st.background.close();
        self.st.background.wait().await;
        self.st.background.reopen();
    }

    fn key(path: &str) -> CacheKey {
        http_cache::cache_key(&Method::GET, &Self::target(path)).unwrap()
    }
}

/// Wait (at most 2,000 rounds of 5 ms) until `done`; the caller asserts afterwards.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn miss_fills_and_the_next_request_is_a_fresh_hit() {
    let h = Harness::new(false, |n, _| {
        reply(200, &[("cache-control", "max-age=60")], &format!("v{n}"))
    });
    let first = h.get("/a", &[]).await;
    assert_eq!((first.status, first.text()), (StatusCode::OK, "v0"));
    first.says(&["fwd=uri-miss"]);
    first.says(&["stored"]);
    let second = h.get("/a", &[]).await;
    assert_eq!((second.status, second.text()), (StatusCode::OK, "v0"));
    second.says(&["hit"]);
    assert_eq!(h.origin.calls(), 1, "the hit did not reach the origin");
}

#[tokio::test]
async fn a_reload_is_answered_after_its_commit() {
    let h = Harness::new(false, |n, _| {
        reply(200, &[("cache-control", "max-age=3600")], &format!("v{n}"))
    });
    h.get("/r", &[]).await;
    // The replacing fill is not awaited: its answer comes after its commit by itself.
    let reload = h
        .send_only("GET", "/r", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(reload.text(), "v1");
    let next = h.send_only("GET", "/r", &[]).await;
    assert_eq!(
        next.text(),
        "v1",
        "the replaced body answered after the reload"
    );
    next.says(&["hit"]);
    assert_eq!(h.origin.calls(), 2);
}

/// The synchronous start of the pipeline for `GET path`.
fn start_get<'a>(h: &'a Harness, path: &str, headers: &[(&str, &str)]) -> Started<'a> {
    get_or_head(
        &h.st,
        Harness::request("GET", path, headers),
        Harness::target(path),
    )
}

/// A GET of a cold key whose lookup has started and reads the store on a blocking thread
/// (the window CI found under load): polled once inside a store transaction of this thread,
/// it cannot read at once. It is not polled again until the caller awaits it; 100 ms pass
/// for its read to end.
async fn read_later<'a>(
    h: &'a Harness,
    path: &str,
    headers: &[(&str, &str)],
) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + 'a>> {
    let Started::Later(b) = start_get(h, path, headers) else {
        panic!("a cold key answered at once");
    };
    let mut b: Pin<Box<dyn Future<Output = Response<ProxyBody>> + 'a>> = Box::pin(b.finish());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    h.st.entries
        .store
        .transact(|_| {
            assert!(
                b.as_mut().poll(&mut cx).is_pending(),
                "the request reads the store later"
            );
            Ok(())
        })
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    b
}

#[tokio::test]
async fn a_fresh_entry_in_the_memory_front_is_answered_without_waiting() {
    let h = Harness::new(false, |n, _| {
        reply(200, &[("cache-control", "max-age=60")], &format!("v{n}"))
    });
    // Nothing stored: the request has to wait for the store (and then the origin).
    match start_get(&h, "/a", &[]) {
        Started::Answered(res) => panic!("a cold key answered at once: {:?}", res.headers()),
        Started::Later(later) => {
            let res = later.finish().await;
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().collect().await.unwrap();
        }
    }
    h.settle().await;
    // A hit read from the store puts the entry in the memory front.
    h.get("/a", &[]).await.says(&["hit"]);
    let Started::Answered(res) = start_get(&h, "/a", &[]) else {
        panic!("a fresh entry in the memory front waited");
    };
    let got = Got::of(res).await;
    assert_eq!((got.status, got.text()), (StatusCode::OK, "v0"));
    got.says(&["hit"]);
    assert_eq!(h.origin.calls(), 1);
    // A key the front does not hold still waits (for the store).
    match start_get(&h, "/b", &[]) {
        Started::Answered(_) => panic!("an unknown key answered at once"),
        Started::Later(later) => drop(later),
    }
}

/// The race CI once lost: a request's store read misses a fill that commits before it joins
/// the key's flight, and by then that flight is an XFetch refresh of the very entry (its
/// origin holds the 304). The request looks again and is served the stored entry; it never
/// waits for the refresh.
#[tokio::test]
async fn a_lookup_outdated_by_a_commit_never_waits_for_the_background_refresh() {
    let h = Harness::with_random(
        true,
        || 1e-300,
        |n, _| {
            let headers = [("cache-control", "max-age=100"), ("etag", "\"e\"")];
            match n {
                0 => reply(200, &headers, "v0"),
                _ => reply(304, &headers, ""),
            }
        },
    );
    let gate = h.origin.gate.as_ref().unwrap();
    // B: its lookup starts and reads the store (nothing there yet); B is not polled again
    // until the end.
    let b = read_later(&h, "/k", &[]).await;
    // A1 fills the key; its fetch takes 200 ms (XFetch's delta), so with u = 1e-300 every
    // later hit finds an early refresh due.
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        gate.add_permits(1);
    };
    let (first, ()) = tokio::join!(h.get("/k", &[]), release);
    assert_eq!(first.text(), "v0");
    // A2: a hit that starts the refresh, whose 304 the gate holds.
    let a2 = h.send_only("GET", "/k", &[]).await;
    a2.says(&["hit", "early-refresh"]);
    until(|| h.origin.calls() == 2).await;
    // B now learns its read missed: it is answered from the cache at once.
    let got = tokio::time::timeout(std::time::Duration::from_secs(2), b)
        .await
        .expect("B waited for the background refresh");
    let got = Got::of(got).await;
    assert_eq!((got.status, got.text()), (StatusCode::OK, "v0"));
    got.says(&["hit"]);
    gate.add_permits(8);
    h.settle().await;
    assert_eq!(h.origin.calls(), 2, "one fill, one refresh");
}

/// B's lookup misses the whole URL; before B goes on, another variant's fill commits. B
/// leads its own fetch (its variant is still absent), and its `Cache-Status` says what the
/// leader's second read found: `vary-miss`, not the lookup's outdated `uri-miss` (CI found the
/// window under load).
#[tokio::test]
async fn a_variant_committed_during_the_lookup_makes_the_miss_a_vary_miss() {
    let h = Harness::new(false, |_, req| {
        let enc = req
            .headers
            .get("accept-encoding")
            .unwrap()
            .to_str()
            .unwrap();
        let headers = [
            ("cache-control", "max-age=100"),
            ("vary", "Accept-Encoding"),
        ];
        reply(200, &headers, enc)
    });
    let br = [("accept-encoding", "br")];
    let b = read_later(&h, "/v", &br).await;
    let gzip = h.get("/v", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.text(), "gzip");
    h.settle().await;
    let got = Got::of(b.await).await;
    assert_eq!(got.text(), "br");
    got.says(&["fwd=vary-miss", "stored"]);
    h.settle().await;
    for (enc, body) in [("gzip", "gzip"), ("br", "br")] {
        let again = h.get("/v", &[("accept-encoding", enc)]).await;
        assert_eq!(again.text(), body);
        again.says(&["hit"]);
    }
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn stale_entry_is_revalidated_and_the_304_merged() {
    let h = Harness::new(false, |n, _| match n {
        0 => reply(
            200,
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "kept body",
        ),
        _ => reply(
            304,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
            ],
            "",
        ),
    });
    h.get("/b", &[]).await;
    let revalidated = h.get("/b", &[]).await;
    assert_eq!(h.origin.sent(1, "if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.text(), "kept body", "body kept from the entry");
    assert_eq!(revalidated.header("x-version"), Some("2"), "head updated");
    revalidated.says(&["fwd=stale", "fwd-status=304"]);
    // The merge was stored: fresh now, served without the origin.
    let hit = h.get("/b", &[]).await;
    assert_eq!(
        (hit.text(), hit.header("x-version")),
        ("kept body", Some("2"))
    );
    hit.says(&["hit"]);
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn concurrent_requests_for_a_cold_key_make_one_origin_call() {
    const CLIENTS: usize = 8;
    let h = Arc::new(Harness::new(true, |n, _| {
        reply(200, &[("cache-control", "max-age=60")], &format!("v{n}"))
    }));
    let spawn = |h: &Arc<Harness>| {
        let h = h.clone();
        tokio::spawn(async move { h.send_only("GET", "/c", &[]).await })
    };
    let mut clients = vec![spawn(&h)];
    until(|| h.origin.calls() == 1).await;
    assert_eq!(h.origin.calls(), 1, "the leader reached the origin");
    clients.extend((1..CLIENTS).map(|_| spawn(&h)));
    let key = Harness::key("/c");
    until(|| h.st.coalescer.waiting(key.as_bytes()) == CLIENTS - 1 || h.origin.calls() > 1).await;
    h.origin.gate.as_ref().unwrap().add_permits(CLIENTS);
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!((got.status, got.text()), (StatusCode::OK, "v0"));
    }
    h.settle().await;
    assert_eq!(
        h.origin.calls(),
        1,
        "exactly one origin call for {CLIENTS} clients"
    );
}

#[tokio::test]
async fn origin_failure_serves_the_stale_entry_under_stale_if_error() {
    // (the origin's answer to the revalidation: 500, else unreachable; what Cache-Status says)
    for (server_error, expect) in [(false, "stale-if-error"), (true, "fwd-status=500")] {
        let h = Harness::new(false, move |n, _| match n {
            0 => reply(
                200,
                &[("cache-control", "max-age=0, stale-if-error=60")],
                "last good",
            ),
            _ if server_error => reply(500, &[], "broken"),
            _ => Err(UpstreamError::Connect("refused".into())),
        });
        h.get("/d", &[]).await;
        let got = h.get("/d", &[]).await;
        assert_eq!((got.status, got.text()), (StatusCode::OK, "last good"));
        got.says(&["stale-if-error", expect]);
        assert_eq!(h.origin.calls(), 2);
    }
}

/// RFC 9111 5.2.2.2: a stale entry the unreachable origin cannot revalidate is a 504, never
/// served; a miss to an unreachable origin stays a 502.
#[tokio::test]
async fn origin_failure_without_stale_if_error_is_a_504_for_a_stale_entry() {
    let h = Harness::new(false, |n, _| match n {
        0 => reply(200, &[("cache-control", "max-age=0")], "old"),
        _ => Err(UpstreamError::Connect("refused".into())),
    });
    h.get("/d2", &[]).await;
    let got = h.get("/d2", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    got.says(&["connect-error"]);
    let miss = h.get("/d3", &[]).await;
    assert_eq!(miss.status, StatusCode::BAD_GATEWAY);
    miss.says(&["connect-error"]);
}

#[tokio::test]
async fn vary_miss_fetches_with_the_stored_etags_and_stores_the_new_variant() {
    let h = Harness::new(false, |_, req| {
        let lang = req.headers["accept-language"].to_str().unwrap().to_string();
        let etag = format!("\"{lang}\"");
        let headers = [
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language"),
            ("etag", etag.as_str()),
        ];
        reply(200, &headers, &format!("body-{lang}"))
    });
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    h.get("/e", &en).await.says(&["fwd=uri-miss"]);
    let miss = h.get("/e", &fr).await;
    assert_eq!(miss.text(), "body-fr");
    miss.says(&["fwd=vary-miss"]);
    assert_eq!(h.origin.sent(1, "if-none-match").as_deref(), Some("\"en\""));
    let (again_en, again_fr) = (h.get("/e", &en).await, h.get("/e", &fr).await);
    assert_eq!((again_en.text(), again_fr.text()), ("body-en", "body-fr"));
    again_en.says(&["hit"]);
    again_fr.says(&["hit"]);
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn responses_that_may_not_be_shared_are_never_served_to_the_next_request() {
    for cc in [
        "no-store",
        "private",
        "private, max-age=60",
        "max-age=60, no-store",
    ] {
        let h = Harness::new(false, move |n, _| {
            reply(200, &[("cache-control", cc)], &format!("v{n}"))
        });
        assert_eq!(h.get("/f", &[]).await.text(), "v0");
        let next = h.get("/f", &[]).await;
        assert_eq!(
            next.text(),
            "v1",
            "{cc}: the next request went to the origin"
        );
        assert!(
            !next.cache_status().contains("hit"),
            "{cc}: {}",
            next.cache_status()
        );
        assert_eq!(h.origin.calls(), 2, "{cc}");
    }
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_stored_response() {
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let h = Harness::new(false, |n, req| {
            let status = if req.method == Method::GET { 200 } else { 204 };
            reply(status, &[("cache-control", "max-age=60")], &format!("v{n}"))
        });
        h.get("/g", &[]).await;
        h.get("/g", &[]).await.says(&["hit"]);
        h.send(method, "/g", &[]).await;
        let after = h.get("/g", &[]).await;
        assert_eq!(
            after.text(),
            "v2",
            "{method}: the stored response was removed"
        );
        assert_eq!(h.origin.calls(), 3, "{method}");
    }
}

#[tokio::test]
async fn an_unsafe_method_that_fails_invalidates_nothing() {
    let h = Harness::new(false, |n, req| match req.method {
        Method::GET => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
        _ => reply(500, &[], "failed"),
    });
    h.get("/g2", &[]).await;
    h.send("POST", "/g2", &[]).await;
    let after = h.get("/g2", &[]).await;
    assert_eq!(after.text(), "v0");
    after.says(&["hit"]);
    assert_eq!(h.origin.calls(), 2);
}

/// An origin body fed by the test: each item is a chunk or a failure; pending while the
/// sender is alive and has sent nothing more.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, crate::proxy::body::BoxError>>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = crate::proxy::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A 200 (`max-age=60`, `Content-Length: len` when given) whose body is what the test sends.
fn fed_reply(
    len: Option<usize>,
) -> (
    Reply,
    tokio::sync::mpsc::UnboundedSender<Result<Bytes, crate::proxy::body::BoxError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut res = Response::new(OriginBody::other(Fed(rx)));
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    (Ok(res), tx)
}

impl Harness {
    /// The next GET of `path` is a hit answering `body`, and the origin was asked once.
    async fn hit_after_one_fetch(&self, path: &str, body: &str) {
        let hit = self.get(path, &[]).await;
        hit.says(&["hit"]);
        assert_eq!(hit.text(), body);
        assert_eq!(self.origin.calls(), 1);
    }
}

/// A small body that arrived with its head goes to the client as one buffer (hyper writes it
/// with the head), before the fill task has run; the fill still stores it.
#[tokio::test]
async fn a_body_that_arrived_whole_is_answered_in_one_buffer_and_stored() {
    let h = Harness::new(false, |n, _| {
        reply(200, &[("cache-control", "max-age=60")], &format!("v{n}"))
    });
    let res = h.respond("GET", "/whole", &[]).await;
    match res.body() {
        ProxyBody::Full(Some(b)) => assert_eq!(&b[..], b"v0"),
        other => panic!("expected one buffer, got {other:?}"),
    }
    h.settle().await;
    h.hit_after_one_fetch("/whole", "v0").await;
}

/// A body whose first chunk arrived with the head and whose rest came later reaches the
/// client whole, in order, and is stored whole.
#[tokio::test]
async fn a_body_partly_arrived_with_its_head_streams_whole_and_is_stored() {
    let h = Harness::new(false, |n, _| {
        if n > 0 {
            return reply(200, &[("cache-control", "max-age=60")], "again");
        }
        let (res, tx) = fed_reply(Some(4));
        tx.send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(Ok(Bytes::from_static(b"cd"))).unwrap();
        });
        res
    });
    let first = h.get("/parts", &[]).await;
    assert_eq!(first.text(), "abcd");
    h.hit_after_one_fetch("/parts", "abcd").await;
}

/// A body that failed before its head was answered (its first chunk and the failure both
/// already there) fails the client's body and is not stored, even without a declared length
/// to betray it.
#[tokio::test]
async fn a_body_that_failed_before_its_head_was_answered_is_not_stored() {
    let h = Harness::new(false, |n, _| {
        if n > 0 {
            return reply(200, &[("cache-control", "max-age=60")], "good");
        }
        let (res, tx) = fed_reply(None);
        tx.send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.send(Err("reset".into())).unwrap();
        res
    });
    let res = h.respond("GET", "/fails", &[]).await;
    assert!(res.into_body().collect().await.is_err());
    h.settle().await;
    let next = h.get("/fails", &[]).await;
    assert_eq!(next.text(), "good");
    assert_eq!(h.origin.calls(), 2);
}

/// A body stored in a value file (above the store's 32 KiB inline limit) is a hit read from
/// disk: its row is found on the request's task and its file opened on a blocking thread
/// without reading the row again; the next hit comes from the memory front, whole.
#[tokio::test]
async fn a_value_file_hit_is_served_whole() {
    let big = "x".repeat(100 * 1024);
    let body = big.clone();
    let h = Harness::new(false, move |_, _| {
        reply(200, &[("cache-control", "max-age=60")], &body)
    });
    let first = h.get("/big", &[]).await;
    first.says(&["stored"]);
    h.st.entries.hot.remove(Harness::key("/big").as_bytes());
    for _ in 0..2 {
        h.hit_after_one_fetch("/big", &big).await;
    }
}
