//! A 3-master Redis Cluster: rows spread over every master, purge, leases and invalidations;
//! a dead master stops only the slot ranges it served.

use std::time::{Duration, Instant};

use hoard::entries::shared::SharedLease;
use hoard::entries::shared::codec::UrlKeys;

use super::{Redis, eventually, have_redis, tier, tier_with};

/// Three `--cluster-enabled` servers joined with `redis-cli --cluster create`.
pub(super) fn cluster() -> Vec<Redis> {
    cluster_of(Redis::start)
}

/// Like [`cluster`], each node started by `start` with the cluster arguments (e.g. over TLS).
pub(super) fn cluster_of(start: impl Fn(&[&str]) -> Redis) -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..3)
        .map(|_| {
            // Relative to the server's own `--dir` (a temp dir per server).
            start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    nodes[0].cli(&args);
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(
                Instant::now() < deadline,
                "cluster on {} never became ok",
                n.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_rows_and_supports_purge_leases_and_invalidations() {
    if !have_redis("cluster_spreads_rows_and_supports_purge_leases_and_invalidations") {
        return;
    }
    let mut nodes = cluster();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    // B lists the nodes the other way round, so A and B subscribe through different nodes.
    let url_a = format!("redis+cluster://{}", hosts.join(","));
    let rev: Vec<String> = hosts.iter().rev().cloned().collect();
    let url_b = format!("redis+cluster://{}", rev.join(","));
    let (a, b) = (tier(&url_a, "c:").await, tier(&url_b, "c:").await);
    let ttl = Duration::from_secs(60);

    let urls: Vec<String> = (0..100).map(|i| format!("GET http://c.test/{i}")).collect();
    for u in &urls {
        assert!(
            a.put(u, u.as_bytes(), b"m", u.as_bytes(), ttl).await,
            "{u}: {:?}",
            a.status()
        );
    }
    for u in &urls {
        let e = b
            .get(u, u.as_bytes())
            .await
            .unwrap_or_else(|| panic!("{u}: {:?}", b.status()));
        assert_eq!(e.body, u.as_bytes());
    }
    for n in &nodes {
        let size: u64 = n.cli(&["DBSIZE"]).parse().unwrap();
        assert!(size > 0, "master {} holds some of the rows", n.port);
    }

    // Purge through A: rows gone everywhere, B hears of it through its own node.
    let mut b_inv = b.invalidations();
    let u = &urls[7];
    assert!(a.put(u, b"variant", b"m", b"v", ttl).await);
    assert!(a.purge(u).await);
    let got = tokio::time::timeout(Duration::from_secs(2), b_inv.recv())
        .await
        .expect("B hears of the purge")
        .unwrap();
    assert_eq!(&got, u);
    assert_eq!(b.get(u, u.as_bytes()).await, None);
    assert_eq!(b.get(u, b"variant").await, None);
    assert!(b.get(&urls[8], urls[8].as_bytes()).await.is_some());

    // Leases: exclusive, released by the holder, waiters woken across nodes.
    let SharedLease::Acquired(guard) = a.lease(u, ttl).await else {
        panic!("A takes the lease: {:?}", a.status());
    };
    assert!(matches!(b.lease(u, ttl).await, SharedLease::HeldElsewhere));
    let waiter = {
        let b = b.clone();
        let u = u.clone();
        tokio::spawn(async move { b.wait_filled(&u, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let finished = Instant::now();
    assert!(guard.finish().await);
    assert!(waiter.await.unwrap());
    assert!(
        finished.elapsed() < Duration::from_millis(400),
        "{:?}",
        finished.elapsed()
    );
    assert!(matches!(b.lease(u, ttl).await, SharedLease::Acquired(_)));
    assert!(
        eventually(Duration::from_secs(1), || a.status().errors == 0).await,
        "no errors on A: {:?}",
        a.status()
    );
    assert_eq!(b.status().errors, 0, "{:?}", b.status());

    // A master dies: its slots fail, then the cluster reports CLUSTERDOWN everywhere. Every
    // call stays bounded and the breaker opens.
    nodes[2].kill();
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while a.status().breaker != hoard::entries::shared::BreakerState::Open {
        assert!(
            Instant::now() < deadline,
            "breaker still closed: {:?}",
            a.status()
        );
        let u = &urls[i % urls.len()];
        i += 1;
        let t0 = Instant::now();
        let _ = a.get(u, u.as_bytes()).await;
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "bounded: {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "breaker open {:?} after the kill, {i} calls",
        killed.elapsed()
    );
}

/// The slots (`first..=last`) that the master on `port` serves, from `CLUSTER NODES` on `ask`.
fn slots_of(ask: &Redis, port: u16) -> (u16, u16) {
    let nodes = ask.cli(&["CLUSTER", "NODES"]);
    let line = nodes
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}@")))
        .unwrap_or_else(|| panic!("{port} not in {nodes}"));
    let range = line.split_whitespace().nth(8).expect("one slot range");
    let (a, b) = range.split_once('-').expect("first-last");
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_stops_only_its_slot_ranges() {
    if !have_redis("a_dead_master_stops_only_its_slot_ranges") {
        return;
    }
    // Without full coverage, the live masters keep serving their slots.
    let mut nodes = cluster_of(|extra| {
        let mut args = extra.to_vec();
        args.extend(["--cluster-require-full-coverage", "no"]);
        Redis::start(&args)
    });
    let hosts: Vec<String> = nodes[..2]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    let t = tier_with(&url, "r:", |c| c.timeout = Duration::from_millis(300)).await;
    let ttl = Duration::from_secs(60);
    let (first, last) = slots_of(&nodes[0], nodes[2].port);
    let per = hoard::entries::shared::ranges::SLOTS_PER_RANGE;
    // A URL is "live" when no slot of its breaker's range belongs to the victim.
    let live = |u: &str| {
        let range = UrlKeys::new("r:", u).slot() / per;
        range < first / per || range > last / per
    };
    let urls: Vec<String> = (0..120).map(|i| format!("GET http://r.test/{i}")).collect();
    for u in &urls {
        assert!(t.put(u, u.as_bytes(), b"m", b"body", ttl).await, "{u}");
    }
    let (on_live, on_victim): (Vec<&String>, Vec<&String>) = urls.iter().partition(|u| live(u));
    assert!(
        !on_live.is_empty() && on_victim.len() > 10,
        "URLs on both sides"
    );

    nodes[2].kill();
    // Calls on the victim's keys fail (bounded) until their ranges' breakers open.
    let deadline = Instant::now() + Duration::from_secs(20);
    for u in on_victim.iter().cycle() {
        if t.status().breaker_open_ranges > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no range opened: {:?}",
            t.status()
        );
        let t0 = Instant::now();
        let _ = t.get(u, u.as_bytes()).await;
        assert!(t0.elapsed() < Duration::from_secs(2), "bounded");
    }
    // Every row on the live masters is still read, and new ones written.
    for u in &on_live {
        let got = t.get(u, u.as_bytes()).await;
        assert_eq!(
            got.map(|e| e.body),
            Some(bytes::Bytes::from_static(b"body")),
            "{u}: {:?}",
            t.status()
        );
        assert!(t.put(u, b"again", b"m", b"b2", ttl).await, "{u}");
    }
    let s = t.status();
    assert!(
        s.breaker_open_ranges >= 1 && s.breaker_open_ranges < s.breaker_ranges,
        "only the victim's ranges: {s:?}"
    );
    assert_eq!(s.breaker_ranges, 64);
}
