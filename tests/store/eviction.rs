//! Size limit and eviction order for each policy.

use hoard::store::{Cache, EvictionPolicy};

use super::{builder, secs};

const VALUE: usize = 1000;

fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// Lowers the limit to just below the volume and culls, one row at a time (cull_limit 1),
/// through a *second* handle (as another process would), collecting the eviction order.
fn eviction_order(dir: &std::path::Path, n: usize) -> Vec<usize> {
    let other = Cache::open(dir).unwrap();
    let mut order = Vec::new();
    for _ in 0..n {
        let v = other.volume().unwrap();
        other.configure(|s| s.size_limit = v - 1).unwrap();
        assert_eq!(
            other.cull().unwrap(),
            1,
            "one 1 KB row brings the volume under"
        );
        let gone: Vec<usize> = (0..n)
            .filter(|i| !order.contains(i) && !other.contains(&key(*i)).unwrap())
            .collect();
        assert_eq!(gone.len(), 1);
        order.push(gone[0]);
    }
    order
}

/// (policy, store order, read pattern, expected eviction order)
type Case = (
    EvictionPolicy,
    &'static [usize],
    &'static [usize],
    &'static [usize],
);

const CASES: &[Case] = &[
    // Stored 3,1,4,0,2; reads do not matter.
    (
        EvictionPolicy::LeastRecentlyStored,
        &[3, 1, 4, 0, 2],
        &[3, 3, 1],
        &[3, 1, 4, 0, 2],
    ),
    // Last read: 2 then 0 then 4 then 1 then 3.
    (
        EvictionPolicy::LeastRecentlyUsed,
        &[0, 1, 2, 3, 4],
        &[3, 2, 0, 4, 1, 3],
        &[2, 0, 4, 1, 3],
    ),
    // Read counts: 0:3, 1:1, 2:0, 3:2, 4:4.
    (
        EvictionPolicy::LeastFrequentlyUsed,
        &[0, 1, 2, 3, 4],
        &[0, 0, 0, 1, 3, 3, 4, 4, 4, 4],
        &[2, 1, 3, 0, 4],
    ),
];

#[test]
fn eviction_order_per_policy_after_flush() {
    for &(policy, stores, reads, want) in CASES {
        let (dir, clock, b) = builder();
        let cache = b.eviction_policy(policy).cull_limit(1).open().unwrap();
        for &i in stores {
            clock.advance(1.0);
            cache.set(&key(i), &[i as u8; VALUE], None, None).unwrap();
        }
        for &i in reads {
            clock.advance(1.0);
            assert!(cache.get(&key(i)).unwrap().is_some());
        }
        cache.flush().unwrap();
        assert_eq!(eviction_order(dir.path(), stores.len()), want, "{policy}");
    }
}

#[test]
fn lru_cull_in_the_same_process_sees_unflushed_reads() {
    let (_dir, clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .cull_limit(1)
        .open()
        .unwrap();
    for i in 0..3 {
        clock.advance(1.0);
        cache.set(&key(i), &[0; VALUE], None, None).unwrap();
    }
    clock.advance(1.0);
    cache.get(&key(0)).unwrap();
    let v = cache.volume().unwrap();
    cache.configure(|s| s.size_limit = v - 1).unwrap();
    assert_eq!(cache.cull().unwrap(), 1);
    assert!(
        cache.contains(&key(0)).unwrap(),
        "recently read key survives"
    );
    assert!(!cache.contains(&key(1)).unwrap());
}

#[test]
fn policy_none_never_evicts_live_rows() {
    let (_dir, clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::None)
        .cull_limit(1)
        .open()
        .unwrap();
    for i in 0..5 {
        let ttl = if i == 2 { secs(1) } else { None };
        cache.set(&key(i), &[0; VALUE], ttl, None).unwrap();
    }
    clock.advance(1.0);
    cache.configure(|s| s.size_limit = 1).unwrap();
    assert_eq!(cache.cull().unwrap(), 1, "only the expired row");
    cache.set(b"new", &[0; VALUE], None, None).unwrap();
    assert_eq!(cache.len().unwrap(), 5);
}

#[test]
fn expired_rows_are_culled_before_live_ones() {
    for policy in [
        EvictionPolicy::LeastRecentlyStored,
        EvictionPolicy::LeastRecentlyUsed,
        EvictionPolicy::LeastFrequentlyUsed,
    ] {
        let (_dir, clock, b) = builder();
        let cache = b.eviction_policy(policy).cull_limit(1).open().unwrap();
        for i in 0..5 {
            clock.advance(1.0);
            // The newest row expires: any policy would keep it if it were live.
            let ttl = if i == 4 { secs(10) } else { None };
            cache.set(&key(i), &[0; VALUE], ttl, None).unwrap();
        }
        clock.advance(10.0);
        let v = cache.volume().unwrap();
        // One ~1 KB row must go: the expired one, whatever the policy.
        cache.configure(|s| s.size_limit = v + 500).unwrap();
        cache.set(b"new", &[0; VALUE], None, None).unwrap();
        assert!(!cache.contains(&key(4)).unwrap(), "{policy}");
        for i in 0..4 {
            assert!(cache.contains(&key(i)).unwrap(), "{policy}: key {i} kept");
        }
    }
}

#[test]
fn size_limit_holds_after_writing_ten_times_the_limit() {
    let limit: u64 = 2 << 20;
    for policy in EvictionPolicy::ALL
        .into_iter()
        .filter(|p| *p != EvictionPolicy::None)
    {
        let (dir, clock, b) = builder();
        let cache = b.eviction_policy(policy).size_limit(limit).open().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut written, mut largest, mut i) = (0u64, 0u64, 0u64);
        while written < 10 * limit {
            // Mixed sizes: mostly small inline values, some files up to 256 KiB.
            let len = if rng.u8(..) < 40 {
                rng.usize(32 << 10..256 << 10)
            } else {
                rng.usize(10..8 << 10)
            };
            let k = format!("key-{i}");
            clock.advance(0.001);
            let ttl = if i % 7 == 0 { secs(1) } else { None };
            cache.set(k.as_bytes(), &vec![1u8; len], ttl, None).unwrap();
            if i % 3 == 0 {
                cache.get(format!("key-{}", i / 2).as_bytes()).unwrap();
            }
            written += len as u64;
            largest = largest.max(len as u64 + k.len() as u64);
            let v = cache.volume().unwrap();
            assert!(
                v <= limit + largest,
                "{policy}: volume {v} after {written} bytes"
            );
            i += 1;
        }
        assert!(cache.check(false).unwrap().is_empty(), "{policy}");
        assert_eq!(
            super::value_files(dir.path()).len() as u64,
            raw_count(dir.path(), "SELECT COUNT(*) FROM cache WHERE mode = 2")
        );
    }
}

fn raw_count(dir: &std::path::Path, sql: &str) -> u64 {
    super::raw(dir)
        .query_row(sql, [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

#[test]
fn cull_limit_zero_disables_culling_on_write() {
    let (_dir, _clock, b) = builder();
    let cache = b.cull_limit(0).size_limit(1).open().unwrap();
    for i in 0..5 {
        cache.set(&key(i), &[0; VALUE], None, None).unwrap();
    }
    assert_eq!(cache.len().unwrap(), 5);
    assert_eq!(cache.cull().unwrap(), 5, "explicit cull still works");
}
