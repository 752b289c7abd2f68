//! Store workload for `benches/compare_diskcache.sh`: prints `op microseconds_per_op` lines.
//! The same workload runs against Python diskcache in `benches/compare_diskcache.py`.
//!
//! Usage: `store_compare DIR [KEYS]` (default 10,000 keys of 1 KiB). Prints
//! `op wall_us cpu_us thread_cpu_us` per operation (the last: the timing thread's own CPU): the cache operations, then (at 10,000 keys) Deque
//! append+popleft, Index set/get, memoize hits, Lock acquire+release, FanoutCache(8)
//! set/get from 4 processes at once (aggregate: wall time of the slowest worker divided
//! by all operations; CPU of all workers), and 1 MiB values (value files) set/get. For `perf record`: `STORE_COMPARE_PROFILE_GETS=1`,
//! `..._SETS=1` or `..._DELETES=1` run only that operation in a long loop;
//! `STORE_COMPARE_MMAP=bytes` overrides `sqlite_mmap_size`, `STORE_COMPARE_MEMORY=bytes` the
//! memory layer's budget (0: off); `STORE_COMPARE_SETTLE=secs` waits that long after loading
//! (background checkpoint) and then sync(2)s before measuring; `STORE_COMPARE_RESTART_EVERY=N`
//! restarts the WAL every N operations of a profile run (for callgrind, see below); `STORE_COMPARE_CACHE_ONLY=1`
//! skips the structures, FanoutCache and 1 MiB workloads.

use std::time::Instant;

use std::time::Duration;

use hoard_store::{Cache, Deque, EvictionPolicy, FanoutCache, Index, Lock};

/// Processes and operations of the FanoutCache workload.
const FANOUT_PROCS: usize = 4;
const FANOUT_SETS: usize = 5_000;
const FANOUT_GETS: usize = 25_000;

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

/// CPU time of the calling thread in seconds (nanosecond clock).
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; the clock id exists on every supported platform.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Prints `op wall_us_per_op cpu_us_per_op thread_cpu_us_per_op`. CPU time (all threads)
/// is what the operation costs; wall time also counts waiting for a CPU on a busy
/// machine; the calling thread's own CPU time (a nanosecond clock, without the background
/// checkpointer) moves least with the load of other processes.
fn time(label: &str, ops: usize, f: impl FnMut(usize)) {
    let thread = thread_cpu_seconds();
    let (wall, cpu) = measure(ops, f);
    let thread = thread_cpu_seconds() - thread;
    let per_op = |s: f64| s * 1e6 / ops as f64;
    println!(
        "{label} {:.3} {:.3} {:.3}",
        per_op(wall),
        per_op(cpu),
        per_op(thread)
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number of bytes"))
}

/// Times `ops` calls of `f`: (wall seconds, CPU seconds).
fn measure(ops: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let cpu = cpu_seconds();
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// One FanoutCache worker: sets its own keys, then reads them; prints
/// `set wall cpu` and `get wall cpu` (seconds).
fn fanout_worker(dir: &std::path::Path, id: usize) {
    let fc = FanoutCache::open(dir, 8).unwrap();
    let value = vec![7u8; 1024];
    let key = |i: usize| format!("w{id}-{:06}", i % FANOUT_SETS).into_bytes();
    // diskcache's default timeout (10 ms): a busy shard makes a set return false
    // (fail-soft; counted on stderr) and a get a miss, as in diskcache.
    let mut failed = 0;
    let (w, c) = measure(FANOUT_SETS, |i| {
        failed += usize::from(!fc.set(&key(i), &value, None, None).unwrap());
    });
    println!("set {w} {c}");
    if failed > 0 {
        eprintln!("worker {id}: {failed} sets timed out (fail-soft)");
    }
    let mut rng = fastrand::Rng::with_seed(id as u64);
    let (w, c) = measure(FANOUT_GETS, |_| {
        let _ = fc.get(&key(rng.usize(0..FANOUT_SETS))).unwrap();
    });
    println!("get {w} {c}");
}

/// FanoutCache(8) under 4 processes at once: per operation, the slowest worker's wall time
/// over all workers' operations, and all workers' CPU time over all operations.
fn fanout(dir: &std::path::Path) {
    FanoutCache::open(dir, 8).unwrap(); // created before the workers race
    let exe = std::env::current_exe().unwrap();
    let workers: Vec<_> = (0..FANOUT_PROCS)
        .map(|id| {
            std::process::Command::new(&exe)
                .arg("--fanout-worker")
                .arg(dir)
                .arg(id.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut sums = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (wall, cpu): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let e = sums.entry(f[0].to_string()).or_default();
            *e = (e.0.max(wall), e.1 + cpu);
        }
    }
    for (op, ops) in [("set", FANOUT_SETS), ("get", FANOUT_GETS)] {
        let (wall, cpu) = sums[op];
        let n = (ops * FANOUT_PROCS) as f64;
        println!("fanout8_{op}_4p {:.3} {:.3}", wall * 1e6 / n, cpu * 1e6 / n);
    }
}

/// Deque, Index, memoize, Lock and 1 MiB values.
fn structures(dir: &std::path::Path, value: &[u8]) {
    let deque = Deque::open(dir.join("deque")).unwrap();
    time("deque_push_pop", 10_000, |i| {
        deque.append(&value[..64 + i % 64]).unwrap();
        assert!(deque.popleft().unwrap().is_some());
    });
    let index = Index::open(dir.join("index")).unwrap();
    time("index_set", 10_000, |i| index.set(&key(i), value).unwrap());
    let mut rng = fastrand::Rng::with_seed(2);
    time("index_get", 100_000, |_| {
        assert!(index.get(&key(rng.usize(0..10_000))).unwrap().is_some());
    });
    let memo = Cache::open(dir.join("memo")).unwrap();
    for i in 0..1000 {
        memo.memoize(&key(i), None, None, || Ok(value.to_vec()))
            .unwrap();
    }
    time("memoize_hit", 100_000, |i| {
        let v = memo
            .memoize(&key(i % 1000), None, None, || unreachable!("a hit"))
            .unwrap();
        assert_eq!(v.len(), value.len());
    });
    let lock = Lock::new(&memo, b"lock", Duration::from_secs(60));
    time("lock_acquire_release", 10_000, |_| {
        lock.acquire(Duration::from_secs(10)).unwrap();
        lock.release().unwrap();
    });
    let files = Cache::builder(dir.join("files"))
        .size_limit(1 << 40)
        .open()
        .unwrap();
    let big = vec![9u8; 1 << 20];
    time("file_set_1mib", 200, |i| {
        files.set(&key(i % 50), &big, None, None).unwrap()
    });
    time("file_get_1mib", 500, |i| {
        assert_eq!(files.get(&key(i % 50)).unwrap().unwrap().len(), 1 << 20);
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--fanout-worker") {
        let dir = std::env::args().nth(2).unwrap();
        let id = std::env::args().nth(3).unwrap().parse().unwrap();
        return fanout_worker(std::path::Path::new(&dir), id);
    }
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
    // For callgrind: the WAL's length (how far SQLite's hash chains reach) depends on when
    // the background checkpointer catches up, which valgrind's one-thread-at-a-time
    // scheduling changes. `STORE_COMPARE_RESTART_EVERY=N` restarts the WAL every N
    // operations (outside the operation), so each run sees the same short WAL.
    let restart_every = env_u64("STORE_COMPARE_RESTART_EVERY").unwrap_or(0) as usize;
    let restarter = (restart_every > 0)
        .then(|| rusqlite::Connection::open(dir.join("lrs").join("cache.db")).unwrap());
    let restart = |i: usize| {
        if let Some(c) = restarter
            .as_ref()
            .filter(|_| i.is_multiple_of(restart_every))
        {
            // Busy while the background thread checkpoints: asked again (bounded).
            for _ in 0..1000 {
                let busy: i64 = c
                    .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                    .unwrap();
                if busy == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    if std::env::var_os("STORE_COMPARE_PROFILE_DELETES").is_some() {
        time("delete_profile", n, |i| {
            restart(i);
            cache.delete(&key(i)).unwrap();
        });
        return;
    }
    if std::env::var_os("STORE_COMPARE_PROFILE_SETS").is_some() {
        time("set_profile", 50_000, |i| {
            restart(i);
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
    if std::env::var_os("STORE_COMPARE_CACHE_ONLY").is_none() {
        structures(&dir, &value);
        fanout(&dir.join("fanout"));
    }
}
