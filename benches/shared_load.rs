//! Load client for the shared (Redis) tier: requests/s and p50/p99 latency of three kinds of
//! request through hoard proxies sharing one `redis-server`, on keep-alive HTTP/1.1
//! connections (absolute-form through the forward proxy):
//!
//! - **local hit**: one URL already in proxy A's own store (the memory front may answer);
//! - **shared hit**: each request a distinct URL that A stored (so it is in Redis) and proxy B
//!   has never seen; B is a fresh proxy on a new cache directory every round, so every request
//!   is a Redis read plus a copy into B's local store;
//! - **origin fetch**: each request a URL nobody stored (Redis miss, lease, origin round trip,
//!   fill of the local store and of Redis), through A.
//!
//! The kinds alternate in each of `--rounds` rounds (`--secs` each), so background load on the
//! machine hits all three alike; per kind the median of the rounds and the min..max spread are
//! printed. The shared-hit URLs are filled once through A before the rounds (`--urls`, bounded);
//! a round that uses them all up stops early and says how many it did.
//!
//! Everything runs on 127.0.0.1: the origin and the proxies in this process, `redis-server` as a
//! child started here on a free port (no persistence, its own temporary directory) and killed by
//! PID at the end, on panic too. Without `redis-server` the bench says so and exits 0.
//!
//! `cargo bench --bench shared_load -- --conns 16 --secs 3 --rounds 3`

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoard::proxy::{ProxyConfig, Server, ServerHandle};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 1024;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("shared_load: skipped (redis-server is not installed)");
        return;
    }
    let conns = arg("--conns", 16).clamp(1, 1024) as usize;
    let secs = arg("--secs", 3).clamp(1, 120);
    let rounds = arg("--rounds", 3).clamp(1, 50) as usize;
    let urls = arg("--urls", 30_000).clamp(100, 200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(conns, Duration::from_secs(secs), rounds, urls));
}

/// One `redis-server` child on 127.0.0.1; SIGKILLed by PID and reaped on drop.
struct Redis {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = (0..200)
            .map(|_| fastrand::u16(20_000..45_000))
            .find(|p| StdListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free loopback port");
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while StdStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} not ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy on its own temporary cache directory with `redis` as its shared tier (every other
/// setting at its default, `--memory-cache-size` and `--shared-timeout` included).
async fn proxy(redis: &str) -> (ServerHandle, SocketAddr, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("cache"));
    cfg.shared = Some(redis.to_string());
    cfg.max_connections = 4096;
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    (server.spawn(), addr, dir)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Local,
    Shared,
    Origin,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Local => "local hit    ",
            Kind::Shared => "shared hit   ",
            Kind::Origin => "origin fetch ",
        }
    }

    /// Does this `Cache-Status` say what this kind of request should get?
    fn expected(self, cache_status: &str) -> bool {
        let hit = cache_status.contains("; hit");
        let shared = cache_status.contains("detail=shared");
        match self {
            Kind::Local => hit && !shared,
            Kind::Shared => hit && shared,
            Kind::Origin => !hit && cache_status.contains("stored"),
        }
    }
}

/// What one request got.
enum Got {
    Expected,
    Unexpected,
    Error,
}

struct Conn(SendRequest<Empty<Bytes>>);

impl Conn {
    async fn open(proxy: SocketAddr) -> Option<Conn> {
        let tcp = TcpStream::connect(proxy).await.ok()?;
        tcp.set_nodelay(true).ok()?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(Conn(send))
    }

    async fn get(&mut self, url: &str, host: &str, kind: Kind) -> Got {
        let req = Request::get(url)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let Ok(res) = self.0.send_request(req).await else {
            return Got::Error;
        };
        let status = res.status();
        let cs = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match res.into_body().collect().await.map(|b| b.to_bytes()) {
            Ok(b) if status == StatusCode::OK && b.len() == BODY_LEN => {
                if kind.expected(&cs) {
                    Got::Expected
                } else {
                    Got::Unexpected
                }
            }
            _ => Got::Error,
        }
    }
}

/// One kind measured once.
struct Round {
    lat: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
    unexpected: usize,
    /// The shared-hit URLs ran out after this long.
    ran_out: Option<Duration>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        let n = self.lat.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.lat[((n as f64 * q) as usize).min(n - 1)]
    }
}

/// `conns` connections to `proxy`, each sending GETs for `url(i)` (i from one counter shared
/// by all) until `dur` has passed or `url` returns `None`.
async fn measure(
    proxy: SocketAddr,
    host: &str,
    kind: Kind,
    conns: usize,
    dur: Duration,
    url: Arc<dyn Fn(u64) -> Option<String> + Send + Sync>,
) -> Round {
    // Connections are made before the clock starts: keep-alive requests only.
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::open(proxy).await.expect("connect to the proxy"));
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut c| {
            let (url, next, host) = (url.clone(), next.clone(), host.to_string());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(8192);
                let (mut errors, mut unexpected, mut ran_out) = (0, 0, None);
                while Instant::now() < deadline {
                    let Some(u) = url(next.fetch_add(1, Ordering::Relaxed)) else {
                        ran_out = Some(start.elapsed());
                        break;
                    };
                    let t = Instant::now();
                    match c.get(&u, &host, kind).await {
                        Got::Expected => {}
                        Got::Unexpected => unexpected += 1,
                        Got::Error => {
                            errors += 1;
                            // A broken connection is replaced (bounded by the deadline).
                            if c.0.is_closed() {
                                match Conn::open(proxy).await {
                                    Some(n) => c = n,
                                    None => break,
                                }
                            }
                        }
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors, unexpected, ran_out)
            })
        })
        .collect();
    let mut r = Round {
        lat: Vec::new(),
        elapsed: Duration::ZERO,
        errors: 0,
        unexpected: 0,
        ran_out: None,
    };
    for t in tasks {
        let (lat, errors, unexpected, ran_out) = t.await.unwrap();
        r.lat.extend(lat);
        r.errors += errors;
        r.unexpected += unexpected;
        r.ran_out = r.ran_out.or(ran_out);
    }
    r.elapsed = start.elapsed();
    r.lat.sort_unstable();
    r
}

/// GET every URL of `urls` through `proxy` on `conns` connections (filling stores and Redis).
async fn fill(proxy: SocketAddr, host: &str, conns: usize, urls: Arc<Vec<String>>) -> usize {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (urls, next, host) = (urls.clone(), next.clone(), host.to_string());
            tokio::spawn(async move {
                let mut c = Conn::open(proxy).await.expect("connect to the proxy");
                let mut errors = 0;
                while let Some(u) = urls.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    if !matches!(c.get(u, &host, Kind::Origin).await, Got::Expected) {
                        errors += 1;
                        if c.0.is_closed() {
                            c = Conn::open(proxy).await.expect("reconnect to the proxy");
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    errors
}

async fn run(conns: usize, dur: Duration, rounds: usize, n_urls: u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!(
        "command: cargo bench --bench shared_load -- {}",
        args.join(" ")
    );
    println!(
        "shared_load: {conns} keep-alive connections, {dur:?} per kind in {rounds} alternating \
         rounds, {BODY_LEN} B bodies, {cores} cores (shared with whatever else runs)"
    );

    let redis = Redis::start();
    let origin = origin().await;
    let host = origin.to_string();
    let base = format!("http://{origin}");
    let (a_handle, a, _a_dir) = proxy(&redis.url()).await;

    // The local-hit URL, then the shared-hit URLs, all through A.
    let local_url = format!("{base}/local");
    let mut c = Conn::open(a).await.unwrap();
    assert!(matches!(
        c.get(&local_url, &host, Kind::Origin).await,
        Got::Expected
    ));
    let shared_urls: Arc<Vec<String>> =
        Arc::new((0..n_urls).map(|i| format!("{base}/shared/{i}")).collect());
    let t = Instant::now();
    let fill_errors = fill(a, &host, conns.min(8), shared_urls.clone()).await;
    println!(
        "filled {n_urls} shared-hit URLs through proxy A in {:.1} s ({fill_errors} not stored)",
        t.elapsed().as_secs_f64()
    );

    let kinds = [Kind::Local, Kind::Shared, Kind::Origin];
    let mut results: Vec<Vec<Round>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (k, &kind) in kinds.iter().enumerate() {
            let r = match kind {
                Kind::Local => {
                    let u = local_url.clone();
                    measure(
                        a,
                        &host,
                        kind,
                        conns,
                        dur,
                        Arc::new(move |_| Some(u.clone())),
                    )
                    .await
                }
                Kind::Shared => {
                    // A fresh B: its own empty store, connected to Redis before the clock starts
                    // (warm-up URLs filled through A until one is a shared hit on B).
                    let (b_handle, b, _b_dir) = proxy(&redis.url()).await;
                    warm(a, b, &host, &base, round).await;
                    let urls = shared_urls.clone();
                    let r = measure(
                        b,
                        &host,
                        kind,
                        conns,
                        dur,
                        Arc::new(move |i| urls.get(i as usize).cloned()),
                    )
                    .await;
                    b_handle.shutdown().await;
                    r
                }
                Kind::Origin => {
                    let base = base.clone();
                    measure(
                        a,
                        &host,
                        kind,
                        conns,
                        dur,
                        Arc::new(move |i| Some(format!("{base}/origin/{round}/{i}"))),
                    )
                    .await
                }
            };
            let out = r
                .ran_out
                .map(|t| {
                    format!(
                        ", URLs ran out after {:.2} s ({} done)",
                        t.as_secs_f64(),
                        r.lat.len()
                    )
                })
                .unwrap_or_default();
            println!(
                "  round {}: {}{:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} \
                 errors, {} other Cache-Status{out})",
                round + 1,
                kind.label(),
                r.rps(),
                r.quantile(0.50).as_secs_f64() * 1e3,
                r.quantile(0.99).as_secs_f64() * 1e3,
                r.lat.len(),
                r.errors,
                r.unexpected,
            );
            results[k].push(r);
        }
    }

    println!();
    println!(
        "median of {rounds} rounds (min..max), {conns} connections, {} s each, {cores} cores:",
        dur.as_secs()
    );
    println!("| request | req/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (k, kind) in kinds.iter().enumerate() {
        let rs = &results[k];
        let rps = spread(rs.iter().map(|r| r.rps()).collect(), 0);
        let p50 = spread(
            rs.iter()
                .map(|r| r.quantile(0.50).as_secs_f64() * 1e3)
                .collect(),
            2,
        );
        let p99 = spread(
            rs.iter()
                .map(|r| r.quantile(0.99).as_secs_f64() * 1e3)
                .collect(),
            2,
        );
        println!("| {} | {rps} | {p50} | {p99} |", kind.label().trim());
    }
    a_handle.shutdown().await;
    drop(redis);
}

/// Fill warm-up URLs through A and ask B for them until one is a shared hit (B's tier is
/// connected); at most 10 s.
async fn warm(a: SocketAddr, b: SocketAddr, host: &str, base: &str, round: usize) {
    let mut ca = Conn::open(a).await.unwrap();
    let mut cb = Conn::open(b).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        let url = format!("{base}/warm/{round}/{i}");
        ca.get(&url, host, Kind::Origin).await;
        if matches!(cb.get(&url, host, Kind::Shared).await, Got::Expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy B never got a shared hit (its tier did not connect)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "median (min..max)" of `v`, with `prec` decimals.
fn spread(mut v: Vec<f64>, prec: usize) -> String {
    v.sort_by(|x, y| x.total_cmp(y));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!(
        "{median:.prec$} ({:.prec$}..{:.prec$})",
        v[0],
        v[v.len() - 1]
    )
}

/// An origin answering every path with a 1 KiB body, `Cache-Control: max-age=600`.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("cache-control", "max-age=600")
                            .body(Full::new(Bytes::from(vec![b'x'; BODY_LEN])))
                            .unwrap(),
                    )
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}
