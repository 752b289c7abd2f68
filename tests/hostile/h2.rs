//! HTTP/2 limits on the client side, through raw frames (a well-behaved client library would
//! not break them): the concurrent stream limit, and rapid reset (CVE-2023-44487).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy;
use crate::proxy::harness::{Origin, get, reply, silent_origin};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET path` on `authority`, HPACK without Huffman or the dynamic table.
fn get_headers(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    for (index, value) in [(4u8, path), (1u8, authority)] {
        // Literal without indexing, indexed name; short values only.
        assert!(value.len() < 127);
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        let at = if self.ty == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("error code"))
    }
}

async fn read_frame(io: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok(Frame {
        ty: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().expect("4 bytes")) & 0x7fff_ffff,
        payload,
    })
}

/// Connect with prior knowledge and exchange SETTINGS (the server's apply once acknowledged).
async fn h2c(proxy: std::net::SocketAddr) -> TcpStream {
    let mut io = TcpStream::connect(proxy).await.expect("connect");
    io.write_all(PREFACE).await.expect("preface");
    io.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let f = read_frame(&mut io).await.expect("server frame");
            if f.ty == SETTINGS && f.flags & ACK == 0 {
                io.write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .expect("ack");
                return;
            }
        }
    })
    .await
    .expect("server SETTINGS in time");
    io
}

/// A client that opens more streams at once than the limit (100) gets the excess refused
/// (RST_STREAM REFUSED_STREAM), each one, while the first 100 are served.
#[tokio::test]
async fn hostile_h2_streams_over_the_concurrency_limit_are_refused() {
    let (origin, _task) = silent_origin().await;
    let (_h, proxy, _dir) = proxy(Some(origin), |_| {}).await;
    let mut io = h2c(proxy).await;
    let authority = proxy.to_string();
    let n = 120u32;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(get_headers(2 * i + 1, &authority, &format!("/s{i}")));
    }
    io.write_all(&burst).await.expect("burst");
    // The 100 admitted streams end with 504 after the 1 s response timeout.
    let (mut refused, mut ended) = (0, 0);
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        while ended < n {
            let f = read_frame(&mut io).await?;
            match f.ty {
                RST_STREAM if f.stream > 0 => {
                    ended += 1;
                    if f.code() == REFUSED_STREAM {
                        refused += 1;
                    }
                }
                HEADERS | DATA if f.stream > 0 && f.flags & END_STREAM != 0 => ended += 1,
                GOAWAY => break,
                _ => {}
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
    assert_eq!(ended, n, "every stream ends, refused or answered");
    assert_eq!(
        refused,
        n - 100,
        "streams over the limit of 100 are refused"
    );
}

/// Rapid reset: streams opened and reset at once, thousands of them, get the connection closed
/// with GOAWAY(ENHANCE_YOUR_CALM) promptly; other clients keep being served meanwhile.
#[tokio::test]
async fn hostile_h2_rapid_reset_gets_goaway_and_others_are_served() {
    let origin = Origin::start(|_| reply(200, &[("cache-control", "no-store")], "ok")).await;
    let (_h, proxy, _dir) = proxy(Some(origin.addr), |_| {}).await;
    let io = h2c(proxy).await;
    let (mut rd, mut wr) = io.into_split();
    let reader = tokio::spawn(async move {
        // The first GOAWAY, if any, before the connection ends.
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match read_frame(&mut rd).await {
                    Ok(f) if f.ty == GOAWAY => return Some(f.code()),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    });
    let authority = proxy.to_string();
    let started = Instant::now();
    let mut sent = 0u32;
    // At most 10,000 streams, 500 per write.
    'attack: for batch in 0..20u32 {
        let mut buf = Vec::new();
        for i in 0..500u32 {
            let id = 2 * (batch * 500 + i) + 1;
            buf.extend(get_headers(id, &authority, "/r"));
            buf.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&buf)).await {
            Ok(Ok(())) => sent += 500,
            _ => break 'attack, // closed by the server
        }
        if reader.is_finished() {
            break;
        }
    }
    let code = reader.await.expect("reader task");
    assert_eq!(
        code,
        Some(ENHANCE_YOUR_CALM),
        "GOAWAY(ENHANCE_YOUR_CALM) after {sent} reset streams"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(wr);
    let res = get(proxy, &format!("http://{}/other", origin.addr)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "ok");
}
