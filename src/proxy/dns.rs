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
//! Within the bound, the names of one domain (their last two labels: `*.evil.test`) hold at
//! most [`PER_DOMAIN`] lookups at once: a client asking for many names of a domain whose DNS
//! server never answers holds a quarter of the lookups, not all of them, and other clients'
//! names still find a permit at once (a per-client share would not do: every local client is
//! 127.0.0.1, and a local attacker may use any address of 127.0.0.0/8).
//!
//! Invariant: the permits are released by the blocking call itself when `getaddrinfo`
//! returns, never when the waiting future is dropped (a timed-out connect does not free a
//! thread that is still stuck in the resolver).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Lookups running at once, process-wide (the blocking pool has 512 threads per runtime).
pub const LOOKUPS: usize = 64;

/// Lookups of one domain's names running at once (a quarter of [`LOOKUPS`]).
pub const PER_DOMAIN: usize = LOOKUPS / 4;

static PERMITS: Semaphore = Semaphore::const_new(LOOKUPS);
static DOMAINS: LazyLock<Domains> = LazyLock::new(|| Domains::new(PER_DOMAIN));

/// The addresses of `host` (a name, or an IP literal, which needs no lookup), with `port`.
pub async fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    bounded(&PERMITS, &DOMAINS, host, port, |h, p| {
        (h, p).to_socket_addrs().map(Iterator::collect)
    })
    .await
}

/// [`lookup`] under `permits` and `domains` with the blocking `resolve` (tests give their
/// own).
async fn bounded(
    permits: &'static Semaphore,
    domains: &'static Domains,
    host: &str,
    port: u16,
    resolve: fn(&str, u16) -> io::Result<Vec<SocketAddr>>,
) -> io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let share = domains.acquire(domain_of(host)).await?;
    let permit = permits
        .acquire()
        .await
        .map_err(|_| io::Error::other("lookups closed"))?;
    let host = host.to_owned();
    tokio::task::spawn_blocking(move || {
        let _held = (permit, share);
        resolve(&host, port)
    })
    .await
    .map_err(io::Error::other)?
}

/// The domain whose lookups share a bound: the last two labels of `host`, lowercased
/// (`a.b.evil.test` -> `evil.test`), or the whole name when it has fewer.
fn domain_of(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let start = host.rmatch_indices('.').nth(1).map_or(0, |(i, _)| i + 1);
    host[start..].to_ascii_lowercase()
}

/// Each domain's lookups in flight or waiting: a semaphore of `per_domain` permits, kept only
/// while someone holds or waits for one of them (the table is bounded by the lookups asked
/// for at once, which the requests and tunnels in flight bound). The last permit's drop
/// removes its domain; a waiter dropped before its permit may leave an unused entry, which
/// the next sweep removes (a sweep runs when the table has doubled since the last one).
struct Domains {
    per_domain: usize,
    table: Mutex<Table>,
}

struct Table {
    domains: HashMap<String, Arc<Semaphore>>,
    /// Sweep unused entries when the table reaches this size.
    sweep_at: usize,
}

/// The smallest table size that triggers a sweep.
const SWEEP_AT: usize = 1024;

/// A domain's permit; dropping it forgets the domain once nobody else holds or awaits one.
struct DomainShare {
    domains: &'static Domains,
    domain: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Domains {
    fn new(per_domain: usize) -> Domains {
        Domains {
            per_domain,
            table: Mutex::new(Table {
                domains: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    async fn acquire(&'static self, domain: String) -> io::Result<DomainShare> {
        let sem = {
            let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            if t.domains.len() >= t.sweep_at {
                t.domains.retain(|_, s| Arc::strong_count(s) > 1);
                t.sweep_at = (t.domains.len() * 2).max(SWEEP_AT);
            }
            t.domains
                .entry(domain.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_domain)))
                .clone()
        };
        // Dropped while waiting (a timed-out connect), the share still cleans up.
        let mut share = DomainShare {
            domains: self,
            domain,
            permit: None,
        };
        share.permit = Some(
            sem.acquire_owned()
                .await
                .map_err(|_| io::Error::other("lookups closed"))?,
        );
        Ok(share)
    }

    /// Domains with a lookup held or awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .domains
            .len()
    }
}

impl Drop for DomainShare {
    fn drop(&mut self) {
        let mut t = self
            .domains
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // Only the table's own reference left: nobody holds or waits for this domain.
        if t.domains
            .get(&self.domain)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            t.domains.remove(&self.domain);
        }
    }
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
        static WIDE: LazyLock<Domains> = LazyLock::new(|| Domains::new(LOOKUPS));
        let t0 = std::time::Instant::now();
        let all: Vec<_> = (0..24)
            .map(|i| tokio::spawn(bounded(&FOUR, &WIDE, "silent.test", 80 + i, stuck)))
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
        static D: LazyLock<Domains> = LazyLock::new(|| Domains::new(1));
        let v6 = bounded(&ONE, &D, "[::1]", 8080, refuse).await.unwrap();
        assert_eq!(v6, [SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 8080))]);
        let v4 = bounded(&ONE, &D, "127.0.0.1", 80, refuse).await.unwrap();
        assert_eq!(v4, [SocketAddr::from(([127, 0, 0, 1], 80))]);
        assert!(bounded(&ONE, &D, "name.test", 80, refuse).await.is_err());
        assert_eq!(D.len(), 0, "the domain is forgotten once its lookup ended");
    }

    #[test]
    fn a_domain_is_the_last_two_labels() {
        for (host, domain) in [
            ("a.b.Evil.Test", "evil.test"),
            ("evil.test.", "evil.test"),
            ("x.evil.test.", "evil.test"),
            ("localhost", "localhost"),
            ("n1.silent.test", "silent.test"),
        ] {
            assert_eq!(domain_of(host), domain, "{host}");
        }
    }

    static SILENT_DONE: AtomicUsize = AtomicUsize::new(0);

    /// A name of a domain whose DNS server is slow to answer (500 ms).
    fn silent(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        std::thread::sleep(Duration::from_millis(500));
        SILENT_DONE.fetch_add(1, SeqCst);
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    fn quick(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    /// Names of one silent domain take at most their share of the lookups: another domain's
    /// name is looked up while they all still wait (before the first of them ends). With
    /// only the process-wide bound, the silent names would hold all three permits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_domain_cannot_take_every_lookup() {
        static THREE: Semaphore = Semaphore::const_new(3);
        static TWO_EACH: LazyLock<Domains> = LazyLock::new(|| Domains::new(2));
        let flood: Vec<_> = (0..4)
            .map(|i| {
                let host = format!("n{i}.silent.test");
                tokio::spawn(async move { bounded(&THREE, &TWO_EACH, &host, 80, silent).await })
            })
            .collect();
        // Let the flood take the permits it may (and queue for the rest): with the domain's
        // share, two; without, all three.
        while THREE.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let other = bounded(&THREE, &TWO_EACH, "www.other.test", 443, quick)
            .await
            .unwrap();
        assert_eq!(other[0].port(), 443);
        assert_eq!(
            SILENT_DONE.load(SeqCst),
            0,
            "the other domain's lookup waited for a silent one"
        );
        for t in flood {
            t.await.unwrap().unwrap();
        }
        assert_eq!(SILENT_DONE.load(SeqCst), 4);
        assert_eq!(THREE.available_permits(), 3);
        assert_eq!(TWO_EACH.len(), 0, "every domain is forgotten at the end");
    }

    /// A lookup taking 50 ms (apart from [`stuck`]'s counters).
    fn slow(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        std::thread::sleep(Duration::from_millis(50));
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    /// A waiter dropped before its permit (a connect that timed out) leaves no permit taken,
    /// and its domain is forgotten by the permit holders' drops or the next sweep.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_waiters_leave_nothing_held() {
        static MANY: Semaphore = Semaphore::const_new(8);
        static ONE_EACH: LazyLock<Domains> = LazyLock::new(|| Domains::new(1));
        let held = tokio::spawn(bounded(&MANY, &ONE_EACH, "a.slow.test", 80, slow));
        while MANY.available_permits() == 8 {
            tokio::task::yield_now().await;
        }
        // Waits for the domain's one permit, then gives up.
        let waited = tokio::time::timeout(
            Duration::from_millis(10),
            bounded(&MANY, &ONE_EACH, "b.slow.test", 80, slow),
        )
        .await;
        assert!(waited.is_err(), "the second lookup of the domain waited");
        held.await.unwrap().unwrap();
        assert_eq!(MANY.available_permits(), 8);
        assert_eq!(ONE_EACH.len(), 0);
    }
}
