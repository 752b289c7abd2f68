//! Start-up: a hoard connects to its shared tier before it accepts, so the very first fills
//! after start reach Redis (standalone and cluster, no warm-up); a Redis that refuses or never
//! answers does not stop it from serving at once from the origin.

use std::time::{Duration, Instant};

use super::proxies::{counting_origin, hoard_on};
use super::{Redis, eventually, free_port, have_redis};
use crate::proxy::harness::*;

/// URLs fetched right after start.
const N: u64 = 40;

/// Fetch `/first{i}` for i < N through `proxy`, each 200 from the origin.
async fn fill_at_once(proxy: std::net::SocketAddr, origin: &Origin) {
    for i in 0..N {
        let r = get(proxy, &origin.url(&format!("/first{i}"))).await;
        assert_eq!(r.status, 200, "/first{i}");
        r.cache_status().assert_not_hit();
    }
}

/// Rows (one per URL here) stored on `node`.
fn rows(node: &Redis) -> u64 {
    node.cli(&["--scan", "--pattern", "hoard:{*}:r:*"])
        .lines()
        .count() as u64
}

/// Wait (bounded) until `total()` reaches N (a response reaches its client before its fill
/// is shared), then check it is exactly that.
async fn assert_every_fill_shared(total: impl Fn() -> u64) {
    eventually(Duration::from_secs(10), || total() >= N).await;
    assert_eq!(total(), N, "one row per URL fetched: every fill shared");
}

#[tokio::test]
async fn the_first_fills_after_start_reach_a_standalone_redis() {
    if !have_redis("the_first_fills_after_start_reach_a_standalone_redis") {
        return;
    }
    let redis = Redis::start(&[]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_h, proxy, _d) = hoard_on(&redis.url()).await;
    fill_at_once(proxy, &origin).await;
    assert_every_fill_shared(|| rows(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_fills_after_start_reach_every_master_of_a_cluster() {
    if !have_redis("the_first_fills_after_start_reach_every_master_of_a_cluster") {
        return;
    }
    let nodes = super::cluster::cluster();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    // One seed only: the rest of the cluster is discovered during the start-up connection.
    let url = format!("redis+cluster://{}", hosts[0]);
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_h, proxy, _d) = hoard_on(&url).await;
    fill_at_once(proxy, &origin).await;
    assert_every_fill_shared(|| nodes.iter().map(rows).sum()).await;
    for n in &nodes {
        assert!(rows(n) > 0, "no rows on the master at port {}", n.port);
    }
}

/// Start a hoard on `url`, and check it answers its first request from the origin. The bound
/// on start-up is generous (start-up waits at most 2 s for Redis by design; this only
/// catches a start-up that waits for Redis without bound).
async fn serves_from_the_origin_at_once(url: &str, path: &str) {
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let started = Instant::now();
    let (_h, proxy, _d) = hoard_on(url).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "start-up took {took:?}");
    for _ in 0..2 {
        let r = get(proxy, &origin.url(path)).await;
        assert_eq!((r.status, r.text()), (200, format!("page {path}")));
    }
    // The second was a local hit: the local tier works without Redis.
    assert_eq!(origin.count("GET", path), 1);
}

#[tokio::test]
async fn a_hoard_started_with_redis_refusing_serves_from_the_origin_at_once() {
    if !have_redis("a_hoard_started_with_redis_refusing_serves_from_the_origin_at_once") {
        return;
    }
    // Nothing listens there: every connection is refused.
    let url = format!("redis://127.0.0.1:{}", free_port());
    serves_from_the_origin_at_once(&url, "/refused").await;
    let cluster = format!("redis+cluster://127.0.0.1:{}", free_port());
    serves_from_the_origin_at_once(&cluster, "/refused-cluster").await;
}

#[tokio::test]
async fn a_hoard_started_with_redis_frozen_serves_from_the_origin() {
    if !have_redis("a_hoard_started_with_redis_frozen_serves_from_the_origin") {
        return;
    }
    let redis = Redis::start(&[]);
    let pid = redis.pid() as libc::pid_t;
    // SIGSTOP: connections are accepted by the kernel but nothing ever answers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    serves_from_the_origin_at_once(&redis.url(), "/frozen").await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}
