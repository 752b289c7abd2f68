//! Several hoard proxies (each its own cache directory, as on separate machines) sharing one
//! real Redis through `--shared`: a cold URL is fetched once for all of them, a URL one fetched
//! is a hit on another, a purge on one reaches the others, a fleet crawling one site asks the
//! origin for each page once, and Redis dying under load fails no request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hoard::proxy::ServerHandle;
use tempfile::TempDir;

use super::{Redis, have_redis};
use crate::proxy::harness::*;

/// A proxy on its own directory using `redis_url` as its shared tier.
pub(super) async fn hoard_on(redis_url: &str) -> (ServerHandle, SocketAddr, TempDir) {
    let dir = TempDir::new().unwrap();
    let url = redis_url.to_string();
    let (h, a) = start_proxy_in(dir.path(), None, move |c| {
        c.shared = Some(url);
        c.shared_timeout = Duration::from_millis(200);
        c.lock_timeout = Duration::from_secs(10);
    })
    .await;
    (h, a, dir)
}

/// Wait until `n` tiers are connected and subscribed (each holds a command connection and a
/// subscriber connection to Redis).
pub(super) async fn connected(redis: &Redis, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = redis.cli(&["CLIENT", "LIST"]).lines().count();
        let subscribers = redis
            .cli(&["PUBSUB", "NUMSUB", "hoard:invalidate"])
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if clients > n && subscribers >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} tiers never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (at most 5 s) until `proxy` no longer has `url`, even stale: the invalidation that a
/// purge elsewhere published has reached it.
pub(super) async fn dropped(proxy: SocketAddr, url: &str) {
    let only = [("Cache-Control", "only-if-cached, max-stale=3600")];
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(proxy, "GET", url, &only).await.status != 504 {
        assert!(
            Instant::now() < deadline,
            "{url} still served after the purge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An origin that counts requests per path and answers after `delay`.
pub(super) async fn counting_origin(delay: Duration) -> (Origin, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let origin = Origin::start_delayed(delay, move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        reply(
            200,
            &[("cache-control", "max-age=600"), ("etag", "\"e\"")],
            format!("page {}", req.uri().path()),
        )
    })
    .await;
    (origin, n)
}

#[tokio::test]
async fn two_hoards_on_one_redis_fetch_a_cold_url_once_and_share_hits() {
    if !have_redis("two_hoards_on_one_redis_fetch_a_cold_url_once_and_share_hits") {
        return;
    }
    let redis = Redis::start(&[]);
    let (origin, _) = counting_origin(Duration::from_millis(500)).await;
    let (_ha, a, _da) = hoard_on(&redis.url()).await;
    let (_hb, b, _db) = hoard_on(&redis.url()).await;
    connected(&redis, 2).await;
    let url = origin.url("/cold");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (url, proxy) = (url.clone(), if i % 2 == 0 { a } else { b });
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "page /cold"));
    }
    assert_eq!(
        origin.count("GET", "/cold"),
        1,
        "the origin was asked more than once"
    );

    // Fetched through A only: a hit through B without the origin.
    let only_a = origin.url("/through-a");
    assert_eq!(get(a, &only_a).await.status, 200);
    let via_b = get(b, &only_a).await;
    via_b.cache_status().assert_hit();
    assert!(
        via_b.cache_status().raw.contains("shared"),
        "{:?}",
        via_b.cache_status().raw
    );
    assert_eq!(via_b.text(), "page /through-a");
    assert_eq!(origin.count("GET", "/through-a"), 1);
}

#[tokio::test]
async fn a_purge_through_one_hoard_sends_the_next_request_on_another_to_the_origin() {
    if !have_redis("a_purge_through_one_hoard_sends_the_next_request_on_another_to_the_origin") {
        return;
    }
    let redis = Redis::start(&[]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, _da) = hoard_on(&redis.url()).await;
    let (_hb, b, _db) = hoard_on(&redis.url()).await;
    connected(&redis, 2).await;
    let url = origin.url("/purged");
    get(a, &url).await;
    get(b, &url).await.cache_status().assert_hit(); // now in B's own store too
    assert_eq!(origin.count("GET", "/purged"), 1);
    let purge = send(a, "PURGE", &url, &[]).await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    // B drops its own copy when the invalidation arrives (pub/sub).
    dropped(b, &url).await;
    let next = get(b, &url).await;
    next.cache_status().assert_not_hit();
    assert_eq!(origin.count("GET", "/purged"), 2);
}

#[tokio::test]
async fn a_fleet_of_four_hoards_crawling_one_site_asks_the_origin_once_per_page() {
    if !have_redis("a_fleet_of_four_hoards_crawling_one_site_asks_the_origin_once_per_page") {
        return;
    }
    let redis = Redis::start(&[]);
    let (origin, total) = counting_origin(Duration::from_millis(20)).await;
    let mut fleet = Vec::new();
    for _ in 0..4 {
        fleet.push(hoard_on(&redis.url()).await);
    }
    connected(&redis, 4).await;
    let pages = 300;
    let crawlers: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(i, (_, proxy, _))| {
            let (proxy, base) = (*proxy, origin.url(""));
            tokio::spawn(async move {
                // Each crawler walks the site in its own order, 8 requests at a time.
                let mut order: Vec<usize> = (0..pages).collect();
                fastrand::Rng::with_seed(i as u64).shuffle(&mut order);
                for chunk in order.chunks(8) {
                    let gets: Vec<_> = chunk
                        .iter()
                        .map(|p| {
                            let url = format!("{base}/p{p}");
                            tokio::spawn(async move { get(proxy, &url).await.status })
                        })
                        .collect();
                    for g in gets {
                        assert_eq!(g.await.unwrap(), 200);
                    }
                }
            })
        })
        .collect();
    for c in crawlers {
        c.await.unwrap();
    }
    for p in 0..pages {
        assert_eq!(
            origin.count("GET", &format!("/p{p}")),
            1,
            "page {p} fetched twice"
        );
    }
    assert_eq!(total.load(Ordering::SeqCst), pages);
}

#[tokio::test]
async fn redis_killed_and_restarted_under_load_fails_no_request_and_sharing_resumes() {
    if !have_redis("redis_killed_and_restarted_under_load_fails_no_request_and_sharing_resumes") {
        return;
    }
    let mut redis = Redis::start(&[]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, _da) = hoard_on(&redis.url()).await;
    let (_hb, b, _db) = hoard_on(&redis.url()).await;
    connected(&redis, 2).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (failures, done, base) = (failures.clone(), done.clone(), origin.url(""));
            let proxy = if i % 2 == 0 { a } else { b };
            tokio::spawn(async move {
                let mut n = 0u64;
                // Bounded: at most 20 s, stopped by `done` long before.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let url = format!("{base}/load{}", n % 50);
                    let r = get(proxy, &url).await;
                    if r.status != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::SeqCst);
    let mut served = 0;
    for l in load {
        served += l.await.unwrap();
    }
    assert!(served > 100, "the load barely ran: {served} requests");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed while Redis was down"
    );
    // Sharing resumes: a URL fetched through A becomes a hit through B within 2 s of Redis
    // coming back (plus scheduling slack on a loaded machine).
    let deadline = back + Duration::from_secs(6);
    let mut i = 0;
    loop {
        let url = origin.url(&format!("/after{i}"));
        get(a, &url).await;
        if get(b, &url).await.cache_status().hit {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sharing did not resume after the restart"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hoard_purge_with_a_shared_tier_reaches_every_machine() {
    if !have_redis("hoard_purge_with_a_shared_tier_reaches_every_machine") {
        return;
    }
    let redis = Redis::start(&[]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, da) = hoard_on(&redis.url()).await;
    let (_hb, b, _db) = hoard_on(&redis.url()).await;
    connected(&redis, 2).await;
    let url = origin.url("/cli-purged");
    get(a, &url).await;
    get(b, &url).await.cache_status().assert_hit();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
        .args(["purge", &url, "--cache-dir"])
        .arg(da.path())
        .env("HOARD_SHARED", redis.url())
        .output()
        .await
        .expect("hoard purge runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hoard purge failed: {stderr}");
    assert!(stderr.contains("shared tier too"), "{stderr}");
    dropped(b, &url).await;
    get(b, &url).await.cache_status().assert_not_hit();
    assert_eq!(origin.count("GET", "/cli-purged"), 2);
}

/// Wait until a URL fetched through `a` is a shared hit through `b` (both tiers connected).
pub(super) async fn sharing(a: SocketAddr, b: SocketAddr, origin: &Origin) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        let url = origin.url(&format!("/ready{i}"));
        get(a, &url).await;
        if get(b, &url).await.cache_status().raw.contains("shared") {
            return;
        }
        assert!(Instant::now() < deadline, "the tiers never shared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hoards_on_a_redis_cluster_fetch_once_share_and_purge() {
    if !have_redis("two_hoards_on_a_redis_cluster_fetch_once_share_and_purge") {
        return;
    }
    let nodes = super::cluster::cluster();
    let url = format!(
        "redis+cluster://{}",
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (origin, _) = counting_origin(Duration::from_millis(300)).await;
    let (_ha, a, _da) = hoard_on(&url).await;
    let (_hb, b, _db) = hoard_on(&url).await;
    sharing(a, b, &origin).await;
    // A cold URL, 60 concurrent clients across both: one origin fetch.
    let cold = origin.url("/cluster-cold");
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (u, p) = (cold.clone(), if i % 2 == 0 { a } else { b });
            tokio::spawn(async move { get(p, &u).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(origin.count("GET", "/cluster-cold"), 1);
    // Many URLs through A are hits through B, and their keys are on every master.
    for i in 0..60 {
        let u = origin.url(&format!("/spread{i}"));
        get(a, &u).await;
        get(b, &u).await.cache_status().assert_hit();
        assert_eq!(origin.count("GET", &format!("/spread{i}")), 1);
    }
    for n in &nodes {
        let keys: u64 = n.cli(&["DBSIZE"]).parse().unwrap_or(0);
        assert!(keys > 0, "no keys on the master at port {}", n.port);
    }
    // A purge through A sends B's next request to the origin.
    let u = origin.url("/spread0");
    assert_eq!(send(a, "PURGE", &u, &[]).await.status, 200);
    dropped(b, &u).await;
    get(b, &u).await.cache_status().assert_not_hit();
    assert_eq!(origin.count("GET", "/spread0"), 2);
}
