//! Error answers: 502 for an unreachable upstream, 504 for a silent one, 400 for malformed
//! requests, 431 for oversized header blocks, 508 for a request looping back to the proxy.
//! Every error answer hoard writes carries `Cache-Status` (hyper's own 400 for an unparsable
//! request cannot, see README.md).

use std::time::{Duration, Instant};

use super::harness::*;

#[track_caller]
fn assert_error(resp: &RawResponse, status: u16) {
    assert_eq!(resp.status, status, "body: {:?}", resp.text());
    assert!(
        resp.cache_status().present(),
        "{status} without Cache-Status: {:?}",
        resp.headers
    );
}

#[tokio::test]
async fn refused_upstream_is_502_in_gateway_mode() {
    let dead = refused_addr().await;
    let (_proxy, proxy, _dir) = start_proxy(Some(dead)).await;
    assert_error(&get(proxy, "/x").await, 502);
}

#[tokio::test]
async fn refused_origin_is_502_in_forward_mode() {
    let dead = refused_addr().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_error(&get(proxy, &format!("http://{dead}/x")).await, 502);
}

#[tokio::test]
async fn silent_upstream_is_504_within_response_timeout() {
    let (silent, _task) = silent_origin().await;
    let dir = tempfile::TempDir::new().unwrap();
    let timeout = Duration::from_millis(500);
    let (_proxy, proxy) = start_proxy_in(dir.path(), Some(silent), |cfg| {
        cfg.response_timeout = timeout
    })
    .await;
    let started = Instant::now();
    let resp = get(proxy, "/slow").await;
    let elapsed = started.elapsed();
    assert_error(&resp, 504);
    assert!(
        elapsed >= timeout,
        "answered 504 before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_millis(1500),
        "504 took {elapsed:?}"
    );
}

/// `connect-timeout` covers the TLS handshake as well as the TCP connect (as nginx's
/// `proxy_connect_timeout` does for `proxy_ssl`): an https origin that accepts TCP and then
/// says nothing is a 504 naming the connect timeout, well before `response-timeout` (before, it
/// waited for `response-timeout` and was reported as a response timeout).
#[tokio::test]
async fn tls_handshake_to_a_silent_origin_is_a_connect_timeout() {
    let (silent, _task) = silent_origin().await;
    let dir = tempfile::TempDir::new().unwrap();
    let response_timeout = Duration::from_secs(30);
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |cfg| {
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.response_timeout = response_timeout;
    })
    .await;
    let started = Instant::now();
    let url = format!("https://{silent}/handshake");
    let host = silent.to_string();
    let resp = send(proxy, "GET", &url, &[("Host", &host)]).await;
    assert_error(&resp, 504);
    let cs = resp.header_all("cache-status").join(", ");
    assert!(cs.contains("detail=connect-timeout"), "{cs}");
    assert!(
        started.elapsed() < response_timeout,
        "the handshake was cut by response-timeout"
    );
}

#[tokio::test]
async fn malformed_request_is_400() {
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    conn.send(
        b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nthis line is no header\r\n\r\n",
    )
    .await
    .unwrap();
    // hyper answers requests it cannot parse before hoard sees them, so this 400 has no
    // Cache-Status (documented in README.md).
    let resp = conn
        .read_response("GET")
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(resp.status, 400, "body: {:?}", resp.text());
}

/// Sends a request whose header block is about `size` bytes; the proxy may stop reading early.
async fn request_with_header_block(
    proxy: std::net::SocketAddr,
    target: &str,
    size: usize,
) -> RawResponse {
    let big = "a".repeat(size);
    let mut conn = RawConn::connect(proxy).await;
    let _ = conn
        .send(&request_text("GET", target, &[("X-Big", &big)], b""))
        .await;
    conn.read_response("GET")
        .await
        .expect("an answer, not a dropped connection")
}

#[tokio::test]
async fn header_block_over_64_kib_is_431() {
    let origin = Origin::start(|_| reply(200, &[], "ok")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_error(
        &request_with_header_block(proxy, &origin.url("/big"), 70 << 10).await,
        431,
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn header_block_under_64_kib_is_accepted() {
    let origin = Origin::start(|_| reply(200, &[], "ok")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let resp = request_with_header_block(proxy, &origin.url("/big"), 40 << 10).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn request_to_the_proxy_itself_is_508() {
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_error(&get(proxy, &format!("http://{proxy}/loop")).await, 508);
    // Other spellings of the same address: IPv4-mapped IPv6, `localhost`.
    let port = proxy.port();
    for host in [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "localhost",
        "127.1.2.3",
    ] {
        let url = format!("http://{host}:{port}/loop");
        assert_error(&get(proxy, &url).await, 508);
    }
}

#[tokio::test]
async fn connect_to_a_refused_port_is_502() {
    let dead = refused_addr().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |c| {
        c.allowed_connect_ports = vec![dead.port()];
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    conn.send(format!("CONNECT {dead} HTTP/1.1\r\nHost: {dead}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_error(
        &conn.read_response("CONNECT").await.expect("CONNECT answer"),
        502,
    );
}

#[tokio::test]
async fn client_stalling_in_its_header_block_is_disconnected() {
    let dir = tempfile::TempDir::new().unwrap();
    let (_proxy, proxy) = start_proxy_in(dir.path(), None, |cfg| {
        cfg.header_timeout = Duration::from_millis(500)
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    conn.send(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let rest = conn.read_to_end().await; // a 408 and close, or a plain close
    let elapsed = started.elapsed();
    assert!(rest.is_ok(), "connection not closed: {rest:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "slow client held the connection for {elapsed:?}"
    );
}

/// Sends raw request bytes on a fresh connection and reads the answer.
async fn raw_exchange(proxy: std::net::SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(proxy).await;
    conn.send(bytes).await.unwrap();
    conn.read_response("GET")
        .await
        .expect("an answer, not a dropped connection")
}

#[tokio::test]
async fn http_1_1_request_without_host_is_400() {
    let origin = Origin::start(|_| reply(200, &[], "ok")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let text = format!("GET {} HTTP/1.1\r\n\r\n", origin.url("/nohost"));
    let resp = raw_exchange(proxy, text.as_bytes()).await;
    assert_eq!(
        resp.status, 400,
        "RFC 9112 section 3.2: a request without Host is a 400"
    );
    assert!(resp.cache_status().present(), "{:?}", resp.headers);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn request_with_two_host_fields_is_400() {
    let origin = Origin::start(|_| reply(200, &[], "ok")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let text = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nHost: other.invalid\r\n\r\n",
        origin.url("/twohosts"),
        origin.addr
    );
    let resp = raw_exchange(proxy, text.as_bytes()).await;
    assert_eq!(
        resp.status, 400,
        "RFC 9112 section 3.2: several Host fields are a 400"
    );
    assert!(resp.cache_status().present(), "{:?}", resp.headers);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn request_with_transfer_encoding_and_content_length_is_not_smuggled() {
    let origin = Origin::start(|req| reply(200, &[], req.body().clone())).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let text = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
         b\r\nhello world\r\n0\r\n\r\n",
        origin.url("/smuggle"),
        origin.addr
    );
    let mut conn = RawConn::connect(proxy).await;
    conn.send(text.as_bytes()).await.unwrap();
    match conn.read_response("POST").await {
        Ok(resp) if resp.status == 400 => {}
        Ok(resp) => {
            assert_eq!((resp.status, resp.text().as_str()), (200, "hello world"));
            let seen = origin.last("/smuggle");
            assert_eq!(
                seen.body.as_ref(),
                b"hello world",
                "the origin got the chunked body"
            );
            assert_eq!(
                origin.hits(),
                1,
                "no second request was smuggled to the origin"
            );
        }
        Err(e) => panic!("no answer: {e}"),
    }
}
