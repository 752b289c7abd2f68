//! An origin that closes a keep-alive connection just as hoard sends on it (its idle timeout
//! firing): an idempotent request without a body is sent once more, on another connection; a
//! POST never is (RFC 9112 9.3.1). A fresh connection that fails is not retried either
//! (`upstream::hostile_origin_reset_before_headers_is_502`).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::proxy;
use crate::proxy::harness::*;
use crate::support::{Listening, listen};

/// Answers the first request of each connection (`ok`, `no-store`), then reads the second
/// and closes the connection unanswered. Records every request line, and those it closed on.
struct ClosingOrigin {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    closed: Arc<Mutex<Vec<String>>>,
    _listening: Listening,
}

impl ClosingOrigin {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let listening = listen({
            let (seen, closed) = (seen.clone(), closed.clone());
            move |stream| {
                let (seen, closed) = (seen.clone(), closed.clone());
                async move {
                    let mut io = BufReader::new(stream);
                    for n in 0.. {
                        let Some((line, body_len)) = request_head(&mut io).await else {
                            return;
                        };
                        seen.lock().unwrap().push(line.clone());
                        if n > 0 {
                            closed.lock().unwrap().push(line);
                            return;
                        }
                        let mut body = vec![0; body_len];
                        if io.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok";
                        if io.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        ClosingOrigin {
            addr: listening.addr,
            seen,
            closed,
            _listening: listening,
        }
    }

    /// How many times the origin read `line`.
    fn seen(&self, line: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }

    fn closed(&self) -> Vec<String> {
        self.closed.lock().unwrap().clone()
    }
}

/// The request line and Content-Length of the next request head; `None` at EOF.
async fn request_head(io: &mut BufReader<tokio::net::TcpStream>) -> Option<(String, usize)> {
    let mut first = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((first, len));
        }
        if first.is_empty() {
            first = line.trim_end().to_string();
        } else if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
}

/// Regression (session 11 finding 7): the GET that went out on the reused connection got
/// `502 detail=bad-response`. Now the client gets 200 and the origin read that request twice:
/// once on the connection it closed, once on a new one.
#[tokio::test]
async fn hostile_get_on_a_reused_connection_closed_by_the_origin_is_sent_again() {
    let origin = ClosingOrigin::start().await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |_| {}).await;
    // Bounded: the first GET opens the connection, the next one reuses it (unless the pool
    // had not taken it back yet: then the round after).
    for i in 0..10 {
        let resp = get(proxy, &format!("/x{i}")).await;
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "ok"),
            "GET /x{i}: {}",
            resp.cache_status().raw
        );
        if !origin.closed().is_empty() {
            break;
        }
    }
    let closed = origin.closed();
    assert!(
        !closed.is_empty(),
        "no GET went out on a reused connection in 10"
    );
    for line in closed.iter().filter(|l| l.starts_with("GET ")) {
        assert_eq!(origin.seen(line), 2, "{line}");
    }
}

/// A POST is never sent twice: the origin may have acted on it. The client gets the 502.
#[tokio::test]
async fn hostile_post_on_a_reused_connection_closed_by_the_origin_is_not_retried() {
    let origin = ClosingOrigin::start().await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |_| {}).await;
    let mut refused = None;
    for i in 0..10 {
        let warm = get(proxy, &format!("/w{i}")).await;
        assert_eq!(warm.status, 200, "GET /w{i}");
        let resp = post(proxy, &format!("/p{i}"), b"data").await;
        if origin.closed().iter().any(|l| l.starts_with("POST ")) {
            refused = Some((i, resp));
            break;
        }
        assert_eq!(resp.status, 200, "POST /p{i} on a fresh connection");
    }
    let (i, resp) = refused.expect("no POST went out on a reused connection in 10");
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(origin.seen(&format!("POST /p{i} HTTP/1.1")), 1);
}
