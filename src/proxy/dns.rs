//! Host name lookups of origins and CONNECT targets: the system resolver (`getaddrinfo`:
//! `/etc/hosts`, nsswitch, resolv.conf) on tokio's blocking threads, at most [`LOOKUPS`] at
//! once in the whole process.
//!
//! Why the bound: a lookup waiting for a DNS server that does not answer holds its blocking
//! thread for the resolver's whole timeout (seconds), and the store's reads that wait for the
//! disk (value files of bodies not in memory) run on the same threads. Unbounded, 1,200 names
//! of a silent domain held every blocking thread (512 per runtime) and a hit on a stored 4 MiB
//! body took 9 s instead of 20 ms (session 12's black-box review). A lookup beyond the bound
//! waits for a permit without a thread; the caller's `connect-timeout` bounds that wait.
//!
//! Invariant: the permit is released by the blocking call itself when `getaddrinfo` returns,
//! never when the waiting future is dropped (a timed-out connect does not free a thread that
//! is still stuck in the resolver).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Lookups running at once, process-wide (the blocking pool has 512 threads per runtime).
pub const LOOKUPS: usize = 64;

static PERMITS: Semaphore = Semaphore::const_new(LOOKUPS);

/// The addresses of `host` (a name, or an IP literal, which needs no lookup), with `port`.
pub async fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    bounded(&PERMITS, host, port, |h, p| {
        (h, p).to_socket_addrs().map(Iterator::collect)
    })
    .await
}

/// [`lookup`] under `permits` with the blocking `resolve` (tests give their own).
async fn bounded(
    permits: &'static Semaphore,
    host: &str,
    port: u16,
    resolve: fn(&str, u16) -> io::Result<Vec<SocketAddr>>,
) -> io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let permit = permits
        .acquire()
        .await
        .map_err(|_| io::Error::other("lookups closed"))?;
    let host = host.to_owned();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        resolve(&host, port)
    })
    .await
    .map_err(io::Error::other)?
}

/// Connect to `host:port`: each address of its lookup in turn, the first that accepts.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in lookup(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{host}: no address"))))
}

/// The resolver of the origin client's `HttpConnector` ([`lookup`], port filled in by it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move { Ok(lookup(&host, 0).await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// A resolver stuck for 50 ms (a silent DNS server, shortened), counting how many run.
    fn stuck(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let now = RUNNING.fetch_add(1, SeqCst) + 1;
        MOST.fetch_max(now, SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        RUNNING.fetch_sub(1, SeqCst);
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_beyond_the_bound_wait_without_a_thread() {
        static FOUR: Semaphore = Semaphore::const_new(4);
        let t0 = std::time::Instant::now();
        let all: Vec<_> = (0..24)
            .map(|i| tokio::spawn(bounded(&FOUR, "silent.test", 80 + i, stuck)))
            .collect();
        // Meanwhile other blocking work still gets a thread (it does not queue behind them).
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        for (i, t) in all.into_iter().enumerate() {
            let addrs = t.await.unwrap().unwrap();
            assert_eq!(addrs[0].port(), 80 + i as u16);
        }
        assert_eq!(
            MOST.load(SeqCst),
            4,
            "at most the bound at once, and all of it used"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(6 * 50),
            "24 lookups, 4 at a time"
        );
        // A dropped waiter releases nothing it did not hold; the permits all come back.
        assert_eq!(FOUR.available_permits(), 4);
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup() {
        // A resolver that fails: an IP literal never reaches it (and no test asks the system
        // resolver anything).
        fn refuse(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
            Err(io::Error::other("looked up"))
        }
        static ONE: Semaphore = Semaphore::const_new(1);
        let v6 = bounded(&ONE, "[::1]", 8080, refuse).await.unwrap();
        assert_eq!(v6, [SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 8080))]);
        let v4 = bounded(&ONE, "127.0.0.1", 80, refuse).await.unwrap();
        assert_eq!(v4, [SocketAddr::from(([127, 0, 0, 1], 80))]);
        assert!(bounded(&ONE, "name.test", 80, refuse).await.is_err());
    }
}
