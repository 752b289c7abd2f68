//! `Cache::transact` is re-entrant on its thread: calls made inside it join it.

use std::time::Duration;

use hoard_store::{Cache, Error};

#[test]
fn calls_inside_transact_join_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let clone = cache.clone();
    let started = std::time::Instant::now();
    cache
        .transact(|tx| {
            tx.set(b"a", b"1", None, None)?;
            clone.set(b"b", b"2", None, Some("t"))?;
            assert_eq!(clone.get(b"a")?, Some(b"1".to_vec()));
            assert_eq!(tx.get(b"b")?, Some(b"2".to_vec()));
            assert_eq!(clone.incr(b"n", 5, Some(0))?, 5);
            cache.transact(|inner| inner.set(b"c", b"3", None, None))?;
            assert!(cache.contains(b"c")?);
            Ok(())
        })
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "no lock wait");
    let other = Cache::open(dir.path()).unwrap();
    for (k, v) in [(b"a", &b"1"[..]), (b"b", b"2"), (b"c", b"3"), (b"n", b"5")] {
        assert_eq!(other.get(k).unwrap().as_deref(), Some(v));
    }
}

#[test]
fn nested_writes_roll_back_with_the_outer_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let big = vec![7u8; 1 << 16]; // a value file
    let r: Result<(), Error> = cache.transact(|_tx| {
        cache.set(b"x", b"1", None, None)?;
        cache.set(b"file", &big, None, None)?;
        Err(Error::KeyNotFound)
    });
    assert!(matches!(r, Err(Error::KeyNotFound)));
    assert_eq!(cache.get(b"x").unwrap(), None);
    assert_eq!(cache.get(b"file").unwrap(), None);
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn other_threads_still_wait_for_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    cache
        .transact(|tx| {
            tx.set(b"k", b"in-tx", None, None)?;
            let c2 = cache.clone();
            // Another thread does not join: it sees the committed state only.
            let seen = std::thread::spawn(move || c2.get(b"k").unwrap())
                .join()
                .unwrap();
            assert_eq!(seen, None);
            Ok(())
        })
        .unwrap();
    assert_eq!(cache.get(b"k").unwrap(), Some(b"in-tx".to_vec()));
}
