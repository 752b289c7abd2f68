//! Client uploads (request bodies forwarded to the origin): a client's own failures (bad
//! chunked framing, a cut body) are the client's 400 and never an upstream error, and the
//! origin never receives a cut body as complete.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::harness::*;

/// An origin answering every request with the length of the body it received.
async fn counting_origin() -> Origin {
    Origin::start(|req| reply(200, &[], format!("got {}", req.body().len()))).await
}

/// A proxy with an admin listener (for `/metrics`), `tweak`ed.
async fn proxy_with_admin(
    tweak: impl FnOnce(&mut hoard::proxy::ProxyConfig),
) -> (
    hoard::proxy::ServerHandle,
    SocketAddr,
    SocketAddr,
    tempfile::TempDir,
) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (handle, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await;
    let admin = handle.admin_addr().expect("admin listener");
    (handle, proxy, admin, dir)
}

/// The `hoard_upstream_errors_total` samples of the admin's `/metrics`.
async fn upstream_errors(admin: SocketAddr) -> Vec<String> {
    let resp = send(admin, "GET", "/metrics", &[]).await;
    assert_eq!(resp.status, 200);
    resp.text()
        .lines()
        .filter(|l| l.starts_with("hoard_upstream_errors_total"))
        .map(str::to_owned)
        .collect()
}

/// The head of a request with a body of `framing` (`Content-Length: N` or
/// `Transfer-Encoding: chunked`) to `url` on `origin`.
fn upload_head(origin: &Origin, path: &str, framing: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\n{framing}\r\n\r\n",
        origin.url(path),
        origin.addr
    )
}

/// What the origin logged of requests to `path`, waiting (bounded: `within`) for the first.
async fn seen_at(origin: &Origin, path: &str, within: Duration) -> Vec<Seen> {
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<_> = origin
            .seen()
            .into_iter()
            .filter(|s| s.path == path)
            .collect();
        if !seen.is_empty() || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the origin got a request to `path` with its whole body (`None`: no request at all
/// within a second).
async fn origin_got_complete(origin: &Origin, path: &str) -> Option<bool> {
    let seen = seen_at(origin, path, Duration::from_secs(1)).await;
    (!seen.is_empty()).then(|| seen.iter().any(|s| s.complete))
}

#[track_caller]
fn assert_client_error(resp: &RawResponse, status: u16, detail: &str) {
    assert_eq!(resp.status, status, "body: {:?}", resp.text());
    let cs = resp.header_all("cache-status").join(", ");
    assert!(cs.contains(&format!("detail={detail}")), "{cs}");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "{:?}",
        resp.headers
    );
}

/// Malformed chunked framing in a client's body is the client's 400 naming it, with the
/// connection closed (RFC 9112 6.3, 7.1); before, the body failed while it was forwarded and
/// the client got a 502 as if the origin had failed, counted as an upstream error.
#[tokio::test]
async fn malformed_chunked_request_bodies_are_400_and_closed_not_502() {
    let cases = [
        ("/bad-size", "5\r\nhello\r\nzz\r\n"),
        (
            "/overflow",
            "5\r\nhello\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        ("/no-crlf-after-data", "5\r\nhelloXY3\r\nabc\r\n0\r\n\r\n"),
    ];
    let origin = counting_origin().await;
    let (_h, proxy, admin, _dir) = proxy_with_admin(|_| {}).await;
    for (path, body) in cases {
        let mut conn = RawConn::connect(proxy).await;
        let head = upload_head(&origin, path, "Transfer-Encoding: chunked");
        conn.send(format!("{head}{body}").as_bytes()).await.unwrap();
        let resp = conn.read_response("POST").await.expect("an answer");
        assert_client_error(&resp, 400, "request-body-framing");
        let rest = conn.read_to_end().await;
        assert!(rest.is_ok(), "{path}: connection not closed: {rest:?}");
        assert_ne!(
            origin_got_complete(&origin, path).await,
            Some(true),
            "{path}: the origin got the broken body as a complete one"
        );
    }
    assert_eq!(upstream_errors(admin).await, Vec::<String>::new());
    // The proxy and the origin are fine: a good upload goes through.
    let good = post(proxy, &origin.url("/good"), b"hello").await;
    assert_eq!((good.status, good.text().as_str()), (200, "got 5"));
}

/// A body the client stops sending and half-closes (its last bytes never come) is a 400
/// naming the cut body (the client still reads); a client that closes entirely is gone and
/// reads nothing. Neither counts as an upstream error, and the origin never takes either body
/// for a complete one.
#[tokio::test]
async fn request_bodies_cut_by_the_client_are_never_forwarded_as_complete() {
    let origin = counting_origin().await;
    let (_h, proxy, admin, _dir) = proxy_with_admin(|_| {}).await;
    let cases = [
        ("/cut-length", "Content-Length: 100", "0123456789"),
        (
            "/cut-chunked",
            "Transfer-Encoding: chunked",
            "a\r\n0123456789\r\n",
        ),
    ];
    for (path, framing, part) in cases {
        // Half-closed: the client still reads the answer.
        let path_half = format!("{path}-half");
        let mut conn = RawConn::connect(proxy).await;
        let head = upload_head(&origin, &path_half, framing);
        conn.send(format!("{head}{part}").as_bytes()).await.unwrap();
        let mut io = conn.into_io();
        io.get_mut().shutdown().await.unwrap();
        let mut conn = RawConn::from_io(io);
        let resp = conn.read_response("POST").await.expect("an answer");
        assert_client_error(&resp, 400, "request-body-cut");
        assert_ne!(origin_got_complete(&origin, &path_half).await, Some(true));
        // Gone: the connection closed entirely mid-upload.
        let path_gone = format!("{path}-gone");
        let mut conn = RawConn::connect(proxy).await;
        let head = upload_head(&origin, &path_gone, framing);
        conn.send(format!("{head}{part}").as_bytes()).await.unwrap();
        drop(conn);
        assert_ne!(origin_got_complete(&origin, &path_gone).await, Some(true));
    }
    assert_eq!(upstream_errors(admin).await, Vec::<String>::new());
    let good = post(proxy, &origin.url("/good"), b"hello").await;
    assert_eq!((good.status, good.text().as_str()), (200, "got 5"));
}
