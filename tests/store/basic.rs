//! Every `Cache` operation on inline values.

use std::time::Duration;

use hoard::store::{Cache, Entry, Error, EvictionPolicy, Settings};

use super::{T0, builder, open, raw, secs};

#[test]
fn set_get_round_trip_table() {
    let (_d, _c, cache) = open();
    let cases: &[(&[u8], &[u8])] = &[
        (b"a", b"1"),
        (b"", b"empty key"),
        (b"empty value", b""),
        (b"\x00\xff binary", b"\x00\x01\x02"),
    ];
    for (k, v) in cases {
        cache.set(k, v, None, None).unwrap();
    }
    for (k, v) in cases {
        assert_eq!(cache.get(k).unwrap().as_deref(), Some(*v), "key {k:?}");
    }
    assert_eq!(cache.get(b"missing").unwrap(), None);
    assert_eq!(cache.len().unwrap(), cases.len() as u64);
}

#[test]
fn set_replaces_and_keeps_insertion_position() {
    let (_d, _c, cache) = open();
    cache.set(b"a", b"1", None, None).unwrap();
    cache.set(b"b", b"2", None, None).unwrap();
    cache.set(b"a", b"3", None, Some("t")).unwrap();
    assert_eq!(cache.get(b"a").unwrap().unwrap(), b"3");
    assert_eq!(cache.len().unwrap(), 2);
    let keys: Vec<Vec<u8>> = cache.iter_keys().map(|k| k.unwrap()).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn ttl_expires_on_the_manual_clock() {
    let (_d, clock, cache) = open();
    cache.set(b"k", b"v", secs(10), None).unwrap();
    clock.advance(9.5);
    assert!(cache.contains(b"k").unwrap());
    assert_eq!(cache.get(b"k").unwrap().unwrap(), b"v");
    clock.advance(0.5);
    assert!(!cache.contains(b"k").unwrap());
    assert_eq!(cache.get(b"k").unwrap(), None);
    assert_eq!(cache.record(b"k").unwrap().map(|r| r.len()), None);
    // Still a row until expired rows are dropped.
    assert_eq!(cache.len().unwrap(), 1);
    assert_eq!(cache.expire().unwrap(), 1);
    assert_eq!(cache.len().unwrap(), 0);
}

#[test]
fn get_entry_returns_expire_time_and_tag() {
    let (_d, _c, cache) = open();
    cache.set(b"k", b"v", secs(5), Some("red")).unwrap();
    assert_eq!(
        cache.get_entry(b"k").unwrap(),
        Some(Entry {
            value: b"v".to_vec(),
            expire_time: Some(T0 + 5.0),
            tag: Some("red".into())
        })
    );
}

#[test]
fn delete_reports_live_rows_only() {
    let (_d, clock, cache) = open();
    cache.set(b"live", b"1", None, None).unwrap();
    cache.set(b"old", b"1", secs(1), None).unwrap();
    clock.advance(2.0);
    assert!(cache.delete(b"live").unwrap());
    assert!(!cache.delete(b"live").unwrap());
    assert!(!cache.delete(b"old").unwrap());
    assert_eq!(cache.len().unwrap(), 0, "expired row removed too");
}

#[test]
fn add_inserts_only_if_absent_or_expired() {
    let (_d, clock, cache) = open();
    assert!(cache.add(b"k", b"1", secs(10), None).unwrap());
    assert!(!cache.add(b"k", b"2", None, None).unwrap());
    assert_eq!(cache.get(b"k").unwrap().unwrap(), b"1");
    clock.advance(10.0);
    assert!(cache.add(b"k", b"3", None, None).unwrap());
    assert_eq!(cache.get(b"k").unwrap().unwrap(), b"3");
}

#[test]
fn pop_returns_and_removes() {
    let (_d, clock, cache) = open();
    cache.set(b"k", b"v", None, None).unwrap();
    assert_eq!(cache.pop(b"k").unwrap().unwrap(), b"v");
    assert_eq!(cache.pop(b"k").unwrap(), None);
    cache.set(b"e", b"v", secs(1), None).unwrap();
    clock.advance(1.0);
    assert_eq!(cache.pop(b"e").unwrap(), None);
    assert_eq!(cache.len().unwrap(), 0);
}

#[test]
fn touch_changes_expiry_of_live_rows() {
    let (_d, clock, cache) = open();
    cache.set(b"k", b"v", secs(1), None).unwrap();
    assert!(cache.touch(b"k", secs(100)).unwrap());
    clock.advance(50.0);
    assert!(cache.contains(b"k").unwrap());
    assert!(cache.touch(b"k", None).unwrap());
    clock.advance(1e6);
    assert!(cache.contains(b"k").unwrap());
    assert!(!cache.touch(b"absent", secs(1)).unwrap());
}

#[test]
fn incr_decr_table() {
    let (_d, _c, cache) = open();
    assert!(matches!(cache.incr(b"n", 1, None), Err(Error::KeyNotFound)));
    let steps: &[(i64, Option<i64>, i64)] = &[
        (1, Some(0), 1),
        (5, None, 6),
        (-10, None, -4),
        (0, None, -4),
    ];
    for &(delta, default, want) in steps {
        assert_eq!(cache.incr(b"n", delta, default).unwrap(), want);
    }
    assert_eq!(cache.decr(b"n", 6, None).unwrap(), -10);
    assert_eq!(cache.get(b"n").unwrap().unwrap(), b"-10");
    assert_eq!(cache.decr(b"m", 2, Some(10)).unwrap(), 8);
    cache.set(b"s", b"abc", None, None).unwrap();
    assert!(matches!(
        cache.incr(b"s", 1, None),
        Err(Error::NotAnInteger)
    ));
    cache
        .set(b"max", i64::MAX.to_string().as_bytes(), None, None)
        .unwrap();
    assert!(matches!(
        cache.incr(b"max", 1, None),
        Err(Error::NotAnInteger)
    ));
}

#[test]
fn incr_keeps_expiry_and_is_atomic_across_threads() {
    let (_d, clock, cache) = open();
    cache.set(b"n", b"0", secs(100), Some("t")).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let c = cache.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    c.incr(b"n", 1, Some(0)).unwrap();
                }
            });
        }
    });
    let e = cache.get_entry(b"n").unwrap().unwrap();
    assert_eq!(e.value, b"400");
    assert_eq!(e.expire_time, Some(T0 + 100.0));
    clock.advance(100.0);
    assert_eq!(
        cache.incr(b"n", 1, Some(0)).unwrap(),
        1,
        "expired counts as missing"
    );
}

#[test]
fn expire_evict_clear_counts() {
    let (_d, clock, cache) = open();
    for i in 0..30u32 {
        let tag = if i % 3 == 0 { Some("three") } else { None };
        let ttl = if i % 2 == 0 { secs(5) } else { None };
        cache.set(&i.to_be_bytes(), b"v", ttl, tag).unwrap();
    }
    clock.advance(5.0);
    assert_eq!(cache.expire().unwrap(), 15);
    assert_eq!(
        cache.evict("three").unwrap(),
        5,
        "odd multiples of 3 below 30"
    );
    assert_eq!(cache.evict("three").unwrap(), 0);
    assert_eq!(cache.clear().unwrap(), 10);
    assert_eq!(cache.len().unwrap(), 0);
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn bulk_deletes_span_several_batches() {
    let (_d, _c, cache) = open();
    cache
        .transact(|tx| {
            for i in 0..2500u32 {
                tx.set(&i.to_be_bytes(), b"v", None, Some("t"))?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(cache.evict("t").unwrap(), 2500);
}

#[test]
fn stats_count_hits_and_misses_when_enabled() {
    let (_d, _c, cache) = open();
    cache.set(b"k", b"v", None, None).unwrap();
    cache.get(b"k").unwrap();
    assert_eq!(
        cache.stats(true, false).unwrap(),
        (0, 0),
        "disabled by default"
    );
    for _ in 0..3 {
        cache.get(b"k").unwrap();
    }
    cache.get(b"x").unwrap();
    cache.record(b"y").unwrap();
    assert_eq!(cache.stats(true, true).unwrap(), (3, 2));
    assert_eq!(cache.stats(false, false).unwrap(), (0, 0));
    cache.get(b"k").unwrap();
    assert_eq!(cache.stats(false, false).unwrap(), (0, 0));
    assert!(!cache.settings().statistics);
}

#[test]
fn volume_counts_rows_and_database() {
    let (_d, _c, cache) = open();
    let empty = cache.volume().unwrap();
    assert!(empty > 0, "database pages count");
    cache.set(b"key", &[7u8; 1000], None, None).unwrap();
    cache
        .set_with_meta(b"k2", b"vv", b"meta", None, None)
        .unwrap();
    let page_bytes: u64 = {
        let c = raw(cache.directory());
        c.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size())",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    };
    assert_eq!(cache.volume().unwrap(), page_bytes + 1003 + 8);
}

#[test]
fn iteration_is_in_insertion_order_and_paged() {
    let (_d, _c, cache) = open();
    let keys: Vec<Vec<u8>> = (0..2345u32)
        .rev()
        .map(|i| i.to_le_bytes().to_vec())
        .collect();
    cache
        .transact(|tx| {
            for k in &keys {
                tx.set(k, b"", None, None)?;
            }
            Ok(())
        })
        .unwrap();
    let got: Vec<Vec<u8>> = cache.iter_keys().map(|k| k.unwrap()).collect();
    assert_eq!(got, keys);
}

#[test]
fn peekitem_first_and_last_skip_expired() {
    let (_d, clock, cache) = open();
    assert_eq!(cache.peekitem(false).unwrap(), None);
    cache.set(b"a", b"1", secs(1), None).unwrap();
    cache.set(b"b", b"2", None, None).unwrap();
    cache.set(b"c", b"3", None, None).unwrap();
    cache.set(b"d", b"4", secs(1), None).unwrap();
    assert_eq!(
        cache.peekitem(false).unwrap(),
        Some((b"a".to_vec(), b"1".to_vec()))
    );
    clock.advance(1.0);
    assert_eq!(
        cache.peekitem(false).unwrap(),
        Some((b"b".to_vec(), b"2".to_vec()))
    );
    assert_eq!(
        cache.peekitem(true).unwrap(),
        Some((b"c".to_vec(), b"3".to_vec()))
    );
}

#[test]
fn transact_commits_all_or_nothing() {
    let (_d, _c, cache) = open();
    cache.set(b"n", b"1", None, None).unwrap();
    let out = cache
        .transact(|tx| {
            let n = tx.incr(b"n", 1, None)?;
            tx.set(b"a", b"x", None, None)?;
            assert!(tx.add(b"b", b"y", None, None)?);
            assert!(!tx.add(b"b", b"z", None, None)?);
            assert_eq!(tx.get(b"a")?.unwrap(), b"x");
            assert!(tx.contains(b"b")?);
            assert!(tx.touch(b"b", secs(9))?);
            assert_eq!(tx.pop(b"a")?.unwrap(), b"x");
            assert_eq!(tx.decr(b"n", 1, None)?, 1);
            Ok(n)
        })
        .unwrap();
    assert_eq!(out, 2);
    assert!(cache.contains(b"b").unwrap());
    let failed: Result<(), Error> = cache.transact(|tx| {
        tx.set(b"c", b"never", None, None)?;
        tx.delete(b"b")?;
        Err(Error::Timeout)
    });
    assert!(matches!(failed, Err(Error::Timeout)));
    assert_eq!(cache.get(b"c").unwrap(), None);
    assert!(cache.contains(b"b").unwrap());
}

#[test]
fn set_meta_replaces_meta_not_value() {
    let (_d, clock, cache) = open();
    assert!(!cache.set_meta(b"k", b"m", None).unwrap());
    cache
        .set_with_meta(b"k", b"body", b"head-1", secs(5), None)
        .unwrap();
    let v0 = cache.volume().unwrap();
    assert!(cache.set_meta(b"k", b"head-two", secs(60)).unwrap());
    let r = cache.record(b"k").unwrap().unwrap();
    assert_eq!(r.meta, b"head-two");
    assert_eq!(r.expire_time, Some(T0 + 60.0));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
    assert_eq!(body, b"body");
    assert_eq!(cache.volume().unwrap(), v0 + 2);
    clock.advance(60.0);
    assert!(
        !cache.set_meta(b"k", b"x", None).unwrap(),
        "expired rows are not live"
    );
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn settings_are_persisted_and_shared() {
    let (dir, _c, b) = builder();
    let cache = b
        .size_limit(12345678)
        .cull_limit(3)
        .eviction_policy(EvictionPolicy::LeastFrequentlyUsed)
        .min_file_size(4096)
        .statistics(true)
        .open()
        .unwrap();
    let mut want = Settings::default();
    want.size_limit = 12345678;
    want.cull_limit = 3;
    want.eviction_policy = EvictionPolicy::LeastFrequentlyUsed;
    want.min_file_size = 4096;
    want.statistics = true;
    assert_eq!(cache.settings(), want);
    let other = Cache::open(dir.path()).unwrap();
    assert_eq!(other.settings(), want);
    other.configure(|s| s.size_limit = 99).unwrap();
    assert_eq!(cache.settings().size_limit, 99);
}

#[test]
fn new_cache_has_diskcache_defaults() {
    let (_d, _c, cache) = open();
    assert_eq!(cache.settings(), Settings::default());
}

#[test]
fn scan_lists_rows_by_prefix() {
    let (_d, _c, cache) = open();
    for k in ["a/1", "b/1", "b/2", "b/3", "c"] {
        cache.set(k.as_bytes(), b"xy", None, Some("t")).unwrap();
    }
    let rows: Vec<_> = cache.scan(b"b/").map(|r| r.unwrap()).collect();
    let keys: Vec<&[u8]> = rows.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"b/1"[..], b"b/2", b"b/3"]);
    assert_eq!(rows[0].size, 5);
    assert_eq!(rows[0].store_time, T0);
    assert_eq!(rows[0].tag.as_deref(), Some("t"));
    assert_eq!(cache.scan(b"").count(), 5);
    assert_eq!(cache.scan(b"zz").count(), 0);
}

#[test]
fn cache_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Cache>();
    let (_d, _c, cache) = open();
    let c2 = cache.clone();
    c2.set(b"k", b"v", None, None).unwrap();
    assert_eq!(cache.get(b"k").unwrap().unwrap(), b"v");
    assert_eq!(cache.directory(), c2.directory());
    let _ = Duration::ZERO;
}
