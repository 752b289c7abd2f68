//! Time never goes backwards for requests sent one after another: once a client has the whole
//! answer that replaced a stored response (a `Cache-Control: no-cache` reload answered with a
//! new 200, whole or streamed), refreshed its head (a 304) or removed it (a POST), a request
//! sent after it, on another connection, gets that answer's version, never the older one.
//! Each test runs the real binary against a loopback origin for a bounded number of rounds;
//! each round is one chance for the race (README "Guarantees", "Freshness and order").

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tempfile::TempDir;
use tokio::process::Child;

use super::harness::*;

/// Rounds per test. Before the fix, about one reload in two was followed by the old body.
const ROUNDS: usize = 30;

/// Length of the streamed bodies: past what the proxy answers as one buffer with the head
/// (64 KiB), over 1 MiB.
const STREAMED: usize = 1536 * 1024;

/// The origin's current version (starting at 1), which the test moves on before each round.
#[derive(Clone)]
struct Version(Arc<AtomicUsize>);

impl Version {
    fn new() -> Self {
        Version(Arc::new(AtomicUsize::new(1)))
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, n: usize) {
        self.0.store(n, Ordering::SeqCst);
    }
}

/// A body that starts with the line `version N`, of `len` bytes (at least that line), in
/// chunks of 64 KiB.
fn versioned_chunks(n: usize, len: usize) -> Vec<Bytes> {
    let mut body = format!("version {n}\n").into_bytes();
    let head = body.len();
    body.extend(pattern(len.saturating_sub(head)));
    body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect()
}

/// The first line of a body (`version N`).
fn version_of(body: &[u8]) -> String {
    let line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

/// An origin answering every GET with the current version, fresh for an hour, its body made by
/// `body`; every other method gets a 201.
async fn versioned_origin(
    version: &Version,
    body: impl Fn(usize) -> Body + Send + Sync + 'static,
) -> Origin {
    let version = version.clone();
    Origin::start(move |req| {
        let n = version.get();
        if req.method() != http::Method::GET {
            return reply(201, &[], "done");
        }
        let etag = format!("\"v{n}\"");
        http::Response::builder()
            .status(200)
            .header("cache-control", "max-age=3600")
            .header("etag", etag)
            .body(body(n))
            .expect("valid response")
    })
    .await
}

/// The real binary on a fresh store.
async fn hoard(dir: &TempDir) -> (Child, SocketAddr) {
    spawn_hoard([
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        dir.path().to_str().expect("utf-8 path"),
    ])
    .await
}

/// Version 1 stored, then [`ROUNDS`] reloads: each moves the origin to the next version, a
/// client reloads (`no-cache`) and gets it whole, and at once another connection (opened
/// before the reload was sent) asks plainly: it must get the reload's version, from the cache.
async fn reloads_are_never_followed_by_the_replaced_body(
    body: impl Fn(usize) -> Body + Send + Sync + 'static,
    len: Option<usize>,
) {
    let version = Version::new();
    let origin = versioned_origin(&version, body).await;
    let dir = TempDir::new().expect("temp dir");
    let (_hoard, proxy) = hoard(&dir).await;
    let url = origin.url("/doc");
    assert_eq!(version_of(&get(proxy, &url).await.body), "version 1");
    wait_stored(proxy, &url).await;
    for n in 2..ROUNDS + 2 {
        version.set(n);
        let want = format!("version {n}");
        let mut next = RawConn::connect(proxy).await;
        let reload = send(proxy, "GET", &url, &[("Cache-Control", "no-cache")]).await;
        assert_eq!(version_of(&reload.body), want, "round {n}: the reload");
        if let Some(len) = len {
            assert_eq!(reload.body.len(), len, "round {n}: the reload's length");
        }
        let after = next.request("GET", &url, &[]).await.expect("GET after");
        assert_eq!(
            version_of(&after.body),
            want,
            "round {n}: a GET sent once the reload had its answer got the replaced body \
             (Cache-Status: {})",
            after.cache_status().raw
        );
        after.cache_status().assert_hit();
    }
    assert_eq!(origin.count("GET", "/doc"), ROUNDS + 1);
}

#[tokio::test]
async fn reload_of_a_whole_body_is_never_followed_by_the_replaced_one() {
    let body = |n| full(format!("version {n}\n"));
    reloads_are_never_followed_by_the_replaced_body(body, None).await;
}

#[tokio::test]
async fn reload_of_a_streamed_chunked_body_is_never_followed_by_the_replaced_one() {
    let body = |n| chunked(versioned_chunks(n, STREAMED));
    reloads_are_never_followed_by_the_replaced_body(body, Some(STREAMED)).await;
}

#[tokio::test]
async fn reload_of_a_streamed_body_of_known_length_is_never_followed_by_the_replaced_one() {
    // With `Content-Length` the client has the whole response with its last byte, before
    // any end of body: the last chunk itself must wait for the commit.
    let body = |n| full(versioned_chunks(n, STREAMED).concat());
    reloads_are_never_followed_by_the_replaced_body(body, Some(STREAMED)).await;
}

#[tokio::test]
async fn a_304_refresh_is_committed_before_its_client_has_it() {
    // The body never changes (one ETag); each 304 carries the round's `x-version`, which the
    // stored head takes (RFC 9111 4.3.4).
    let version = Version::new();
    let v = version.clone();
    let origin = Origin::start(move |req| {
        let n = v.get().to_string();
        let h = [
            ("cache-control", "max-age=3600"),
            ("etag", "\"same\""),
            ("x-version", n.as_str()),
        ];
        match header(req, "if-none-match") {
            Some("\"same\"") => reply(304, &h, ""),
            _ => reply(200, &h, "the body"),
        }
    })
    .await;
    let dir = TempDir::new().expect("temp dir");
    let (_hoard, proxy) = hoard(&dir).await;
    let url = origin.url("/same");
    get(proxy, &url).await;
    wait_stored(proxy, &url).await;
    for n in 2..ROUNDS + 2 {
        version.set(n);
        let want = n.to_string();
        let mut next = RawConn::connect(proxy).await;
        let reload = send(proxy, "GET", &url, &[("Cache-Control", "no-cache")]).await;
        assert_eq!(reload.header("x-version"), Some(want.as_str()), "round {n}");
        let after = next.request("GET", &url, &[]).await.expect("GET after");
        assert_eq!(
            after.header("x-version"),
            Some(want.as_str()),
            "round {n}: a GET sent once the revalidation had its answer got the old head \
             (Cache-Status: {})",
            after.cache_status().raw
        );
        after.cache_status().assert_hit();
        assert_eq!(after.text(), "the body");
    }
    assert_eq!(origin.conditional(), ROUNDS);
}

#[tokio::test]
async fn a_get_after_a_post_is_never_a_hit_on_what_it_invalidated() {
    let version = Version::new();
    let origin = versioned_origin(&version, |n| full(format!("version {n}\n"))).await;
    let dir = TempDir::new().expect("temp dir");
    let (_hoard, proxy) = hoard(&dir).await;
    let url = origin.url("/doc");
    get(proxy, &url).await;
    wait_stored(proxy, &url).await;
    for n in 2..ROUNDS + 2 {
        version.set(n);
        let mut next = RawConn::connect(proxy).await;
        assert_eq!(post(proxy, &url, b"change").await.status, 201, "round {n}");
        let after = next.request("GET", &url, &[]).await.expect("GET after");
        assert_eq!(
            version_of(&after.body),
            format!("version {n}"),
            "round {n}: a GET sent once the POST had its answer got the invalidated body \
             (Cache-Status: {})",
            after.cache_status().raw
        );
        after.cache_status().assert_not_hit();
        // Stored again before the next round's POST removes it.
        wait_stored(proxy, &url).await;
    }
}
