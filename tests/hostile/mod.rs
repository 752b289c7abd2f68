//! Hostile and broken peers: misbehaving origins (each answered within its timeout, nothing
//! cached), request smuggling and framing attacks, slow and idle clients, connection limits,
//! access control, privacy of responses, and the modes and owners of the store's and the CA's files. Each test backs one line of README "Guarantees".

mod access;
mod admin;
mod files;
mod framing;
mod h2;
mod keepalive;
mod limits;
mod privacy;
mod refreshes;
mod sharing;
mod slots;
mod starvation;
mod tunnels;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hoard::proxy::{ProxyConfig, ServerHandle};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use crate::proxy::harness::start_proxy_in;
use crate::support::{Listening, listen};

/// Timeouts used by these tests: small, so a hang shows up as a failure quickly.
pub const T: Duration = Duration::from_secs(1);
/// Scheduling slack on a loaded machine.
pub const SLACK: Duration = Duration::from_millis(2000);

/// A proxy with 1 s connect and response timeouts, tweaked further by `tweak`.
pub async fn proxy(
    upstream: Option<SocketAddr>,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (ServerHandle, SocketAddr, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let (h, a) = start_proxy_in(dir.path(), upstream, |c| {
        c.connect_timeout = T;
        c.response_timeout = T;
        tweak(c)
    })
    .await;
    (h, a, dir)
}

/// An origin that reads each request head and hands the connection and the request's
/// ordinal (0, 1, ...) to `behave`, which writes whatever fault it likes.
pub struct FaultOrigin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _listening: Listening,
}

impl FaultOrigin {
    pub async fn start<F, Fut>(behave: F) -> Self
    where
        F: Fn(BufReader<TcpStream>, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hits = Arc::new(AtomicUsize::new(0));
        let behave = Arc::new(behave);
        let listening = listen({
            let hits = hits.clone();
            move |stream| {
                let (hits, behave) = (hits.clone(), behave.clone());
                async move {
                    let mut io = BufReader::new(stream);
                    if read_head(&mut io).await {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        // Every fault is bounded: no origin task outlives 10 s.
                        let _ = tokio::time::timeout(Duration::from_secs(10), behave(io, n)).await;
                    }
                }
            }
        })
        .await;
        FaultOrigin {
            addr: listening.addr,
            hits,
            _listening: listening,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request head; false at EOF or error.
pub async fn read_head(io: &mut BufReader<TcpStream>) -> bool {
    loop {
        let mut line = String::new();
        match io.read_line(&mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" || line == "\n" => return true,
            Ok(_) => {}
        }
    }
}
