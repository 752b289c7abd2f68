//! Buffered LRU/LFU accesses and counters: reads take no write transaction; flushes apply them.

use hoard::store::{Cache, EvictionPolicy, FLUSH_KEYS};

use super::{T0, builder, raw};

fn access(dir: &std::path::Path, key: &[u8]) -> (f64, i64) {
    raw(dir)
        .query_row(
            "SELECT access_time, access_count FROM cache WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn reads_are_buffered_until_flush() {
    let (dir, clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .open()
        .unwrap();
    cache.set(b"k", b"v", None, None).unwrap();
    clock.advance(5.0);
    cache.get(b"k").unwrap();
    cache.record(b"k").unwrap();
    assert_eq!(
        access(dir.path(), b"k"),
        (T0, 0),
        "nothing written by reads"
    );
    cache.flush().unwrap();
    assert_eq!(
        access(dir.path(), b"k"),
        (T0 + 5.0, 0),
        "LRU writes only access_time"
    );
}

#[test]
fn dropping_the_last_clone_flushes() {
    let (dir, clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastFrequentlyUsed)
        .statistics(true)
        .open()
        .unwrap();
    cache.set(b"k", b"v", None, None).unwrap();
    clock.advance(1.0);
    let clone = cache.clone();
    cache.get(b"k").unwrap();
    clone.get(b"nope").unwrap();
    drop(cache);
    assert_eq!(access(dir.path(), b"k").1, 0, "a clone is still alive");
    drop(clone);
    assert_eq!(
        access(dir.path(), b"k"),
        (T0, 1),
        "LFU writes only access_count"
    );
    let (hits, misses): (i64, i64) = raw(dir.path())
        .query_row("SELECT hits, misses FROM counters", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((hits, misses), (1, 1));
}

#[test]
fn buffer_flushes_itself_after_flush_keys_distinct_keys() {
    let (dir, _clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastFrequentlyUsed)
        .flush_interval(std::time::Duration::from_secs(3600))
        .open()
        .unwrap();
    let keys: Vec<Vec<u8>> = (0..FLUSH_KEYS as u32)
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    cache
        .transact(|tx| {
            for k in &keys {
                tx.set(k, b"v", None, None)?;
            }
            Ok(())
        })
        .unwrap();
    for k in &keys[..FLUSH_KEYS - 1] {
        cache.get(k).unwrap();
    }
    assert_eq!(access(dir.path(), &keys[0]).1, 0);
    cache.get(&keys[FLUSH_KEYS - 1]).unwrap();
    assert_eq!(access(dir.path(), &keys[0]).1, 1, "flushed at FLUSH_KEYS");
    assert_eq!(access(dir.path(), &keys[FLUSH_KEYS - 1]).1, 1);
}

#[test]
fn least_recently_stored_does_not_buffer_reads() {
    let (dir, clock, b) = builder();
    let cache = b.open().unwrap();
    cache.set(b"k", b"v", None, None).unwrap();
    clock.advance(3.0);
    cache.get(b"k").unwrap();
    cache.flush().unwrap();
    assert_eq!(access(dir.path(), b"k"), (T0, 0));
}

#[test]
fn concurrent_readers_on_many_threads() {
    let (_dir, _clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .statistics(true)
        .open()
        .unwrap();
    for i in 0..100u32 {
        cache
            .set(&i.to_be_bytes(), &i.to_le_bytes(), None, None)
            .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let c: Cache = cache.clone();
            s.spawn(move || {
                for i in 0..500u32 {
                    let k = (i * 7 + t) % 120;
                    let got = c.get(&k.to_be_bytes()).unwrap();
                    assert_eq!(got.is_some(), k < 100);
                }
            });
        }
    });
    let (hits, misses) = cache.stats(true, false).unwrap();
    assert_eq!(hits + misses, 4000);
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn regression_get_inside_transact_never_flushes_into_its_own_lock() {
    // With every access due for a flush, a flush from inside the transaction would wait
    // for the write lock the transaction itself holds (a 60 s stall, then Timeout).
    let (dir, _clock, b) = builder();
    let cache = b
        .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
        .statistics(true)
        .flush_interval(std::time::Duration::ZERO)
        .open()
        .unwrap();
    cache.set(b"k", b"v", None, None).unwrap();
    let start = std::time::Instant::now();
    let got = cache.transact(|tx| tx.get(b"k")).unwrap();
    assert_eq!(got.unwrap(), b"v");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    cache.get(b"k").unwrap(); // outside: flushes everything, including the tx's access
    assert_eq!(cache.stats(true, false).unwrap(), (2, 0));
    assert!(access(dir.path(), b"k").0 >= T0);
}
