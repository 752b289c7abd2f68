//! XFetch early refresh with an injected random source: a fresh hit starts one background
//! revalidation exactly when `now - delta * beta * ln(u) >= fresh_until`, once per key, and
//! no client waits for it. `delta` is the origin's delay (500 ms), `max-age=100`; the
//! refresh's 304 takes 1.5 s, so a hit that waited for it is told apart without a tight bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::{Act, Origin, burst, detail};
use crate::proxy::harness::{reply, start_proxy_in};
use hoard::proxy::ProxyConfig;

const DELAY: Duration = Duration::from_millis(500);
/// The origin's delay for a revalidation (the 304 a refresh gets): a hit that waited for a
/// refresh would take at least this long (under the test proxy's 2 s response timeout).
const REFRESH_DELAY: Duration = Duration::from_millis(1500);
/// A correctness bound, not a speed target: half of [`REFRESH_DELAY`], so a hit that waited
/// for the refresh always fails it, and a hit that did not has 750 ms
/// (three times the bound that failed once at a load average of 8).
const HIT_BOUND: Duration = Duration::from_millis(750);

async fn origin() -> Origin {
    Origin::start_with(|_, req| {
        let headers = [("cache-control", "max-age=100"), ("etag", "\"x1\"")];
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"x1\"")
        {
            Act::Reply(REFRESH_DELAY, reply(304, &headers, ""))
        } else {
            Act::Reply(DELAY, reply(200, &headers, "xfetch body"))
        }
    })
    .await
}

async fn proxy(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (hoard::proxy::ServerHandle, std::net::SocketAddr) {
    start_proxy_in(dir, None, tweak).await
}

/// Fires `n` concurrent GETs; asserts every one is a hit answered within [`HIT_BOUND`];
/// returns how many started an early refresh.
async fn hits(proxy: std::net::SocketAddr, url: &str, n: usize) -> usize {
    let mut early = 0;
    for (res, took) in burst(&[proxy], url, n).await {
        assert_eq!((res.status, res.text().as_str()), (200, "xfetch body"));
        assert!(
            res.cache_status().hit,
            "expected a hit: {:?}",
            res.cache_status().raw
        );
        assert!(
            took < HIT_BOUND,
            "a hit waited {took:?} (a refresh takes {REFRESH_DELAY:?})"
        );
        if detail(&res).as_deref() == Some("early-refresh") {
            early += 1;
        }
    }
    early
}

fn u_one() -> f64 {
    1.0
}
fn u_inv_e() -> f64 {
    (-1.0f64).exp()
}
fn u_tiny() -> f64 {
    1e-300
}

/// (beta, random source, its name, refresh expected?)
type Case = (f64, fn() -> f64, &'static str, bool);

/// Table: (beta, u, refresh?). The gap `delta * beta * -ln(u)` against a ttl of ~100 s, with
/// delta = 0.5..0.6 s: u = 1 never refreshes; beta = 0 disables; -ln(1e-300) = 690.8.
#[tokio::test]
async fn xfetch_refreshes_exactly_when_the_formula_says() {
    let cases: [Case; 6] = [
        (1.0, u_one, "u=1", false),
        (1e6, u_one, "u=1", false),
        (0.0, u_tiny, "u=1e-300", false),
        (1.0, u_tiny, "u=1e-300", true),
        (100.0, u_inv_e, "u=1/e", false),
        (400.0, u_inv_e, "u=1/e", true),
    ];
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|(beta, random, u_name, due)| {
            // The pure formula agrees with the expectation, over the range of delta.
            let now = SystemTime::now();
            for delta_ms in [500, 600] {
                let formula = hoard::http_cache::xfetch_due(
                    now,
                    now + Duration::from_secs(99),
                    Duration::from_millis(delta_ms),
                    beta,
                    random(),
                );
                assert_eq!(
                    formula, due,
                    "formula: beta={beta} {u_name} delta={delta_ms}ms"
                );
            }
            tokio::spawn(async move {
                let origin = origin().await;
                let dir = tempfile::TempDir::new().unwrap();
                let (_h, proxy) = proxy(dir.path(), |c| {
                    c.xfetch_beta = beta;
                    c.random = random;
                })
                .await;
                let url = origin.url("/x");
                let (first, _) = burst(&[proxy], &url, 1).await.pop().unwrap();
                assert_eq!(first.text(), "xfetch body");
                let early = hits(proxy, &url, 20).await;
                let seen = origin
                    .wait_hits(1 + usize::from(due), Duration::from_secs(2))
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let case = format!("beta={beta} {u_name}");
                assert_eq!(
                    early,
                    usize::from(due),
                    "{case}: responses marked early-refresh"
                );
                assert_eq!(
                    (seen, origin.hits()),
                    (1 + usize::from(due), 1 + usize::from(due)),
                    "{case}: origin requests"
                );
                assert_eq!(
                    origin.conditional(),
                    usize::from(due),
                    "{case}: the refresh is conditional"
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("case");
    }
}

static U: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0

fn u_switch() -> f64 {
    f64::from_bits(U.load(Ordering::SeqCst))
}

/// Many concurrent hits while an early refresh is due: all are served at once from the cache,
/// and the origin sees exactly one conditional request, however many hits found it due.
#[tokio::test]
async fn xfetch_refreshes_once_per_key_and_clients_never_wait() {
    let origin = origin().await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_h, proxy) = proxy(dir.path(), |c| c.random = u_switch).await;
    let url = origin.url("/once");
    burst(&[proxy], &url, 1).await;
    assert_eq!(hits(proxy, &url, 50).await, 0, "u = 1: no early refresh");
    assert_eq!(origin.hits(), 1);

    U.store(1e-300f64.to_bits(), Ordering::SeqCst);
    assert_eq!(hits(proxy, &url, 50).await, 1, "one hit starts the refresh");
    // A second wave while the refresh is still in flight (the 304 takes REFRESH_DELAY).
    assert_eq!(
        hits(proxy, &url, 50).await,
        0,
        "no second refresh while one runs"
    );
    U.store(1.0f64.to_bits(), Ordering::SeqCst);
    assert_eq!(origin.wait_hits(2, Duration::from_secs(2)).await, 2);
    let refresh = origin.seen().pop().unwrap();
    assert_eq!(
        refresh.headers.get("if-none-match").unwrap(),
        "\"x1\"",
        "refresh is conditional"
    );
    tokio::time::sleep(REFRESH_DELAY + Duration::from_millis(200)).await;
    assert_eq!(hits(proxy, &url, 50).await, 0);
    assert_eq!(
        origin.hits(),
        2,
        "exactly one background refresh for the key"
    );
}
