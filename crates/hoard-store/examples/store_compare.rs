//! Store workload for `benches/compare_diskcache.sh`: prints `op microseconds_per_op` lines.
//! The same workload runs against Python diskcache in `benches/compare_diskcache.py`.
//!
//! Usage: `store_compare DIR [KEYS]` (default 10,000 keys of 1 KiB). Prints
//! `op wall_us cpu_us` per operation. For `perf record`: `STORE_COMPARE_PROFILE_GETS=1`,
//! `..._SETS=1` or `..._DELETES=1` run only that operation in a long loop;
//! `STORE_COMPARE_MMAP=bytes` overrides `sqlite_mmap_size`, `STORE_COMPARE_MEMORY=bytes` the
//! memory layer's budget (0: off); `STORE_COMPARE_SETTLE=secs` waits that long after loading
//! (background checkpoint) and then sync(2)s before measuring.

use std::time::Instant;

use hoard::store::{Cache, EvictionPolicy};

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn populate(cache: &Cache, n: usize, value: &[u8]) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        cache
            .transact(|tx| {
                for &i in chunk {
                    tx.set(&key(i), value, None, None)?;
                }
                Ok(())
            })
            .unwrap();
    }
}

/// CPU time (user + system) of this process in seconds, from `/proc/self/stat`
/// (clock ticks of 10 ms; 0 where unavailable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5), counted after the ")" that ends field 2.
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints `op wall_us_per_op cpu_us_per_op`. CPU time (all threads) is what the
/// operation costs; wall time also counts waiting for a CPU on a busy machine.
fn time(label: &str, ops: usize, mut f: impl FnMut(usize)) {
    let cpu = cpu_seconds();
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / ops as f64;
    let cpu_us = (cpu_seconds() - cpu) * 1e6 / ops as f64;
    println!("{label} {us:.3} {cpu_us:.3}");
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number of bytes"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: store_compare DIR [KEYS]"));
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(10_000);
    let value = vec![7u8; 1024];
    let mut rng = fastrand::Rng::with_seed(1);
    let reads: Vec<Vec<u8>> = (0..100_000).map(|_| key(rng.usize(0..n))).collect();
    let misses: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("miss-{i}").into_bytes())
        .collect();

    let mut b = Cache::builder(dir.join("lrs")).size_limit(1 << 40);
    if let Some(v) = env_u64("STORE_COMPARE_MMAP") {
        b = b.sqlite_mmap_size(v);
    }
    if let Some(v) = env_u64("STORE_COMPARE_MEMORY") {
        b = b.memory_cache_size(v);
    }
    let cache = b.open().unwrap();
    populate(&cache, n, &value);
    if let Some(secs) = env_u64("STORE_COMPARE_SETTLE") {
        // Steady state: the load's WAL checkpointed and the kernel's writeback done, so the
        // reads below measure lookups, not a disk still busy with the load.
        std::thread::sleep(std::time::Duration::from_secs(secs));
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
    }
    if std::env::var_os("STORE_COMPARE_PROFILE_GETS").is_some() {
        // For `perf record`: a long run of hits only.
        time("get_hit_profile", 2_000_000, |i| {
            assert!(cache.get(&reads[i % reads.len()]).unwrap().is_some());
        });
        return;
    }
    if std::env::var_os("STORE_COMPARE_PROFILE_DELETES").is_some() {
        time("delete_profile", n, |i| {
            cache.delete(&key(i)).unwrap();
        });
        return;
    }
    if std::env::var_os("STORE_COMPARE_PROFILE_SETS").is_some() {
        time("set_profile", 50_000, |i| {
            cache
                .set(&reads[i % reads.len()], &value, None, None)
                .unwrap()
        });
        return;
    }
    let suffix = if n == 10_000 {
        String::new()
    } else {
        format!("_{n}")
    };
    time(&format!("get_hit{suffix}"), reads.len(), |i| {
        assert!(cache.get(&reads[i]).unwrap().is_some());
    });
    time(&format!("get_miss{suffix}"), misses.len(), |i| {
        assert!(cache.get(&misses[i]).unwrap().is_none());
    });
    if n != 10_000 {
        return;
    }
    time("set", 10_000, |i| {
        cache.set(&reads[i], &value, None, None).unwrap()
    });
    time("delete", 10_000, |i| {
        cache.delete(&key(i)).unwrap();
    });

    let lru = Cache::builder(dir.join("lru"))
        .size_limit(1 << 40)
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .open()
        .unwrap();
    populate(&lru, n, &value);
    time("lru_get", reads.len(), |i| {
        assert!(lru.get(&reads[i]).unwrap().is_some());
    });
}
