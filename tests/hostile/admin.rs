//! The admin listener (`--admin`) of the real binary: half request heads and idle connections
//! are closed at `header-timeout` / `idle-timeout`, connections beyond its fixed limit are
//! closed at once, and only `admin-allow` clients are answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::SLACK;
use crate::proxy::harness::{IO_TIMEOUT, admin_address, spawn_hoard_until};

/// The admin server's connection limit (`hoard::proxy` keeps it fixed).
const LIMIT: usize = 32;

/// The real binary with `--admin 127.0.0.1:0` and `args`; returns the admin address.
async fn spawn_admin(args: &[&str]) -> (tokio::process::Child, SocketAddr, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let mut all: Vec<std::ffi::OsString> = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        .iter()
        .map(Into::into)
        .collect();
    all.push("--cache-dir".into());
    all.push(dir.path().into());
    all.extend(args.iter().map(Into::into));
    let (child, addr) = spawn_hoard_until(all, "`admin on http://ADDR/`", admin_address).await;
    (child, addr, dir)
}

/// Everything the server sends until it closes (a reset counts as closed), or `None` if the
/// connection is still open after `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

/// `GET /healthz` on `s` (keep-alive); the status line, or what came instead.
async fn healthz(s: &mut TcpStream) -> String {
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .is_err()
    {
        return "write failed".into();
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(IO_TIMEOUT, async {
        // The response is small: its head, then "ok\n" (Content-Length 3).
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => head.push(b[0]),
                _ => return false,
            }
        }
        let mut body = [0u8; 3];
        s.read_exact(&mut body).await.is_ok()
    })
    .await;
    match read {
        Ok(true) => String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        _ => format!("no answer: {:?}", String::from_utf8_lossy(&head)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_half_heads_are_closed_at_header_timeout() {
    let (_child, admin, _dir) = spawn_admin(&["--header-timeout", "1s"]).await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(admin).await.expect("connect admin");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: adm")
            .await
            .expect("half head");
        conns.push(s);
    }
    let started = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        let left = (Duration::from_secs(1) + SLACK * 2).saturating_sub(started.elapsed());
        let got = until_closed(s, left.max(Duration::from_millis(1))).await;
        let got = got.unwrap_or_else(|| {
            panic!(
                "half-head connection {i} still open after {:?}",
                started.elapsed()
            )
        });
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let mut s = TcpStream::connect(admin).await.unwrap();
    assert_eq!(healthz(&mut s).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_idle_connections_are_closed() {
    // A connection that never sends is closed at idle-timeout (header-timeout is long) ...
    let (_child, admin, _dir) =
        spawn_admin(&["--header-timeout", "30s", "--idle-timeout", "1s"]).await;
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    let got = until_closed(&mut silent, Duration::from_secs(1) + SLACK * 2).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "after {:?}",
        started.elapsed()
    );
    drop(_child);
    // ... and a keep-alive connection that asks nothing more at header-timeout.
    let (_child, admin, _dir) =
        spawn_admin(&["--header-timeout", "1s", "--idle-timeout", "1m"]).await;
    let mut s = TcpStream::connect(admin).await.unwrap();
    assert_eq!(healthz(&mut s).await, "HTTP/1.1 200 OK");
    let started = Instant::now();
    let got = until_closed(&mut s, Duration::from_secs(1) + SLACK * 2).await;
    assert!(
        got.is_some(),
        "idle keep-alive open after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_connections_beyond_the_limit_are_closed_at_once() {
    let (_child, admin, _dir) =
        spawn_admin(&["--header-timeout", "30s", "--idle-timeout", "1m"]).await;
    // LIMIT keep-alive connections, each served once (so each holds its slot).
    let mut held = Vec::new();
    for i in 0..LIMIT {
        let mut s = TcpStream::connect(admin).await.unwrap();
        assert_eq!(healthz(&mut s).await, "HTTP/1.1 200 OK", "connection {i}");
        held.push(s);
    }
    let mut excess = TcpStream::connect(admin).await.unwrap();
    let _ = excess
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await;
    let got = until_closed(&mut excess, SLACK * 2).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "the connection beyond the limit was not closed at once"
    );
    // A freed slot serves again (the server notices the close asynchronously).
    drop(held.pop());
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut s = TcpStream::connect(admin).await.unwrap();
        if healthz(&mut s).await == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_answers_only_admin_allow() {
    let (_child, admin, _dir) = spawn_admin(&["--admin-allow", "127.0.0.2"]).await;
    let mut outside = TcpStream::connect(admin).await.unwrap();
    let _ = outside
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await;
    let got = until_closed(&mut outside, SLACK * 2).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "127.0.0.1 is outside admin-allow: closed unanswered"
    );
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap())
        .expect("bind 127.0.0.2");
    let mut inside = sock.connect(admin).await.unwrap();
    assert_eq!(healthz(&mut inside).await, "HTTP/1.1 200 OK");
}
