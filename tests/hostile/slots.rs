//! `max-connections` slots against a client that takes them all: idle keep-alive connections
//! and stalled request heads give their slot to a new client (the longest waiting first);
//! connections with a request in flight never do, and the excess then gets a 503 at once.
//! The open-files limit: a `max-connections` the limit cannot carry is lowered, so clients
//! beyond it are answered instead of stalling in `accept` with EMFILE.

use std::sync::Mutex;
use std::time::Duration;

use super::proxy;
use crate::proxy::harness::*;

fn no_store_origin() -> impl Fn(&http::Request<bytes::Bytes>) -> http::Response<Body> + Send + Sync
{
    |_| reply(200, &[("cache-control", "no-store")], "ok")
}

/// Every slot held by an idle keep-alive connection (one request each, then nothing): each
/// new client is served, on the slot of the connection idle longest, which is closed cleanly.
#[tokio::test]
async fn hostile_idle_connections_holding_every_slot_give_way_to_new_clients() {
    let origin = Origin::start(no_store_origin()).await;
    let (_h, proxy, _dir) = proxy(None, |c| c.max_connections = 4).await;
    let url = origin.url("/x");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = RawConn::connect(proxy).await;
        assert_eq!(c.request("GET", &url, &[]).await.unwrap().status, 200);
        held.push(c);
        tokio::time::sleep(Duration::from_millis(20)).await; // distinct idle times
    }
    for i in 0..4 {
        let mut new = RawConn::connect(proxy).await;
        let r = new.request("GET", &url, &[]).await.unwrap();
        assert_eq!(r.status, 200, "new client {i} was refused");
        // The oldest held connection was closed (EOF, no response bytes), in order.
        let mut oldest = held.remove(0);
        assert!(
            matches!(oldest.read_to_end().await, Ok(b) if b.is_empty()),
            "held connection {i} was not closed cleanly"
        );
        held.push(new);
    }
    assert_eq!(origin.hits(), 8);
}

/// An idle HTTP/2 connection (one request, then only its own control frames) gives its
/// slot too: the new client is served and the HTTP/2 connection ends (GOAWAY, then close).
#[tokio::test]
async fn hostile_an_idle_http2_connection_gives_way_to_a_new_client() {
    let origin = Origin::start(no_store_origin()).await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |c| c.max_connections = 1).await;
    let conn = h2_connection_after_one_get(proxy, "/h2").await;
    // Let its last frames (window updates, the SETTINGS ack) arrive: they are not a request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut new = RawConn::connect(proxy).await;
    assert_eq!(new.request("GET", "/h1", &[]).await.unwrap().status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
    assert_eq!(origin.hits(), 2);
}

/// Slots held by connections that sent part of a request head and nothing more (slowloris,
/// far under `header-timeout`): after a second, a new client gets the slot of the oldest.
#[tokio::test]
async fn hostile_stalled_request_heads_give_way_to_new_clients() {
    let origin = Origin::start(no_store_origin()).await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.max_connections = 3;
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let url = origin.url("/x");
    let mut stalled: Vec<RawConn> = Vec::new();
    for _ in 0..3 {
        let mut c = RawConn::connect(proxy).await;
        c.send(format!("GET {url} HTTP/1.1\r\nHost: h\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        stalled.push(c);
    }
    // Under the grace a head keeps its slot (once the proxy has read its first bytes): a new
    // client is refused at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut early = RawConn::connect(proxy).await;
    assert_eq!(early.request("GET", &url, &[]).await.unwrap().status, 503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut new = RawConn::connect(proxy).await;
    assert_eq!(new.request("GET", &url, &[]).await.unwrap().status, 200);
    // The oldest stalled head was dropped, unanswered.
    assert!(
        matches!(stalled[0].read_to_end().await, Ok(b) if b.is_empty()),
        "the oldest stalled head was not closed"
    );
    assert_eq!(origin.hits(), 1, "a stalled head reached the origin");
}

/// Connections with a request in flight keep their slots: the excess gets a 503 at once,
/// the requests in flight complete, and once they are idle a new client is served again.
#[tokio::test]
async fn hostile_busy_connections_keep_their_slots_and_the_excess_gets_503() {
    let origin = Origin::start_delayed(Duration::from_millis(1500), no_store_origin()).await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.max_connections = 2;
        c.response_timeout = Duration::from_secs(10);
    })
    .await;
    let url = origin.url("/slow");
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut c = RawConn::connect(proxy).await;
        c.send(&request_text("GET", &url, &[], b"")).await.unwrap();
        busy.push(c);
    }
    // Both requests reach the proxy before the third client comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for send_first in [true, false] {
        let mut c = RawConn::connect(proxy).await;
        if send_first {
            c.send(&request_text("GET", &url, &[], b"")).await.unwrap();
        }
        let refused = c.read_response("GET").await.expect("503 on the socket");
        assert_eq!(refused.status, 503);
        assert_eq!(refused.header("connection"), Some("close"));
        assert!(refused.cache_status().present());
        assert!(matches!(c.read_to_end().await, Ok(b) if b.is_empty()));
    }
    for c in &mut busy {
        let r = c.read_response("GET").await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    assert_eq!(
        origin.hits(),
        2,
        "a refused connection's request reached the origin"
    );
    // Both are idle now: a new client takes the slot of the first.
    let mut new = RawConn::connect(proxy).await;
    assert_eq!(new.request("GET", &url, &[]).await.unwrap().status, 200);
    assert!(matches!(busy[0].read_to_end().await, Ok(b) if b.is_empty()));
    assert_eq!(busy[1].request("GET", &url, &[]).await.unwrap().status, 200);
}

/// The real binary under `ulimit -n 256` (soft and hard: nothing to raise to) with the
/// default `max-connections` (10,000): it says it admits 96, and with 300 idle connections
/// opened at once a client is served within seconds (a miss, then a hit: the store's files
/// still open). Before, the 250th connection or so made `accept` fail with EMFILE and every
/// later client hung.
#[tokio::test]
async fn hostile_many_connections_under_a_low_open_files_limit_leave_clients_served() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hoard"))
        .args(["--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .args(["--upstream", &format!("http://{}", origin.addr)]);
    let warned = Mutex::new(false);
    let (_child, addr) = spawn_hoard_command(cmd, "`listening on ADDR`", |line| {
        if line.contains("open-files limit") && line.contains("admitting 96") {
            *warned.lock().unwrap() = true;
        }
        line.split_once("listening on ")?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
    .await;
    assert!(
        *warned.lock().unwrap(),
        "no warning naming the admitted count"
    );
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The burst is still being accepted (each beyond the slots asks an idle one to close;
    // those finding no place to wait are refused): a client may be refused meanwhile, and is
    // served once the backlog is through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < 2 && std::time::Instant::now() < deadline {
        match RawConn::connect(addr).await.request("GET", "/a", &[]).await {
            Ok(r) if r.status == 200 => {
                assert_eq!(r.text(), "ok");
                seen.push(r.header("cache-status").unwrap_or_default().to_owned());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(seen.len(), 2, "no client was served within 20 s");
    assert!(seen[0].contains("fwd=uri-miss"), "{}", seen[0]);
    assert!(seen[1].contains("hit"), "{}", seen[1]);
    drop(held);
}
