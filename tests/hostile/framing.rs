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
