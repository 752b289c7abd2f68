//! Client uploads (request bodies forwarded to the origin): a client's own failures (bad
//! chunked framing, a cut body, a stalled upload) are the client's 400/408 and never an
//! upstream error, the origin never receives a cut body as complete, and `response-timeout`
//! runs from the end of the upload, not from its start.

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

/// Request framings with the first part of a body that never completes: 10 of 100 bytes, or
/// one chunk and never the last.
const PARTIAL_BODIES: [(&str, &str, &str); 2] = [
    ("length", "Content-Length: 100", "0123456789"),
    (
        "chunked",
        "Transfer-Encoding: chunked",
        "a\r\n0123456789\r\n",
    ),
];

/// A connection that sent the head of an upload to `path` and `part` of its body.
async fn partial_upload(
    proxy: SocketAddr,
    origin: &Origin,
    path: &str,
    (framing, part): (&str, &str),
) -> RawConn {
    let mut conn = RawConn::connect(proxy).await;
    let head = upload_head(origin, path, framing);
    conn.send(format!("{head}{part}").as_bytes()).await.unwrap();
    conn
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
    for (name, framing, part) in PARTIAL_BODIES {
        // Half-closed: the client still reads the answer.
        let path_half = format!("/cut-{name}-half");
        let conn = partial_upload(proxy, &origin, &path_half, (framing, part)).await;
        let mut io = conn.into_io();
        io.get_mut().shutdown().await.unwrap();
        let mut conn = RawConn::from_io(io);
        let resp = conn.read_response("POST").await.expect("an answer");
        assert_client_error(&resp, 400, "request-body-cut");
        assert_ne!(origin_got_complete(&origin, &path_half).await, Some(true));
        // Gone: the connection closed entirely mid-upload.
        let path_gone = format!("/cut-{name}-gone");
        drop(partial_upload(proxy, &origin, &path_gone, (framing, part)).await);
        assert_ne!(origin_got_complete(&origin, &path_gone).await, Some(true));
    }
    assert_eq!(upstream_errors(admin).await, Vec::<String>::new());
    let good = post(proxy, &origin.url("/good"), b"hello").await;
    assert_eq!((good.status, good.text().as_str()), (200, "got 5"));
}

/// Sends `parts` of an upload `gap` apart on `conn` (the head first), then reads the answer.
async fn trickle(conn: &mut RawConn, head: String, parts: &[String], gap: Duration) -> RawResponse {
    conn.send(head.as_bytes()).await.unwrap();
    for part in parts {
        tokio::time::sleep(gap).await;
        conn.send(part.as_bytes()).await.unwrap();
    }
    conn.read_response("POST").await.expect("an answer")
}

/// An upload that keeps moving but takes longer than `response-timeout` goes through:
/// `response-timeout` bounds the wait for the origin's answer after the body was forwarded
/// (before, it ran from the send, and such an upload got a 504 and the origin a cut body).
#[tokio::test]
async fn a_steady_upload_slower_than_response_timeout_succeeds() {
    let origin = counting_origin().await;
    let (_h, proxy, admin, _dir) = proxy_with_admin(|c| {
        c.response_timeout = Duration::from_millis(300);
    })
    .await;
    let gap = Duration::from_millis(120);
    let chunk = "x".repeat(100);
    let by_length = async {
        let mut conn = RawConn::connect(proxy).await;
        let head = upload_head(&origin, "/steady-length", "Content-Length: 1000");
        let parts = vec![chunk.clone(); 10];
        trickle(&mut conn, head, &parts, gap).await
    };
    let chunked = async {
        let mut conn = RawConn::connect(proxy).await;
        let head = upload_head(&origin, "/steady-chunked", "Transfer-Encoding: chunked");
        let mut parts = vec![format!("64\r\n{chunk}\r\n"); 10];
        parts.push("0\r\n\r\n".into());
        trickle(&mut conn, head, &parts, gap).await
    };
    let started = Instant::now();
    let (a, b) = tokio::join!(by_length, chunked);
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "the uploads must outlast response-timeout for this test to mean anything"
    );
    for (resp, path) in [(a, "/steady-length"), (b, "/steady-chunked")] {
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "got 1000"),
            "{path}"
        );
        let seen = origin.last(path);
        assert!(seen.complete && seen.body.len() == 1000, "{path}: {seen:?}");
    }
    assert_eq!(upstream_errors(admin).await, Vec::<String>::new());
}

/// An upload that stops (no byte for `idle-timeout`) is cut there: the client gets a 408 naming
/// it and the connection closed, long before `response-timeout`, and the origin's handler sees
/// an incomplete body, never a complete one.
#[tokio::test]
async fn a_stalled_upload_is_408_at_idle_timeout_and_reaches_the_origin_incomplete() {
    let origin = counting_origin().await;
    let response_timeout = Duration::from_secs(30);
    let (_h, proxy, admin, _dir) = proxy_with_admin(|c| {
        c.response_timeout = response_timeout;
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    for (name, framing, part) in PARTIAL_BODIES {
        let path = &format!("/stall-{name}");
        let started = Instant::now();
        let mut conn = partial_upload(proxy, &origin, path, (framing, part)).await;
        let resp = conn.read_response("POST").await.expect("an answer");
        assert_client_error(&resp, 408, "request-body-timeout");
        assert!(conn.read_to_end().await.is_ok(), "{path}: not closed");
        assert!(
            started.elapsed() < response_timeout,
            "{path}: cut by response-timeout, not idle-timeout"
        );
        let seen = seen_at(&origin, path, IO_TIMEOUT).await;
        let seen = seen
            .last()
            .unwrap_or_else(|| panic!("{path}: never reached the origin"));
        assert!(
            !seen.complete,
            "{path}: the origin got a complete body: {seen:?}"
        );
        assert_eq!(seen.body.as_ref(), b"0123456789", "{path}");
    }
    assert_eq!(upstream_errors(admin).await, Vec::<String>::new());
}

/// An origin that takes none of an upload (it accepted and reads nothing) is still bounded:
/// once the socket buffers are full and no byte moves for `response-timeout`, a 504 naming it.
#[tokio::test]
async fn an_upload_the_origin_does_not_take_is_504_at_response_timeout() {
    let (silent, _task) = silent_origin().await;
    let (_h, proxy, _admin, _dir) = proxy_with_admin(|c| {
        c.response_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let size = 64usize << 20;
    let head = format!(
        "POST http://{silent}/full HTTP/1.1\r\nHost: {silent}\r\nContent-Length: {size}\r\n\r\n"
    );
    let conn = RawConn::connect(proxy).await;
    let (mut read, mut write) = tokio::io::split(conn.into_io());
    // The client keeps sending (bounded by the body's size) until hoard stops reading.
    let sender = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 1 << 20];
        for _ in 0..(size >> 20) {
            write.write_all(&block).await?;
        }
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    let head_read = async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::io::AsyncReadExt::read(&mut read, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, head_read).await;
    sender.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("detail=response-timeout"), "{text}");
}
