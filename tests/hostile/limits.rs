//! Client limits: oversized header blocks (431), slow header senders (`header_timeout`) and
//! idle keep-alive connections (`idle_timeout`); `max_connections` is in `slots`.

use std::time::{Duration, Instant};

use super::{SLACK, proxy};
use crate::proxy::harness::*;

#[tokio::test]
async fn hostile_header_block_over_64_kib_is_431_and_nothing_cached() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let big = "b".repeat(70 * 1024);
    let resp = send(proxy, "GET", &origin.url("/x"), &[("X-Big", &big)]).await;
    assert_eq!(resp.status, 431);
    assert!(resp.cache_status().present());
    assert_eq!(origin.hits(), 0);
    assert_eq!(get(proxy, &origin.url("/x")).await.status, 200);
    assert_eq!(origin.hits(), 1);
}

/// A client that trickles a head that never ends holds at most `head_buffer` of it (81 KiB
/// with the default 64 KiB `max-header-size`): hoard answers 431 and stops reading once its
/// buffer is full, long before 200 KiB (the buffer was 256 KiB: 1.3 GB for 5,000 such
/// clients, session 12's review).
#[tokio::test]
async fn hostile_endless_header_block_is_refused_at_the_head_buffer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    assert_eq!(hoard::proxy::head_buffer(64 * 1024), 81 * 1024);
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Big: ")
        .await
        .unwrap();
    // 200 KiB of one field value in 8 KiB pieces, never the end of the head.
    let piece = vec![b'a'; 8 * 1024];
    for _ in 0..25 {
        if s.write_all(&piece).await.is_err() {
            break; // refused and closed already
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer to a 200 KiB head: still buffering it"
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn hostile_100_header_fields_is_431_and_99_pass() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "max-age=600")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let names: Vec<String> = (0..99).map(|i| format!("X-F{i}")).collect();
    // Host plus 98 of ours: 99 fields, the most hyper's 100 parse slots take.
    let fields: Vec<(&str, &str)> = names[..98].iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(
        send(proxy, "GET", &origin.url("/many"), &fields)
            .await
            .status,
        200
    );
    assert_eq!(origin.hits(), 1);
    // Host plus 99: refused before anything is looked up or fetched.
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(
        send(proxy, "GET", &origin.url("/more"), &fields)
            .await
            .status,
        431
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn hostile_slow_header_sender_is_dropped_after_header_timeout() {
    let (_h, proxy, _dir) = proxy(None, |c| c.header_timeout = Duration::from_millis(800)).await;
    let mut conn = RawConn::connect(proxy).await;
    let started = Instant::now();
    // One byte every 100 ms: always active, never done (bounded: 100 bytes, 10 s).
    let head = b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head.iter().take(100) {
        if conn.send(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let rest = conn.read_to_end().await; // 408 then close, or a plain close
    let elapsed = started.elapsed();
    assert!(cut || rest.is_ok(), "connection not closed: {rest:?}");
    assert!(
        elapsed < Duration::from_millis(800) + SLACK,
        "slow header sender held the connection for {elapsed:?}"
    );
}

#[tokio::test]
async fn hostile_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let idle = Duration::from_millis(700);
    let (_h, proxy, _dir) = proxy(None, |c| c.idle_timeout = idle).await;
    let mut conn = RawConn::connect(proxy).await;
    let resp = conn.request("GET", &origin.url("/x"), &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    let started = Instant::now();
    let rest = conn.read_to_end().await;
    let elapsed = started.elapsed();
    assert!(matches!(&rest, Ok(b) if b.is_empty()), "{rest:?}");
    assert!(
        elapsed >= idle - Duration::from_millis(100),
        "closed early: {elapsed:?}"
    );
    assert!(
        elapsed < idle + SLACK,
        "idle connection held for {elapsed:?}"
    );
}

#[tokio::test]
async fn hostile_connection_that_never_sends_is_closed() {
    let idle = Duration::from_millis(700);
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.idle_timeout = idle;
        c.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    let started = Instant::now();
    let rest = conn.read_to_end().await;
    assert!(rest.is_ok(), "{rest:?}");
    assert!(started.elapsed() < idle + SLACK);
}

#[tokio::test]
async fn hostile_idle_timeout_does_not_cut_a_slow_response_in_flight() {
    let origin = Origin::start_delayed(Duration::from_millis(1500), |_| {
        reply(200, &[("cache-control", "no-store")], "slow but fine")
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.idle_timeout = Duration::from_millis(500);
        c.response_timeout = Duration::from_secs(5);
    })
    .await;
    let resp = get(proxy, &origin.url("/slow")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "slow but fine"));
}

#[tokio::test]
async fn hostile_idle_keep_alive_is_also_bounded_by_header_timeout() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.idle_timeout = Duration::from_secs(60);
        c.header_timeout = Duration::from_millis(700);
    })
    .await;
    let mut conn = RawConn::connect(proxy).await;
    assert_eq!(
        conn.request("GET", &origin.url("/x"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    let started = Instant::now();
    let rest = conn.read_to_end().await;
    assert!(rest.is_ok(), "{rest:?}");
    assert!(started.elapsed() < Duration::from_millis(700) + SLACK);
}

/// The idle watchdog covers HTTP/2 (prior knowledge) too: the server sends GOAWAY and closes.
#[tokio::test]
async fn hostile_idle_http2_connection_is_closed_after_idle_timeout() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let idle = Duration::from_millis(700);
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |c| c.idle_timeout = idle).await;
    let conn = h2_connection_after_one_get(proxy, "/x").await;
    let started = Instant::now();
    let ended = tokio::time::timeout(idle + SLACK + SLACK, conn).await;
    assert!(
        ended.is_ok(),
        "idle h2 connection still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < idle + SLACK,
        "closed after {:?}",
        started.elapsed()
    );
}
