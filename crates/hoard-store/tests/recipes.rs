//! Recipes across OS processes (this test binary re-invoked as children with an env var):
//! mutual exclusion under `RLock` and `Barrier<Lock>`, at most N inside a
//! `BoundedSemaphore`, `Throttle`'s rate over all processes, `Averager` counting every add.

use std::process::{Command, Stdio};
use std::time::Duration;

use hoard_store::{
    Acquire, Averager, Barrier, BoundedSemaphore, Cache, Clock, Lock, RLock, SystemClock, Throttle,
};

const CHILD_ENV: &str = "HOARD_STORE_RECIPE_CHILD";
const WAIT: Duration = Duration::from_secs(60);

/// The directory when this process is a child of `test`.
fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_ENV).map(std::path::PathBuf::from)
}

/// Runs `n` children of `test` on `dir`; returns the lines each printed, after checking
/// that each succeeded.
fn run_children(test: &str, dir: &std::path::Path, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a child of {test} failed");
        // The first line follows the harness's "test name ... " without a newline.
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            if let Some((_, rest)) = line.split_once("@@ ") {
                lines.push(rest.to_string());
            }
        }
    }
    lines
}

/// A read-modify-write of a plain counter (no atomic op): updates are lost unless the
/// callers exclude each other. Also counts callers inside at once with `incr`.
fn unsafe_increment(cache: &Cache) {
    let inside = cache.incr(b"inside", 1, Some(0)).unwrap();
    println!("@@ inside {inside}");
    let n: u64 = cache
        .get(b"n")
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1));
    cache
        .set(b"n", (n + 1).to_string().as_bytes(), None, None)
        .unwrap();
    cache.decr(b"inside", 1, None).unwrap();
}

fn max_inside(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("inside "))
        .map(|v| v.parse::<u64>().unwrap())
        .max()
        .unwrap()
}

fn counter(cache: &Cache) -> Vec<u8> {
    cache.get(b"n").unwrap().unwrap()
}

const PROCS: usize = 3;
const ROUNDS: usize = 25;

/// In a child: `ROUNDS` times, runs [`unsafe_increment`] through `guarded`. In the parent:
/// runs `PROCS` children and checks that no two were inside at once and no update was lost.
fn assert_mutual_exclusion(
    test: &str,
    guarded: impl Fn(&Cache, &dyn Fn()),
) -> Option<(tempfile::TempDir, Cache)> {
    if let Some(dir) = child_dir() {
        let cache = Cache::open(dir).unwrap();
        for _ in 0..ROUNDS {
            guarded(&cache, &|| unsafe_increment(&cache));
        }
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let lines = run_children(test, dir.path(), PROCS);
    assert_eq!(max_inside(&lines), 1);
    assert_eq!(counter(&cache), (PROCS * ROUNDS).to_string().as_bytes());
    Some((dir, cache))
}

#[test]
fn rlock_excludes_other_processes_and_reenters_its_own() {
    let cache = assert_mutual_exclusion(
        "rlock_excludes_other_processes_and_reenters_its_own",
        |cache, critical| {
            let lock = RLock::new(cache, b"rlock", Some(Duration::from_secs(30)));
            let _outer = lock.hold(WAIT).unwrap();
            let _inner = lock.hold(WAIT).unwrap(); // re-entrant: does not deadlock
            critical();
        },
    );
    if let Some((_dir, cache)) = cache {
        assert!(
            !cache.contains(b"rlock").unwrap(),
            "released by every holder"
        );
    }
}

#[test]
fn barrier_runs_one_call_at_a_time_across_processes() {
    assert_mutual_exclusion(
        "barrier_runs_one_call_at_a_time_across_processes",
        |cache, critical| {
            let lock = Lock::new(cache, b"barrier", Duration::from_secs(30));
            Barrier::new(lock, WAIT).call(critical).unwrap();
        },
    );
}

#[test]
fn bounded_semaphore_admits_at_most_n_processes() {
    const TEST: &str = "bounded_semaphore_admits_at_most_n_processes";
    const N: u64 = 2;
    if let Some(dir) = child_dir() {
        let cache = Cache::open(dir).unwrap();
        let sem = BoundedSemaphore::new(&cache, b"sem", N, Some(Duration::from_secs(30)));
        for _ in 0..ROUNDS {
            let _slot = sem.hold(WAIT).unwrap();
            let inside = cache.incr(b"inside", 1, Some(0)).unwrap();
            println!("@@ inside {inside}");
            std::thread::sleep(Duration::from_millis(2));
            cache.decr(b"inside", 1, None).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let lines = run_children(TEST, dir.path(), 4);
    assert_eq!(lines.len(), 4 * ROUNDS);
    assert!(max_inside(&lines) <= N, "more than {N} inside: {lines:?}");
    let sem = BoundedSemaphore::new(&cache, b"sem", N, None);
    assert_eq!(sem.available().unwrap(), N, "every slot given back");
}

#[test]
fn throttle_holds_the_rate_over_all_processes() {
    const TEST: &str = "throttle_holds_the_rate_over_all_processes";
    const COUNT: u32 = 10;
    const PER: Duration = Duration::from_millis(500);
    const CALLS: usize = 20;
    if let Some(dir) = child_dir() {
        let cache = Cache::open(dir).unwrap();
        let throttle = Throttle::new(&cache, b"throttle", COUNT, PER);
        for _ in 0..CALLS {
            throttle.wait().unwrap();
            println!("@@ at {}", SystemClock.now());
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    Cache::open(dir.path()).unwrap();
    let start = SystemClock.now(); // before any child can take a token
    let lines = run_children(TEST, dir.path(), 2);
    let mut times: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("at "))
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 2 * CALLS);
    times.sort_by(f64::total_cmp);
    // The k-th call (1-based) cannot come before the bucket (full at `start`) allowed k.
    let rate = f64::from(COUNT) / PER.as_secs_f64();
    for (i, t) in times.iter().enumerate() {
        let allowed = f64::from(COUNT) + (t - start) * rate;
        assert!(
            (i + 1) as f64 <= allowed + 1e-6,
            "call {} at +{:.3} s, only {allowed:.2} allowed by then",
            i + 1,
            t - start
        );
    }
}

#[test]
fn averager_counts_every_process_add() {
    const TEST: &str = "averager_counts_every_process_add";
    if let Some(dir) = child_dir() {
        let cache = Cache::open(dir).unwrap();
        let avg = Averager::new(&cache, b"avg", None);
        for i in 0..50 {
            avg.add(f64::from(i)).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let avg = Averager::new(&cache, b"avg", None);
    avg.add(1000.0).unwrap();
    run_children(TEST, dir.path(), 3);
    // 3 x (0..50) plus 1000: (3 * 1225 + 1000) / 151.
    let want = (3.0 * 1225.0 + 1000.0) / 151.0;
    assert!((avg.get().unwrap().unwrap() - want).abs() < 1e-9);
}
