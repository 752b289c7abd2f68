//! Integration tests of `hoard::store`: every operation, policy, fault and process-safety
//! property, with a [`ManualClock`] (no test sleeps for a TTL) and a `TempDir` per test.

use std::path::Path;
use std::time::Duration;

use hoard::store::{Cache, CacheBuilder, ManualClock};
use tempfile::TempDir;

mod basic;
mod buffer;
mod eviction;
mod fanout;
mod faults;
mod files;
mod generations;
mod memo_lock;
mod memory;
mod multiprocess;

/// Start time of every manual clock (far from 0 so `now - ttl` stays positive).
pub const T0: f64 = 1_000_000_000.0;

/// A temp dir and a builder on it with a manual clock.
pub fn builder() -> (TempDir, ManualClock, CacheBuilder) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let b = Cache::builder(dir.path()).clock(clock.shared());
    (dir, clock, b)
}

/// A fresh cache with default settings and a manual clock.
pub fn open() -> (TempDir, ManualClock, Cache) {
    let (dir, clock, b) = builder();
    (dir, clock, b.open().unwrap())
}

/// Seconds as a `Duration`.
pub fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

/// A raw SQLite connection to the cache database, for white-box assertions and fault injection.
pub fn raw(dir: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join("cache.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Every `.val` file under the cache directory.
pub fn value_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "val") {
                out.push(p);
            }
        }
    }
    out
}

/// Files left in `tmp/`.
pub fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}
