//! Process safety: 4 OS processes (this test binary re-invoked as children) run 2,000
//! mixed operations each on one directory; afterwards counters equal a recount,
//! `PRAGMA integrity_check` is ok, `check()` finds nothing and no increment was lost.

use std::process::Command;

use hoard::store::{Cache, EvictionPolicy};

use super::raw;

const CHILD_ENV: &str = "HOARD_STORE_TEST_CHILD_DIR";
const CHILD_SEED_ENV: &str = "HOARD_STORE_TEST_CHILD_SEED";
const PROCESSES: u64 = 4;
const OPS: u64 = 2000;

/// The work one child does; returns how many times it incremented the shared counter.
fn child_work(dir: &str, seed: u64) -> u64 {
    let cache = Cache::builder(dir)
        .size_limit(3 << 20)
        .min_file_size(16 << 10)
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .statistics(true)
        .open()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut incrs = 0;
    for _ in 0..OPS {
        let key = format!("key-{}", rng.u32(0..300)).into_bytes();
        match rng.u8(0..100) {
            0..=34 => {
                cache.get(&key).unwrap();
            }
            35..=59 => {
                let len = if rng.u8(0..10) == 0 {
                    rng.usize(16 << 10..64 << 10)
                } else {
                    rng.usize(0..2000)
                };
                cache
                    .set(&key, &vec![seed as u8; len], None, Some("t"))
                    .unwrap();
            }
            60..=67 => {
                cache.delete(&key).unwrap();
            }
            68..=75 => {
                cache.add(&key, b"added", None, None).unwrap();
            }
            76..=85 => {
                cache.incr(b"shared-counter", 1, Some(0)).unwrap();
                incrs += 1;
            }
            86..=89 => {
                cache.pop(&key).unwrap();
            }
            90..=94 => {
                if let Some(r) = cache.record(&key).unwrap() {
                    let mut sink = Vec::new();
                    std::io::Read::read_to_end(&mut r.into_reader(), &mut sink).unwrap();
                }
            }
            95..=97 => {
                cache
                    .transact(|tx| {
                        let v = tx.incr(b"tx-counter", 1, Some(0))?;
                        tx.set(&key, v.to_string().as_bytes(), None, None)
                    })
                    .unwrap();
            }
            _ => {
                cache.touch(&key, None).unwrap();
            }
        }
    }
    cache.flush().unwrap();
    incrs
}

#[test]
fn four_processes_mixed_operations() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
        let n = child_work(&dir, seed);
        println!("CHILD-INCRS={n}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|seed| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "store::multiprocess::four_processes_mixed_operations",
                    "--nocapture",
                ])
                .env(CHILD_ENV, dir.path())
                .env(CHILD_SEED_ENV, seed.to_string())
                .output_async()
        })
        .collect();
    let mut total_incrs = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n: u64 = stdout
            .lines()
            .find_map(|l| l.split("CHILD-INCRS=").nth(1))
            .expect("child reported its increments")
            .trim()
            .parse()
            .unwrap();
        total_incrs += n;
    }
    let cache = Cache::open(dir.path()).unwrap();
    let problems = cache.check(false).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let c = raw(dir.path());
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let (count, size): (i64, i64) = c
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let (ccount, csize): (i64, i64) = c
        .query_row("SELECT count, size FROM counters", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((count, size), (ccount, csize));
    assert_eq!(cache.len().unwrap(), count as u64);
    let shared = cache.get(b"shared-counter").unwrap();
    // The counter may have been culled (LRU); if present, no increment after its last
    // insertion was lost, so it can never exceed the total.
    if let Some(v) = shared {
        let v: u64 = String::from_utf8(v).unwrap().parse().unwrap();
        assert!(v <= total_incrs);
    }
    let (hits, misses) = cache.stats(true, false).unwrap();
    assert!(hits + misses > 0, "children's counters were flushed");
    assert!(cache.volume().unwrap() <= (3 << 20) + (64 << 10) + 64);
}

/// `Command::spawn` with piped output (so children run concurrently).
trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}
