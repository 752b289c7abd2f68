//! `memoize`, `memoize_stampede` (XFetch, exact with an injected U and the manual clock), `Lock`.

use std::cell::Cell;
use std::time::Duration;

use hoard::store::{Error, Lock};

use super::{open, secs};

#[test]
fn memoize_computes_once() {
    let (_d, _c, cache) = open();
    let calls = Cell::new(0);
    for _ in 0..3 {
        let v = cache
            .memoize(b"k", secs(10), None, || {
                calls.set(calls.get() + 1);
                Ok(b"computed".to_vec())
            })
            .unwrap();
        assert_eq!(v, b"computed");
    }
    assert_eq!(calls.get(), 1);
}

#[test]
fn memoize_stampede_recomputes_early_per_xfetch() {
    let (_d, clock, cache) = open();
    let e_inv = (-1.0f64).exp(); // -ln(U) = 1
    let compute = |v: &'static [u8]| {
        let clock = clock.clone();
        move || {
            clock.advance(2.0); // delta = 2 s
            Ok(v.to_vec())
        }
    };
    let (v, fresh) = cache
        .memoize_stampede(
            b"k",
            Duration::from_secs(100),
            1.0,
            &mut || 1.0,
            compute(b"one"),
        )
        .unwrap();
    assert_eq!((v.as_slice(), fresh), (&b"one"[..], true));
    let expire = hoard::store::Clock::now(&clock) + 100.0; // stored after the 2 s compute
    // Table: (seconds before expiry, U, recompute?). Window is delta * beta * -ln(U).
    let cases: &[(f64, f64, bool)] = &[
        (50.0, 1.0, false),
        (50.0, e_inv, false),
        (2.5, e_inv, false),
        (1.5, e_inv, true),
        (3.0, e_inv * e_inv, true),
        (0.1, 1.0, false),
    ];
    for &(before, u, want) in cases {
        // Re-store the value so every case starts from the same row.
        clock.set(expire - 100.0 - 2.0);
        cache
            .memoize_stampede(
                b"k",
                Duration::from_secs(100),
                1.0,
                &mut || 0.0,
                compute(b"one"),
            )
            .unwrap();
        clock.set(expire - before);
        let (_, recomputed) = cache
            .memoize_stampede(
                b"k",
                Duration::from_secs(100),
                1.0,
                &mut || u,
                compute(b"two"),
            )
            .unwrap();
        assert_eq!(recomputed, want, "{before} s before expiry, U={u}");
    }
    clock.set(expire);
    let (v, recomputed) = cache
        .memoize_stampede(
            b"k",
            Duration::from_secs(100),
            1.0,
            &mut || 1.0,
            compute(b"three"),
        )
        .unwrap();
    assert!(recomputed);
    assert_eq!(v, b"three");
}

#[test]
fn memoize_stampede_never_serves_a_value_another_handle_removed() {
    let (dir, clock, a) = open();
    let b = hoard::store::Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    let run = |c: &hoard::store::Cache, v: &'static [u8]| {
        c.memoize_stampede(b"k", Duration::from_secs(100), 1.0, &mut || 1.0, || {
            Ok(v.to_vec())
        })
        .unwrap()
    };
    assert_eq!(run(&a, b"one"), (b"one".to_vec(), true));
    assert_eq!(
        run(&a, b"two"),
        (b"one".to_vec(), false),
        "served (from memory)"
    );
    b.delete(b"k").unwrap();
    assert_eq!(run(&a, b"three"), (b"three".to_vec(), true));
    assert_eq!(run(&b, b"four"), (b"three".to_vec(), false));
}

#[test]
fn lock_is_exclusive_and_released_by_holder_only() {
    let (_d, _c, cache) = open();
    let a = Lock::new(&cache, b"lock", Duration::from_secs(30));
    let b = Lock::new(&cache, b"lock", Duration::from_secs(30));
    assert!(a.try_acquire().unwrap());
    assert!(!b.try_acquire().unwrap());
    assert!(b.locked().unwrap());
    b.release().unwrap();
    assert!(!b.try_acquire().unwrap(), "b cannot release a's lock");
    a.release().unwrap();
    assert!(b.try_acquire().unwrap());
    assert!(matches!(
        a.acquire(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    b.release().unwrap();
    {
        let _g = a.guard(Duration::from_secs(1)).unwrap();
        assert!(b.try_guard().unwrap().is_none());
    }
    assert!(b.try_guard().unwrap().is_some());
}

#[test]
fn crashed_holder_blocks_only_until_expiry() {
    let (_d, clock, cache) = open();
    let crashed = Lock::new(&cache, b"lock", Duration::from_secs(30));
    assert!(crashed.try_acquire().unwrap());
    std::mem::forget(crashed);
    let b = Lock::new(&cache, b"lock", Duration::from_secs(30));
    clock.advance(29.0);
    assert!(!b.try_acquire().unwrap());
    clock.advance(1.0);
    assert!(b.try_acquire().unwrap());
}
