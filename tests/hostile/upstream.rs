//! Upstream faults: each answered within the configured timeout (plus scheduling slack), with
//! 502 or 504, and nothing cached: the next request for the URL reaches the origin again.

use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{FaultOrigin, SLACK, T, proxy};
use crate::proxy::harness::*;

const GOOD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nCache-Control: max-age=60\r\n\r\ngood";

/// The fault happens on the first request only; later requests get a cacheable 200.
async fn first_faulty<F, Fut>(fault: F) -> FaultOrigin
where
    F: Fn(BufReader<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fault = std::sync::Arc::new(fault);
    FaultOrigin::start(move |mut io, n| {
        let fault = fault.clone();
        async move {
            if n == 0 {
                fault(io).await;
            } else {
                let _ = io.get_mut().write_all(GOOD).await;
            }
        }
    })
    .await
}

async fn reset(io: BufReader<TcpStream>) {
    let s = io.into_inner();
    let _ = s.set_zero_linger();
    drop(s);
}

/// GET /x twice through a gateway proxy: the first must fail with `status` within `limit`,
/// the second must reach the origin (nothing was cached) and get the good response.
async fn fault_then_recovery(origin: &FaultOrigin, status: u16, limit: Duration) {
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |_| {}).await;
    let started = Instant::now();
    let resp = get(proxy, "/x").await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status, status, "body: {:?}", resp.text());
    assert!(resp.cache_status().present(), "no Cache-Status");
    assert!(elapsed < limit, "answered after {elapsed:?}");
    assert_second_request_reaches_origin(origin, proxy).await;
}

async fn assert_second_request_reaches_origin(origin: &FaultOrigin, proxy: std::net::SocketAddr) {
    let before = origin.hits();
    let again = get(proxy, "/x").await;
    assert_eq!(again.status, 200, "{:?}", again.text());
    assert_eq!(again.text(), "good");
    assert_eq!(origin.hits(), before + 1, "the faulty answer was cached");
}

#[tokio::test]
async fn hostile_origin_refusing_connections_is_502_promptly() {
    let dead = refused_addr().await;
    let (_h, proxy, _dir) = proxy(Some(dead), |_| {}).await;
    let started = Instant::now();
    let resp = get(proxy, "/x").await;
    assert_eq!(resp.status, 502);
    assert!(resp.cache_status().present());
    assert!(started.elapsed() < T + SLACK);
}

#[tokio::test]
async fn hostile_origin_reset_before_headers_is_502() {
    let origin = first_faulty(reset).await;
    fault_then_recovery(&origin, 502, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_stalled_is_504_after_response_timeout() {
    let origin = first_faulty(|io| async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        drop(io);
    })
    .await;
    fault_then_recovery(&origin, 504, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_trickling_its_head_is_504_after_response_timeout() {
    let origin = first_faulty(|mut io| async move {
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood" {
            if io.get_mut().write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    fault_then_recovery(&origin, 504, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_invalid_status_line_is_502() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(b"HTTP/1.1 2x0 Fine\r\nContent-Length: 4\r\n\r\nevil")
            .await;
    })
    .await;
    fault_then_recovery(&origin, 502, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_garbage_instead_of_http_is_502() {
    let origin = first_faulty(|mut io| async move {
        let _ = io.get_mut().write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
    })
    .await;
    fault_then_recovery(&origin, 502, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_100_kib_of_response_headers_is_502() {
    let origin = first_faulty(|mut io| async move {
        let mut head = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n".to_vec();
        for i in 0..50 {
            head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(2048)).as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 4\r\n\r\nevil");
        let _ = io.get_mut().write_all(&head).await;
    })
    .await;
    fault_then_recovery(&origin, 502, T + SLACK).await;
}

/// A fault after the head: the client has a 200 head, so the body must end in an error
/// (connection closed before the declared length), promptly, and nothing is stored.
async fn body_fault_then_recovery(origin: &FaultOrigin, limit: Duration) {
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |c| {
        c.body_timeout = Some(Duration::from_secs(2))
    })
    .await;
    let started = Instant::now();
    let mut conn = RawConn::connect(proxy).await;
    let resp = conn.request("GET", "/x", &[]).await;
    let elapsed = started.elapsed();
    assert!(
        resp.is_err(),
        "a broken body was delivered as complete: {:?}",
        resp.map(|r| (r.status, r.text()))
    );
    assert!(elapsed < limit, "the client was held for {elapsed:?}");
    assert_second_request_reaches_origin(origin, proxy).await;
}

#[tokio::test]
async fn hostile_origin_reset_mid_body_aborts_the_client_and_stores_nothing() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\nhalf",
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        reset(io).await;
    })
    .await;
    body_fault_then_recovery(&origin, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_content_length_larger_than_body_aborts_and_stores_nothing() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nshort",
            )
            .await;
        // FIN after 5 of 100 bytes.
    })
    .await;
    body_fault_then_recovery(&origin, T + SLACK).await;
}

#[tokio::test]
async fn hostile_origin_stalling_mid_body_is_cut_at_response_timeout() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\nshort",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
    })
    .await;
    body_fault_then_recovery(&origin, T + SLACK).await;
}

/// One byte every 300 ms never trips the 1 s per-chunk timeout; `body_timeout` (2 s here)
/// bounds the whole body.
#[tokio::test]
async fn hostile_origin_trickling_its_body_is_cut_at_body_timeout() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n",
            )
            .await;
        for _ in 0..100 {
            if io.get_mut().write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    body_fault_then_recovery(&origin, Duration::from_secs(2) + SLACK).await;
}

/// The same trickle for an uncacheable response streamed straight through.
#[tokio::test]
async fn hostile_origin_trickling_an_uncacheable_body_is_cut_at_body_timeout() {
    let origin = FaultOrigin::start(|mut io, _| async move {
        let _ = io
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 100\r\n\r\n")
            .await;
        for _ in 0..100 {
            if io.get_mut().write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |c| {
        c.body_timeout = Some(Duration::from_secs(2))
    })
    .await;
    let started = Instant::now();
    let resp = RawConn::connect(proxy)
        .await
        .request("GET", "/x", &[])
        .await;
    assert!(resp.is_err(), "trickled body delivered as complete");
    assert!(started.elapsed() < Duration::from_secs(2) + SLACK);
}

/// Bytes after the declared Content-Length are not part of the response, and they never
/// become the answer to the next request on that (pooled) origin connection.
#[tokio::test]
async fn hostile_origin_body_longer_than_content_length_does_not_poison_the_next_response() {
    let origin = FaultOrigin::start(|mut io, n| async move {
        if n == 0 {
            let _ = io
                .get_mut()
                .write_all(
                    b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 5\r\n\r\nhello\
                      HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 6\r\n\r\nPOISON",
                )
                .await;
            // Keep the connection open and answer whatever comes next on it honestly.
            while super::read_head(&mut io).await {
                let _ = io
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 6\r\n\r\nhonest")
                    .await;
            }
        } else {
            let _ = io
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 6\r\n\r\nhonest")
                .await;
        }
    })
    .await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |_| {}).await;
    let mut conn = RawConn::connect(proxy).await;
    let first = conn
        .request("GET", "/a", &[])
        .await
        .expect("first response");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "hello");
    for path in ["/b", "/c"] {
        let next = conn.request("GET", path, &[]).await.expect("next response");
        assert_ne!(
            next.text(),
            "POISON",
            "smuggled origin bytes answered {path}"
        );
        assert_eq!((next.status, next.text().as_str()), (200, "honest"));
    }
}

/// An origin's 204 that claims a `Content-Length` (RFC 9110 8.6: it must not): the client gets
/// the 204 without it (a next hop honouring it would read the following response as this
/// one's body), and the response is stored with its empty body.
#[tokio::test]
async fn hostile_origin_204_with_a_content_length_reaches_the_client_without_it() {
    let origin = RawOrigin::start(true, |_| {
        b"HTTP/1.1 204 No Content\r\nCache-Control: max-age=600\r\nContent-Length: 70\r\n\r\n"
            .to_vec()
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/nothing");
    let first = get(proxy, &url).await;
    assert_eq!(first.status, 204);
    assert_eq!(first.header("content-length"), None);
    // Stored (`wait_stored` looks for a 200): a hit within 2 s.
    let mut again = get(proxy, &url).await;
    for _ in 0..200 {
        if again.cache_status().raw.contains("hit") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        again = get(proxy, &url).await;
    }
    assert_eq!((again.status, again.header("content-length")), (204, None));
    again.cache_status().assert_hit();
    assert!(origin.hits() <= 2, "fetched {} times", origin.hits());
}

/// A transfer coding other than `chunked` (here gzip) is not undone by hoard: the response is
/// a 502, never passed on or stored with the coding still applied (RFC 9112 6.1, 7).
#[tokio::test]
async fn hostile_origin_gzip_transfer_coding_is_502_and_not_stored() {
    // gzip before chunked on one line, or on a line of its own after a `chunked` line.
    let origin = RawOrigin::start(true, |head| {
        let te = if head.contains("/two-lines") {
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"
        } else {
            "Transfer-Encoding: gzip, chunked\r\n"
        };
        format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n{te}\r\n5\r\ncoded\r\n0\r\n\r\n")
            .into_bytes()
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    for path in ["/coded", "/two-lines"] {
        let url = origin.url(path);
        for _ in 0..2 {
            assert_eq!(get(proxy, &url).await.status, 502, "{path}");
        }
    }
    assert_eq!(origin.hits(), 4, "a first answer was stored");
}

/// An origin's chunked body cut before its last chunk, sent to an HTTP/1.0 client: hoard
/// answers an HTTP/1.0 client without a length (the end of the body is the close), so a clean
/// close would look like the end of a complete body. The connection ends with a reset
/// instead, and nothing is stored.
#[tokio::test]
async fn hostile_origin_body_cut_reaches_an_http10_client_as_a_reset_not_a_clean_end() {
    let origin = first_faulty(|mut io| async move {
        let _ = io
            .get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort\r\n",
            )
            .await;
        // FIN before the last chunk.
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = format!("http://{}/cut", origin.addr);
    let mut conn = RawConn::connect(proxy).await;
    conn.send(format!("GET {url} HTTP/1.0\r\nHost: {}\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    // The reset may reach the client before it has read the head: either way, the exchange
    // never ends in a clean close.
    let rest = conn.read_to_end().await;
    assert!(
        matches!(&rest, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a cut body ended like a complete one: {:?}",
        rest.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    assert_ne!(get(proxy, &url).await.status, 0, "the proxy still answers");
}

/// An origin response with 300 header fields (a 6 KB head) is relayed and stored: hyper's
/// default of 100 fields made it a 502. The head's size still bounds it.
#[tokio::test]
async fn origin_response_with_300_header_fields_is_relayed_and_stored() {
    let origin = RawOrigin::start(true, |_| {
        let mut head =
            String::from("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\n");
        for i in 0..300 {
            head.push_str(&format!("X-Field-{i}: v{i}\r\n"));
        }
        head.push_str("\r\nok");
        head.into_bytes()
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/many");
    let first = get(proxy, &url).await;
    assert_eq!((first.status, first.text().as_str()), (200, "ok"));
    assert_eq!(first.header("x-field-299"), Some("v299"));
    wait_stored(proxy, &url).await;
    let hit = get(proxy, &url).await;
    hit.cache_status().assert_hit();
    assert_eq!(hit.header("x-field-150"), Some("v150"));
}
