//! The memory layer (copies of recently read small values, validated by the shared
//! generation counters in `cache.gen`): a copy is never served after any handle or process
//! changed its key, and hits served from memory still count as hits and accesses.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use hoard::store::{Cache, EvictionPolicy, MEMORY_TRUST_SECONDS};

use super::{T0, builder, raw, secs};

/// Two handles on one directory, as two processes would have: separate connections,
/// separate memory layers, separate mappings of `cache.gen`.
fn pair() -> (tempfile::TempDir, hoard::store::ManualClock, Cache, Cache) {
    let (dir, clock, b) = builder();
    let a = b.size_limit(1 << 30).open().unwrap();
    let b = Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    (dir, clock, a, b)
}

#[test]
fn every_kind_of_write_by_another_handle_is_seen_at_once() {
    let (_dir, clock, a, b) = pair();
    let get = |k: &[u8]| a.get(k).unwrap();
    a.set(b"k", b"v1", None, Some("t")).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(b"k").as_deref(), Some(&b"v1"[..]), "now from memory");

    b.set(b"k", b"v2", None, None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v2"[..]), "set");
    b.delete(b"k").unwrap();
    assert_eq!(get(b"k"), None, "delete");
    assert!(b.add(b"k", b"added", None, None).unwrap());
    assert_eq!(get(b"k").as_deref(), Some(&b"added"[..]), "add");
    assert_eq!(b.pop(b"k").unwrap().as_deref(), Some(&b"added"[..]));
    assert_eq!(get(b"k"), None, "pop");

    b.set(b"n", b"1", None, None).unwrap();
    assert_eq!(get(b"n").as_deref(), Some(&b"1"[..]));
    b.incr(b"n", 41, None).unwrap();
    assert_eq!(get(b"n").as_deref(), Some(&b"42"[..]), "incr");

    b.set(b"k", b"v3", None, None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v3"[..]));
    assert!(b.touch(b"k", secs(10)).unwrap());
    clock.advance(11.0);
    assert_eq!(get(b"k"), None, "touch gave it an expiry, which passed");

    b.set(b"k", b"v4", None, None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v4"[..]));
    b.transact(|tx| tx.set(b"k", b"v5", None, None)).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v5"[..]), "transaction");

    b.set(b"k", b"v6", None, Some("tag")).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v6"[..]));
    assert_eq!(b.evict("tag").unwrap(), 1);
    assert_eq!(get(b"k"), None, "evict(tag)");

    b.set(b"k", b"v7", None, None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v7"[..]));
    b.clear().unwrap();
    assert_eq!(get(b"k"), None, "clear");

    b.set(b"k", b"v8", secs(5), None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v8"[..]));
    clock.advance(6.0);
    assert_eq!(get(b"k"), None, "expired while held in memory");
    b.set(b"k", b"v9", secs(5), None).unwrap();
    assert_eq!(get(b"k").as_deref(), Some(&b"v9"[..]));
    clock.advance(6.0);
    assert_eq!(b.expire().unwrap(), 1);
    assert_eq!(get(b"k"), None, "expire()");
}

#[test]
fn a_cull_by_another_handle_is_seen_at_once() {
    let (dir, clock, _) = builder();
    let a = Cache::builder(dir.path())
        .clock(clock.shared())
        .size_limit(1)
        .cull_limit(10)
        .open()
        .unwrap();
    let b = Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    a.set(b"first", &[1u8; 1000], None, None).unwrap();
    assert!(a.get(b"first").unwrap().is_some());
    // A write through the other handle culls (the limit is below the database's own
    // pages, so every row but the one written goes).
    for i in 0..2 {
        clock.advance(0.01);
        b.set(format!("k{i}").as_bytes(), &[2u8; 1000], None, None)
            .unwrap();
    }
    assert_eq!(a.get(b"first").unwrap(), None);
}

#[test]
fn repair_by_check_fix_invalidates_every_copy() {
    let (dir, _clock, a, b) = pair();
    a.set(b"k", b"value", None, None).unwrap();
    assert!(a.get(b"k").unwrap().is_some());
    // Damage the row behind the store's back (a new value with a wrong size column);
    // `check(true)` of the other handle repairs sizes without naming keys, so it drops
    // every copy in every process.
    raw(dir.path())
        .execute(
            "UPDATE cache SET value = x'6e6577', size = 1 WHERE key = x'6b'",
            [],
        )
        .unwrap();
    assert!(!b.check(true).unwrap().is_empty());
    assert!(b.check(false).unwrap().is_empty());
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn writes_behind_the_stores_back_are_seen_after_the_trust_window() {
    let (dir, clock, a, _b) = pair();
    a.set(b"k", b"old", None, None).unwrap();
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    // A raw SQL write bumps no counter; the copy is trusted for at most MEMORY_TRUST_SECONDS.
    raw(dir.path())
        .execute("UPDATE cache SET value = x'6e6577' WHERE key = x'6b'", [])
        .unwrap();
    clock.advance(MEMORY_TRUST_SECONDS);
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn hits_from_memory_count_and_order_lru_eviction() {
    let (dir, clock, _) = builder();
    let c = Cache::builder(dir.path())
        .clock(clock.shared())
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .cull_limit(1)
        .statistics(true)
        .open()
        .unwrap();
    for k in [b"a", b"b", b"c"] {
        clock.advance(1.0);
        c.set(k, &[0u8; 100], None, None).unwrap();
    }
    for _ in 0..5 {
        clock.advance(0.1);
        assert!(c.get(b"a").unwrap().is_some());
    }
    assert_eq!(
        c.stats(true, false).unwrap(),
        (5, 0),
        "memory hits are hits"
    );
    // `a` was read last (from memory): `b` is now the least recently used.
    let access: f64 = raw(dir.path())
        .query_row("SELECT access_time FROM cache WHERE key = x'61'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        access > T0 + 3.0,
        "access time {access} reached the database"
    );
    // One row over the limit (the database's own pages count towards the volume).
    let limit = c.volume().unwrap() - 50;
    c.configure(|s| s.size_limit = limit).unwrap();
    c.cull().unwrap();
    assert!(c.contains(b"a").unwrap());
    assert!(!c.contains(b"b").unwrap());
}

#[test]
fn the_layer_can_be_turned_off() {
    let (dir, clock, _) = builder();
    let a = Cache::builder(dir.path())
        .clock(clock.shared())
        .memory_cache_size(0)
        .open()
        .unwrap();
    a.set(b"k", b"old", None, None).unwrap();
    assert!(a.get(b"k").unwrap().is_some());
    raw(dir.path())
        .execute("UPDATE cache SET value = x'6e6577' WHERE key = x'6b'", [])
        .unwrap();
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

/// Random operations on two handles against a model: every read through either handle
/// returns what the model holds, whatever the other handle did in between.
#[test]
fn two_handles_agree_with_a_model_under_random_operations() {
    let (_dir, clock, a, b) = pair();
    let mut model: HashMap<Vec<u8>, (Vec<u8>, Option<f64>)> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for step in 0..4000 {
        let c = if rng.bool() { &a } else { &b };
        let key = format!("k{}", rng.u8(0..24)).into_bytes();
        let now = T0 + clock_offset(&clock);
        match rng.u8(0..10) {
            0..=4 => {
                let want = model
                    .get(&key)
                    .filter(|(_, e)| e.is_none_or(|e| e > now))
                    .map(|(v, _)| v.clone());
                assert_eq!(c.get(&key).unwrap(), want, "step {step}");
            }
            5 | 6 => {
                let v = format!("v{step}").into_bytes();
                let ttl = rng.bool().then(|| rng.u64(1..5));
                c.set(&key, &v, ttl.map(Duration::from_secs), None).unwrap();
                model.insert(key, (v, ttl.map(|t| now + t as f64)));
            }
            7 => {
                c.delete(&key).unwrap();
                model.remove(&key);
            }
            8 => {
                let live = model
                    .get(&key)
                    .is_some_and(|(_, e)| e.is_none_or(|e| e > now));
                assert_eq!(c.touch(&key, secs(3)).unwrap(), live, "step {step}");
                if live {
                    model.get_mut(&key).unwrap().1 = Some(now + 3.0);
                }
            }
            _ => clock.advance(rng.u64(0..700) as f64 / 1000.0),
        }
    }
}

fn clock_offset(clock: &hoard::store::ManualClock) -> f64 {
    use hoard::store::Clock;
    clock.now() - T0
}

const CHILD_DIR_ENV: &str = "HOARD_MEMORY_TEST_CHILD_DIR";

/// The child half of the cross-process test: overwrites `k`, deletes `gone`.
#[test]
fn memory_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // only does something when started by the test below
    };
    let c = Cache::open(&dir).unwrap();
    c.set(b"k", b"from the child", None, None).unwrap();
    c.delete(b"gone").unwrap();
}

#[test]
fn a_write_by_another_process_is_seen_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cache::open(dir.path()).unwrap();
    c.set(b"k", b"from the parent", None, None).unwrap();
    c.set(b"gone", b"x", None, None).unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.get(b"k").unwrap().as_deref(),
            Some(&b"from the parent"[..])
        );
        assert!(c.get(b"gone").unwrap().is_some());
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::memory::memory_child_writer",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        c.get(b"k").unwrap().as_deref(),
        Some(&b"from the child"[..])
    );
    assert_eq!(c.get(b"gone").unwrap(), None);
}
