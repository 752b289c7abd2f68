//! Failure is never an outage: a dead, frozen or full Redis gives misses within the timeout,
//! opens the breaker, and sharing resumes by itself.

use std::time::{Duration, Instant};

use hoard::entries::shared::config::DEFAULT_TIMEOUT;
use hoard::entries::shared::{BreakerState, SharedLease, SharedTier};

use super::{Redis, eventually, have_redis, tier_with};

const U: &str = "GET http://fail.test/";
const TTL: Duration = Duration::from_secs(60);
/// Timeout (50 ms) plus scheduling slack on a loaded 2-core machine.
const BOUND: Duration = Duration::from_millis(250);

async fn round_trip(t: &SharedTier, n: usize) -> bool {
    let body = format!("body {n}");
    t.put(U, U.as_bytes(), b"m", body.as_bytes(), TTL).await
        && t.get(U, U.as_bytes())
            .await
            .is_some_and(|e| e.body == body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_gives_misses_opens_the_breaker_and_restart_resumes_sharing() {
    if !have_redis("killed_redis_gives_misses_opens_the_breaker_and_restart_resumes_sharing") {
        return;
    }
    let mut r = Redis::start(&[]);
    // The default 50 ms bound: this test is about it.
    let t = tier_with(&r.url(), "f1:", |c| c.timeout = DEFAULT_TIMEOUT).await;
    assert!(round_trip(&t, 0).await);

    r.kill();
    let mut i = 0;
    while t.status().breaker != BreakerState::Open {
        i += 1;
        assert!(i <= 50, "breaker still closed: {:?}", t.status());
        let t0 = Instant::now();
        assert_eq!(t.get(U, U.as_bytes()).await, None);
        assert!(!t.put(U, U.as_bytes(), b"m", b"b", TTL).await);
        assert!(t0.elapsed() < BOUND * 2, "bounded: {:?}", t0.elapsed());
    }
    // Open: calls return at once without touching Redis.
    let t0 = Instant::now();
    assert_eq!(t.get(U, U.as_bytes()).await, None);
    assert!(matches!(t.lease(U, TTL).await, SharedLease::Unavailable));
    assert!(!t.wait_filled(U, Duration::from_secs(5)).await);
    assert!(!t.purge(U).await);
    assert!(
        t0.elapsed() < BOUND,
        "open breaker answers at once: {:?}",
        t0.elapsed()
    );
    let s = t.status();
    assert!(
        !s.connected && s.breaker_opened >= 1 && s.skipped > 0,
        "{s:?}"
    );

    r.restart();
    let restarted = Instant::now();
    let mut n = 0;
    let resumed = loop {
        n += 1;
        if round_trip(&t, n).await {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "{:?}",
            t.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        resumed < Duration::from_secs(2),
        "sharing resumed after {resumed:?}"
    );
    assert_eq!(t.status().breaker, BreakerState::Closed);
    assert!(
        eventually(Duration::from_secs(3), || t.status().subscribed).await,
        "the subscription comes back too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_times_out_within_the_bound() {
    if !have_redis("frozen_redis_times_out_within_the_bound") {
        return;
    }
    let r = Redis::start(&[]);
    // The default 50 ms bound: this test is about it.
    let t = tier_with(&r.url(), "f2:", |c| c.timeout = DEFAULT_TIMEOUT).await;
    assert!(round_trip(&t, 0).await);
    let pid = r.pid() as libc::pid_t;
    // SIGSTOP: the connection stays open but nothing answers (a hung server / lost route).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut worst = Duration::ZERO;
    for _ in 0..8 {
        let t0 = Instant::now();
        assert_eq!(t.get(U, U.as_bytes()).await, None);
        worst = worst.max(t0.elapsed());
    }
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(
        worst < BOUND,
        "each call bounded by the 50 ms timeout: worst {worst:?}"
    );
    let s = t.status();
    assert!(s.timeouts >= 1 && s.breaker == BreakerState::Open, "{s:?}");
    // Thawed: the next probe (within a second) closes the breaker again.
    let ok = async {
        for n in 1..=150 {
            if round_trip(&t, n).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(ok.await, "{:?}", t.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_stops_writes_but_reads_continue() {
    if !have_redis("a_full_redis_stops_writes_but_reads_continue") {
        return;
    }
    let r = Redis::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let t = tier_with(&r.url(), "f3:", |c| c.max_object_size = 1 << 20).await;
    assert!(t.put(U, U.as_bytes(), b"m", b"small", TTL).await);
    let big = vec![1u8; 512 * 1024];
    let mut refused = 0;
    for i in 0..40 {
        let url = format!("GET http://fill/{i}");
        if !t.put(&url, url.as_bytes(), b"m", &big, TTL).await {
            refused += 1;
        }
        if t.status().write_breaker == BreakerState::Open {
            break;
        }
    }
    let s = t.status();
    assert!(refused >= 5, "{s:?}");
    assert_eq!(s.write_breaker, BreakerState::Open, "{s:?}");
    assert_eq!(
        s.breaker,
        BreakerState::Closed,
        "OOM does not stop reads: {s:?}"
    );
    assert_eq!(t.get(U, U.as_bytes()).await.unwrap().body, &b"small"[..]);
    assert!(
        matches!(t.lease(U, TTL).await, SharedLease::Unavailable),
        "writes skipped"
    );
    assert!(t.purge(U).await, "deletes still work at maxmemory");
}
