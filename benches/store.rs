//! Criterion benchmarks of `hoard::store` (never timed tests). Short measurement times so
//! the whole run takes a few minutes: `cargo bench --bench store`.
//!
//! get hit, get miss, set, delete and LRU get on 1 KiB values with 10k and 1M keys
//! (populated in batched transactions), and a 1 MiB value read through the file path.
//! Reads cycle over 4,096 keys, so `get_hit` and `lru_get` measure the memory layer;
//! `get_hit_memory_off` reads the same keys through a handle without it (SQLite every time).

use std::hint::black_box;
use std::io::Read;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hoard::store::{Cache, EvictionPolicy};

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// Inserts `n` keys with 1 KiB values, 50,000 per transaction.
fn populate(cache: &Cache, n: usize) {
    let value = vec![7u8; 1024];
    let mut i = 0;
    while i < n {
        let end = (i + 50_000).min(n);
        cache
            .transact(|tx| {
                for j in i..end {
                    tx.set(&key(j), &value, None, None)?;
                }
                Ok(())
            })
            .unwrap();
        i = end;
    }
}

fn open(dir: &std::path::Path, policy: EvictionPolicy) -> Cache {
    Cache::builder(dir)
        .size_limit(1 << 40)
        .eviction_policy(policy)
        .open()
        .unwrap()
}

fn bench_keys(c: &mut Criterion, n: usize, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("lrs"), EvictionPolicy::LeastRecentlyStored);
    populate(&cache, n);
    // A second handle on the same directory without the memory layer: the index path.
    let direct = Cache::builder(dir.path().join("lrs"))
        .memory_cache_size(0)
        .open()
        .unwrap();
    let lru = open(&dir.path().join("lru"), EvictionPolicy::LeastRecentlyUsed);
    populate(&lru, n);
    let mut rng = fastrand::Rng::with_seed(1);
    let keys: Vec<Vec<u8>> = (0..4096).map(|_| key(rng.usize(0..n))).collect();
    let value = vec![9u8; 1024];

    let mut g = c.benchmark_group(format!("store_{label}"));
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    let mut i = 0;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(cache.get(&keys[i]).unwrap().unwrap());
        })
    });
    g.bench_function("get_hit_memory_off", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(direct.get(&keys[i]).unwrap().unwrap());
        })
    });
    let mut m = 0u64;
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            m += 1;
            black_box(cache.get(&m.to_le_bytes()).unwrap());
        })
    });
    g.bench_function("set", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            cache.set(&keys[i], &value, None, None).unwrap();
        })
    });
    let mut d = 0u64;
    g.bench_function("delete", |b| {
        b.iter_batched(
            || {
                d += 1;
                let k = format!("del-{d}").into_bytes();
                cache.set(&k, &value, None, None).unwrap();
                k
            },
            |k| assert!(cache.delete(&k).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("lru_get", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(lru.get(&keys[i]).unwrap().unwrap());
        })
    });
    g.finish();
}

fn bench_10k(c: &mut Criterion) {
    bench_keys(c, 10_000, "10k");
}

fn bench_1m(c: &mut Criterion) {
    bench_keys(c, 1_000_000, "1m");
}

fn bench_file_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), EvictionPolicy::LeastRecentlyStored);
    cache.set(b"big", &vec![3u8; 1 << 20], None, None).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("store_file");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
        .throughput(criterion::Throughput::Bytes(1 << 20));
    g.bench_function("read_1mib_value", |b| {
        b.iter(|| {
            buf.clear();
            let rec = cache.record(b"big").unwrap().unwrap();
            rec.into_reader().read_to_end(&mut buf).unwrap();
            assert_eq!(buf.len(), 1 << 20);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_10k, bench_file_read, bench_1m);
criterion_main!(benches);
