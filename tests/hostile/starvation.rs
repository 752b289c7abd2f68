//! Starvation: clients that do not read what they asked for. They must hold no blocking
//! thread (hits and misses of others keep being answered), are dropped after `idle-timeout`
//! without taking a byte, and never stall a cache fill that others wait for.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{SLACK, proxy};
use crate::proxy::harness::{
    Origin, RawConn, full, get, pattern, request_text, send, spawn_hoard, wait_stored,
};

const BIG: usize = 8 << 20;

/// An origin with an 8 MiB cacheable body at `/big*`, a small cacheable one elsewhere, and
/// uncacheable answers under `/miss`.
async fn origin() -> Origin {
    Origin::start(|req| {
        let path = req.uri().path();
        let (cc, body) = if path.starts_with("/big") {
            ("max-age=3600", pattern(BIG))
        } else if path.starts_with("/miss") {
            ("no-store", b"miss".to_vec())
        } else {
            ("max-age=3600", b"small".to_vec())
        };
        http::Response::builder()
            .status(200)
            .header("cache-control", cc)
            .body(full(body))
            .expect("response")
    })
    .await
}

/// A connection with a 4 KiB receive buffer that sends `GET url`, reads the response head
/// (so the proxy is known to be serving it), and then reads nothing more.
async fn non_reader(proxy: std::net::SocketAddr, url: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut io = socket.connect(proxy).await?;
    io.write_all(&request_text("GET", url, &[], b"")).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(io)
}

/// 700 clients ask for a cached 8 MiB body and never read it (more than tokio's 512 blocking
/// threads): a hit on another URL and a miss through the same proxy are still answered at
/// once (the real binary, store lookups on the blocking pool, no memory cache in front).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_not_reading_a_large_hit_do_not_starve_the_proxy() {
    let origin = origin().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (mut child, proxy) = spawn_hoard([
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--memory-cache-size",
        "0",
    ])
    .await;
    let (big, small) = (origin.url("/big"), origin.url("/small"));
    assert_eq!(get(proxy, &big).await.body.len(), BIG);
    wait_stored(proxy, &big).await;
    get(proxy, &small).await;
    wait_stored(proxy, &small).await;

    // Open the non-readers concurrently; wait (bounded) for their heads.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..700 {
        let big = big.clone();
        set.spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), non_reader(proxy, &big)).await
        });
    }
    let mut held = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = set.join_next().await {
            if let Ok(Ok(Ok(io))) = r {
                held.push(io);
            }
        }
    })
    .await;
    set.abort_all();
    assert!(
        held.len() >= 500,
        "only {} non-readers were served",
        held.len()
    );

    let started = Instant::now();
    let hit = tokio::time::timeout(Duration::from_secs(15), get(proxy, &small))
        .await
        .expect("hit answered");
    let hit_took = started.elapsed();
    hit.cache_status().assert_hit();
    assert_eq!(hit.text(), "small");
    let started = Instant::now();
    let miss = tokio::time::timeout(Duration::from_secs(15), get(proxy, &origin.url("/miss")))
        .await
        .expect("miss answered");
    let miss_took = started.elapsed();
    assert_eq!(miss.text(), "miss");
    assert!(
        hit_took < Duration::from_secs(2) && miss_took < Duration::from_secs(2),
        "with {} non-readers: hit took {hit_took:?}, miss took {miss_took:?}",
        held.len()
    );
    drop(held);
    let _ = child.kill().await;
}

/// A client that asks for a large hit and reads nothing more than the head is dropped once it
/// has taken nothing for `idle-timeout`: its `max-connections` slot (here the only one)
/// serves another client again.
#[tokio::test]
async fn hostile_a_client_not_reading_its_response_is_dropped_after_idle_timeout() {
    let origin = origin().await;
    let idle = Duration::from_secs(1);
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.idle_timeout = idle;
        c.max_connections = 1;
    })
    .await;
    let big = origin.url("/big");
    let small = origin.url("/small");
    // Each probe below takes the only slot for a moment: a 503 just means "try again".
    wait_for_200(proxy, &big, Duration::from_secs(10)).await;
    wait_stored(proxy, &big).await;
    let stalled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(io) = non_reader(proxy, &big).await {
                return io;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the non-reader gets the slot");
    let started = Instant::now();
    wait_for_200(proxy, &small, idle + SLACK + SLACK).await;
    let took = started.elapsed();
    assert!(
        took >= idle - Duration::from_millis(200),
        "served after {took:?}, before the non-reader could have been dropped"
    );
    drop(stalled);
}

/// GET `url` on fresh connections until one answers 200 (the others get 503 while the only
/// connection slot is taken), at most for `within`.
async fn wait_for_200(proxy: std::net::SocketAddr, url: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let mut conn = RawConn::connect(proxy).await;
        if let Ok(r) = conn.request("GET", url, &[]).await
            && r.status == 200
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{url} not served within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client that triggered a fill reads only the head: the fill still completes and stores
/// (the client is dropped after `idle-timeout`), and a second client waiting on that fill gets
/// the whole body from the cache, with one origin fetch in all.
#[tokio::test]
async fn hostile_a_fill_completes_and_stores_despite_a_client_not_reading() {
    let origin = origin().await;
    let idle = Duration::from_secs(1);
    let (_h, proxy, _dir) = proxy(None, |c| c.idle_timeout = idle).await;
    let url = origin.url("/big-fill");
    let first = tokio::time::timeout(Duration::from_secs(10), non_reader(proxy, &url))
        .await
        .expect("head in time")
        .expect("first client served");
    let second = tokio::time::timeout(Duration::from_secs(15), get(proxy, &url))
        .await
        .expect("second client answered");
    assert_eq!(second.status, 200);
    assert!(second.body == pattern(BIG), "second client's body differs");
    let probe = [("Cache-Control", "only-if-cached")];
    let stored = send(proxy, "GET", &url, &probe).await;
    assert_eq!(stored.status, 200, "the fill was not stored");
    assert_eq!(stored.body.len(), BIG);
    assert_eq!(origin.count("GET", "/big-fill"), 1);
    drop(first);
}
