//! `FanoutCache`: shards by stable hash, divided size limit, same API.

use hoard::store::{FanoutCache, ManualClock};

use super::{T0, secs};

#[test]
fn operations_route_to_stable_shards() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let fc = FanoutCache::builder(dir.path(), 4)
        .size_limit(40 << 20)
        .statistics(true)
        .clock(clock.shared())
        .open()
        .unwrap();
    assert_eq!(fc.shards().len(), 4);
    assert_eq!(fc.settings().size_limit, 40 << 20);
    for s in fc.shards() {
        assert_eq!(s.settings().size_limit, 10 << 20);
    }
    for i in 0..200u32 {
        fc.set(
            &i.to_be_bytes(),
            &i.to_le_bytes(),
            secs(10),
            Some(if i % 2 == 0 { "even" } else { "odd" }),
        )
        .unwrap();
    }
    assert_eq!(fc.len().unwrap(), 200);
    assert!(
        fc.shards().iter().all(|s| s.len().unwrap() > 20),
        "keys spread"
    );
    for i in 0..200u32 {
        assert_eq!(fc.get(&i.to_be_bytes()).unwrap().unwrap(), i.to_le_bytes());
        assert_eq!(
            fc.shard(&i.to_be_bytes())
                .get(&i.to_be_bytes())
                .unwrap()
                .unwrap(),
            i.to_le_bytes()
        );
    }
    assert!(fc.add(b"new", b"1", None, None).unwrap());
    assert!(!fc.add(b"new", b"2", None, None).unwrap());
    assert_eq!(fc.incr(b"ctr", 2, Some(0)).unwrap(), Some(2));
    assert_eq!(fc.decr(b"ctr", 1, None).unwrap(), Some(1));
    assert!(fc.touch(b"new", secs(1)).unwrap());
    assert_eq!(fc.pop(b"new").unwrap().unwrap(), b"1");
    assert!(fc.delete(b"ctr").unwrap());
    assert_eq!(fc.evict("odd").unwrap(), 100);
    clock.advance(10.0);
    assert_eq!(fc.expire().unwrap(), 100);
    assert_eq!(fc.stats(true, false).unwrap(), (400, 0), "two gets per key");
    assert!(fc.check(false).unwrap().is_empty());
    drop(fc);

    // Reopen: same keys land on the same shards.
    let fc = FanoutCache::open(dir.path(), 4).unwrap();
    fc.set(b"persist", b"x", None, None).unwrap();
    drop(fc);
    let fc = FanoutCache::open(dir.path(), 4).unwrap();
    assert_eq!(fc.get(b"persist").unwrap().unwrap(), b"x");
    assert_eq!(fc.clear().unwrap(), 1);
    assert!(fc.is_empty().unwrap());
}

#[test]
fn size_limit_is_per_shard_share() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 4u64 << 20;
    let fc = FanoutCache::builder(dir.path(), 2)
        .size_limit(limit)
        .open()
        .unwrap();
    for i in 0..400u32 {
        fc.set(&i.to_be_bytes(), &[0u8; 40 << 10], None, None)
            .unwrap();
    }
    assert!(fc.volume().unwrap() <= limit + 2 * (40 << 10));
    assert!(fc.len().unwrap() < 400);
}

#[test]
fn two_fanout_handles_never_serve_each_others_stale_copies() {
    let dir = tempfile::tempdir().unwrap();
    let a = FanoutCache::builder(dir.path(), 4)
        .memory_cache_size(4 << 20)
        .open()
        .unwrap();
    let b = FanoutCache::open(dir.path(), 4).unwrap();
    for i in 0..50u32 {
        a.set(&i.to_le_bytes(), b"one", None, None).unwrap();
        assert_eq!(
            a.get(&i.to_le_bytes()).unwrap().as_deref(),
            Some(&b"one"[..])
        );
    }
    for i in 0..50u32 {
        b.set(&i.to_le_bytes(), b"two", None, None).unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(
            a.get(&i.to_le_bytes()).unwrap().as_deref(),
            Some(&b"two"[..])
        );
    }
}
