//! Request smuggling and framing: ambiguous or malformed request heads are answered 400 and
//! the connection is closed, the smuggled request never reaches the origin, and nothing is
//! cached (a normal request afterwards reaches the origin).

use std::net::SocketAddr;

use super::proxy;
use crate::proxy::harness::*;

/// Sends `raw` (with `{o}` replaced by the origin's address) on one connection; expects a 400
/// and the connection closed, no request at the origin, then a normal GET that does reach it.
async fn rejected(raw: &str) {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let raw = raw.replace("{o}", &origin.addr.to_string());
    let mut conn = RawConn::connect(proxy).await;
    conn.send(raw.as_bytes()).await.expect("send");
    let resp = conn.read_response("GET").await.expect("an answer");
    assert_eq!(resp.status, 400, "{raw:?} -> {:?}", resp.text());
    let rest = conn.read_to_end().await;
    assert!(
        matches!(&rest, Ok(b) if b.is_empty()),
        "connection not closed after 400 (or more was sent): {rest:?}"
    );
    assert_eq!(origin.hits(), 0, "a request of {raw:?} reached the origin");
    normal_get_reaches_origin(&origin, proxy).await;
}

async fn normal_get_reaches_origin(origin: &Origin, proxy: SocketAddr) {
    let before = origin.hits();
    let ok = get(proxy, &origin.url("/x")).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok"));
    assert_eq!(origin.hits(), before + 1);
}

#[tokio::test]
async fn hostile_content_length_with_transfer_encoding_is_400_and_closed() {
    rejected(
        "POST http://{o}/x HTTP/1.1\r\nHost: {o}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://{o}/smuggled HTTP/1.1\r\nHost: {o}\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn hostile_two_different_content_lengths_are_400_and_closed() {
    rejected(
        "POST http://{o}/x HTTP/1.1\r\nHost: {o}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody",
    )
    .await;
}

#[tokio::test]
async fn hostile_obs_fold_is_400_and_closed() {
    rejected("GET http://{o}/x HTTP/1.1\r\nHost: {o}\r\nX-Folded: a\r\n b\r\n\r\n").await;
}

#[tokio::test]
async fn hostile_bare_lf_is_400_and_closed() {
    rejected("GET http://{o}/x HTTP/1.1\nHost: {o}\nX-A: b\n\n").await;
}

#[tokio::test]
async fn hostile_bare_lf_in_one_header_line_is_400_and_closed() {
    rejected("GET http://{o}/x HTTP/1.1\r\nHost: {o}\nX-A: b\r\n\r\n").await;
}

#[tokio::test]
async fn hostile_invalid_header_name_is_400_and_closed() {
    rejected("GET http://{o}/x HTTP/1.1\r\nHost: {o}\r\nBad Name: x\r\n\r\n").await;
}

#[tokio::test]
async fn hostile_space_before_colon_is_400_and_closed() {
    rejected("GET http://{o}/x HTTP/1.1\r\nHost: {o}\r\nContent-Length : 4\r\n\r\nbody").await;
}

#[tokio::test]
async fn hostile_transfer_encoding_not_chunked_is_400_and_closed() {
    rejected("POST http://{o}/x HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: gzip\r\n\r\nbody")
        .await;
}

/// `chunked` twice (RFC 9112 6.1: never applied more than once), in one line or two, and a
/// coding before `chunked` that hoard would not undo: 400, closed, nothing forwarded.
#[tokio::test]
async fn hostile_transfer_encoding_other_than_one_chunked_is_400_and_closed() {
    for te in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
    ] {
        rejected(&format!(
            "POST http://{{o}}/x HTTP/1.1\r\nHost: {{o}}\r\n{te}\r\n3\r\nabc\r\n0\r\n\r\n"
        ))
        .await;
    }
}

/// Issue 12.8: the guard used to switch itself off after a chunked request, so a bare-LF
/// request pipelined behind it was answered (and stored).
#[tokio::test]
async fn hostile_bare_lf_pipelined_after_a_chunked_post_is_400_and_closed() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let o = origin.addr.to_string();
    let raw = format!(
        "POST http://{o}/p HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\n\
         4\r\nbody\r\n0\r\n\r\nGET http://{o}/smuggled HTTP/1.1\nHost: {o}\n\n"
    );
    let mut conn = RawConn::connect(proxy).await;
    conn.send(raw.as_bytes()).await.expect("send");
    let first = conn.read_response("POST").await.expect("POST answered");
    assert_eq!(first.status, 200);
    let second = conn.read_response("GET").await.expect("an answer");
    assert_eq!(
        second.status,
        400,
        "bare LF after chunked: {:?}",
        second.text()
    );
    let rest = conn.read_to_end().await;
    assert!(
        matches!(&rest, Ok(b) if b.is_empty()),
        "not closed: {rest:?}"
    );
    assert_eq!(origin.count("GET", "/smuggled"), 0);
}

/// A clean request after a chunked one is still served: the guard follows the chunked body
/// instead of switching off, and does not mistake its bytes for a head.
#[tokio::test]
async fn clean_request_pipelined_after_a_chunked_post_with_lf_in_its_data_is_served() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let o = origin.addr.to_string();
    let raw = format!(
        "POST http://{o}/p HTTP/1.1\r\nHost: {o}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\na\nb\nc\r\n0\r\n\r\nGET http://{o}/next HTTP/1.1\r\nHost: {o}\r\n\r\n"
    );
    let mut conn = RawConn::connect(proxy).await;
    conn.send(raw.as_bytes()).await.expect("send");
    assert_eq!(conn.read_response("POST").await.expect("POST").status, 200);
    assert_eq!(conn.read_response("GET").await.expect("GET").status, 200);
    assert_eq!(origin.count("GET", "/next"), 1);
}

/// A refused CONNECT closes its connection: the guard stops at a CONNECT head, so nothing
/// pipelined behind a refused one may be answered unchecked.
#[tokio::test]
async fn hostile_request_pipelined_after_a_refused_connect_is_never_answered() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |c| c.allowed_connect_ports = vec![443]).await;
    let o = origin.addr.to_string();
    let raw = format!(
        "CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\nGET http://{o}/smuggled HTTP/1.1\nHost: {o}\n\n"
    );
    let mut conn = RawConn::connect(proxy).await;
    conn.send(raw.as_bytes()).await.expect("send");
    let refused = conn.read_response("CONNECT").await.expect("an answer");
    assert_eq!(refused.status, 403);
    let rest = conn.read_to_end().await;
    assert!(
        matches!(&rest, Ok(b) if b.is_empty()),
        "not closed: {rest:?}"
    );
    assert_eq!(origin.count("GET", "/smuggled"), 0);
}

/// A GET or HEAD with a body (a "fat" GET): hoard never forwards the body, so it must not
/// forward the body's framing either. With the client's `Content-Length` on a bodiless
/// request, an origin that answers at once and then skips that many bytes took the next
/// request on the pooled connection (another client's) as the body, and answered that client
/// with a response an attacker had queued (RFC 9112 6.3, 11.2).
#[tokio::test]
async fn hostile_fat_get_and_head_reach_the_origin_without_body_framing() {
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let origin = RawOrigin::start(false, {
        let heads = heads.clone();
        move |head| {
            heads.lock().unwrap().push(head.to_ascii_lowercase());
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok".to_vec()
        }
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    for method in ["GET", "HEAD"] {
        let mut conn = RawConn::connect(proxy).await;
        let url = origin.url("/fat");
        let raw = format!(
            "{method} {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
            origin.addr
        );
        conn.send(raw.as_bytes()).await.unwrap();
        let resp = conn.read_response(method).await.unwrap();
        assert_eq!(resp.status, 200, "{method}");
        // The body was taken from the client's connection: the next request on it is served.
        assert_eq!(conn.request("GET", &url, &[]).await.unwrap().status, 200);
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 4, "{heads:?}");
    for head in &heads {
        for field in ["content-length", "transfer-encoding", "expect"] {
            assert!(
                !head.contains(field),
                "{field} forwarded on a bodiless request: {head}"
            );
        }
    }
}
