//! `FanoutCache`: diskcache's fail-soft timeout against a shard another process holds,
//! transactions over every shard, `configure`, `scan`, `peekitem`, the divided default
//! size limit, and eviction counts.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_store::{Cache, Error, FanoutCache, ManualClock, Settings};

const HOLD_ENV: &str = "HOARD_STORE_TEST_HOLD_DB";

/// Child side of [`hold_write_lock`]: holds `BEGIN IMMEDIATE` on the database named by
/// `HOLD_ENV` until its stdin closes. A no-op when run as a normal test.
#[test]
fn hold_lock_child() {
    let Some(db) = std::env::var_os(HOLD_ENV) else {
        return;
    };
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("BEGIN IMMEDIATE; UPDATE counters SET hits = hits WHERE id = 0;")
        .unwrap();
    println!("held");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    c.execute_batch("ROLLBACK").unwrap();
}

/// A child process holding the write lock of `db` until the returned child's stdin is closed.
fn hold_write_lock(db: &std::path::Path) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "hold_lock_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest may print "test hold_lock_child ... " on the same line.
    let held = lines
        .by_ref()
        .any(|l| l.is_ok_and(|l| l.trim_end().ends_with("held")));
    if !held {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child never took the lock");
    }
    // Keep draining so the child's last lines never meet a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Two keys on the same shard and one on another.
fn keys_on(fc: &FanoutCache) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let of = |k: &[u8]| {
        fc.shards()
            .iter()
            .position(|s| std::ptr::eq(s, fc.shard(k)))
            .unwrap()
    };
    let a = b"k-0".to_vec();
    let same = (1..1000)
        .map(|i| format!("k-{i}").into_bytes())
        .find(|k| of(k) == of(&a))
        .unwrap();
    let other = (1..1000)
        .map(|i| format!("k-{i}").into_bytes())
        .find(|k| of(k) != of(&a))
        .unwrap();
    (a, same, other)
}

#[test]
fn a_shard_held_by_another_process_fails_soft() {
    let dir = tempfile::tempdir().unwrap();
    let fc = FanoutCache::builder(dir.path(), 4)
        .timeout(Duration::from_millis(20))
        .open()
        .unwrap();
    let (k, k2, other) = keys_on(&fc);
    assert!(fc.set(&k, b"old", None, None).unwrap());
    let held = fc.shard(&k).directory().join("cache.db");
    let mut child = hold_write_lock(&held);

    let started = Instant::now();
    // Every write to the held shard gives up with diskcache's fallback...
    assert!(!fc.set(&k, b"new", None, None).unwrap(), "set -> false");
    assert!(!fc.add(&k2, b"x", None, None).unwrap(), "add -> false");
    assert!(!fc.delete(&k).unwrap(), "delete -> false");
    assert!(!fc.touch(&k, None).unwrap(), "touch -> false");
    assert_eq!(fc.pop(&k).unwrap(), None, "pop -> None");
    let mut n_key = b"n".to_vec();
    let mut i = 0;
    while !std::ptr::eq(fc.shard(&n_key), fc.shard(&k)) {
        i += 1;
        n_key = format!("n-{i}").into_bytes();
    }
    assert_eq!(fc.incr(&n_key, 1, Some(0)).unwrap(), None, "incr -> None");
    // ...which the shard itself (a `Cache` with that timeout) reports as an error.
    let plain = fc.shard(&k).set(&k, b"new", None, None);
    assert!(matches!(plain, Err(Error::Timeout)), "{plain:?}");
    // Reads never wait for a writer (WAL): the committed value, not a false miss.
    assert_eq!(fc.get(&k).unwrap(), Some(b"old".to_vec()));
    // Other shards are not affected.
    assert!(fc.set(&other, b"v", None, None).unwrap());
    // Without the timeout each of the writes above would wait up to 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(fc.set(&k, b"new", None, None).unwrap());
    assert_eq!(fc.get(&k).unwrap(), Some(b"new".to_vec()));
    assert!(fc.add(&k2, b"x", None, None).unwrap());
    assert_eq!(fc.incr(&n_key, 1, Some(0)).unwrap(), Some(1));
}

#[test]
fn transact_spans_every_shard_and_rolls_back_together() {
    let dir = tempfile::tempdir().unwrap();
    let fc = FanoutCache::open(dir.path(), 4).unwrap();
    let keys: Vec<Vec<u8>> = (0..32u32).map(|i| i.to_be_bytes().to_vec()).collect();
    fc.transact(|| {
        for k in &keys {
            assert!(fc.set(k, k, None, None)?);
        }
        assert_eq!(
            fc.get(&keys[3])?,
            Some(keys[3].clone()),
            "sees its own writes"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(fc.len().unwrap(), 32);
    let r: Result<(), Error> = fc.transact(|| {
        for k in &keys {
            assert!(fc.delete(k)?);
        }
        fc.set(b"new", b"1", None, None)?;
        Err(Error::KeyNotFound)
    });
    assert!(matches!(r, Err(Error::KeyNotFound)));
    assert_eq!(fc.len().unwrap(), 32, "every shard rolled back");
    assert_eq!(fc.get(b"new").unwrap(), None);
    let other = FanoutCache::open(dir.path(), 4).unwrap();
    assert_eq!(other.get(&keys[7]).unwrap(), Some(keys[7].clone()));
}

#[test]
fn size_limits_are_divided_by_default_and_by_configure() {
    let dir = tempfile::tempdir().unwrap();
    let fc = FanoutCache::open(dir.path(), 8).unwrap();
    let default = Settings::default().size_limit;
    for s in fc.shards() {
        assert_eq!(s.settings().size_limit, default / 8);
    }
    assert_eq!(fc.settings().size_limit, default);
    let s = fc
        .configure(|s| {
            s.size_limit = 80 << 20;
            s.cull_limit = 3;
        })
        .unwrap();
    assert_eq!((s.size_limit, s.cull_limit), (80 << 20, 3));
    drop(fc);
    // Reopened without a limit: the stored shares stay.
    let fc = FanoutCache::open(dir.path(), 8).unwrap();
    for s in fc.shards() {
        assert_eq!(
            (s.settings().size_limit, s.settings().cull_limit),
            (10 << 20, 3)
        );
    }
}

#[test]
fn scan_merges_shards_in_key_order_and_peekitem_goes_by_store_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let fc = FanoutCache::builder(dir.path(), 4)
        .clock(clock.clone())
        .open()
        .unwrap();
    let order = [7u32, 3, 12, 0, 9, 5, 1];
    for i in order {
        fc.set(format!("p:{i:02}").as_bytes(), &i.to_le_bytes(), None, None)
            .unwrap();
        clock.advance(1.0);
        fc.set(format!("q:{i:02}").as_bytes(), b"", None, None)
            .unwrap();
        clock.advance(1.0);
    }
    let keys: Vec<String> = fc
        .scan(b"p:")
        .map(|e| String::from_utf8(e.unwrap().key).unwrap())
        .collect();
    let mut want: Vec<String> = order.iter().map(|i| format!("p:{i:02}")).collect();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(fc.scan(b"q:").count(), order.len());
    assert_eq!(fc.scan(b"z").count(), 0);

    let (first, v) = fc.peekitem(false).unwrap().unwrap();
    assert_eq!(
        (first.as_slice(), v),
        (&b"p:07"[..], 7u32.to_le_bytes().to_vec())
    );
    let (last, _) = fc.peekitem(true).unwrap().unwrap();
    assert_eq!(last, b"q:01");
    fc.clear().unwrap();
    assert_eq!(fc.peekitem(false).unwrap(), None);
}

#[test]
fn culling_and_expiry_are_counted_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let open = || {
        Cache::builder(dir.path())
            .size_limit(256 << 10)
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let cache = open();
    assert_eq!(cache.evictions().unwrap().total(), 0);
    for i in 0..400u32 {
        cache.set(&i.to_be_bytes(), &[1; 2048], None, None).unwrap();
    }
    let kept = cache.len().unwrap();
    let culled = cache.evictions().unwrap().culled;
    assert_eq!(culled, 400 - kept, "every row culled is counted once");
    for i in 0..5u32 {
        cache
            .set(
                &(1000 + i).to_be_bytes(),
                b"x",
                Some(Duration::from_secs(1)),
                None,
            )
            .unwrap();
    }
    clock.advance(2.0);
    assert_eq!(cache.expire().unwrap(), 5);
    cache.delete(&399u32.to_be_bytes()).unwrap(); // explicit removals are not counted
    cache.clear().unwrap();
    drop(cache);
    let e = open().evictions().unwrap();
    assert_eq!((e.culled, e.expired), (culled, 5));
    // Another directory's FanoutCache sums its shards.
    let fdir = tempfile::tempdir().unwrap();
    let fc = FanoutCache::builder(fdir.path(), 2)
        .size_limit(512 << 10)
        .open()
        .unwrap();
    for i in 0..400u32 {
        fc.set(&i.to_be_bytes(), &[1; 2048], None, None).unwrap();
    }
    assert_eq!(fc.evictions().unwrap().culled, 400 - fc.len().unwrap());
}
