//! Tests of `write.rs`: replacements and deletes in one statement or two, counters,
//! culling around the written row, prepared statements.

use crate::clock::manual_cache;
use rusqlite::StatementStatus;
use std::time::Duration;

/// Every kind of replacement (the one-statement path and the general one, in both
/// directions) leaves the row as written and the counters equal to the rows' sums.
#[test]
fn replacing_writes_keep_rows_and_counters_exact() {
    let (_dir, _clock, cache) = manual_cache(1000.0);
    let big = vec![3u8; 40_000]; // a value file (min_file_size 32 KiB)
    type Case<'a> = (&'a [u8], &'a [u8], Option<u64>, Option<&'a str>);
    let cases: [Case; 12] = [
        (b"a", b"12345", None, None),
        (b"a", b"54321", None, None), // same size, nothing indexed changes
        (b"a", b"123", None, None),   // size changes
        (b"a", b"123", None, Some("t")),
        (b"a", b"456", None, Some("t")), // tag kept
        (b"a", b"456", Some(60), Some("")),
        (b"a", b"789", Some(60), Some("")), // expiry and empty tag kept
        (b"a", b"789", None, None),
        (b"a", &big, None, None), // inline -> file
        (b"a", b"x", None, None), // file -> inline (the old file is unlinked)
        (b"b", b"1", None, None),
        (b"b", b"22", Some(5), None),
    ];
    for (i, (key, value, expire, tag)) in cases.into_iter().enumerate() {
        cache
            .set(key, value, expire.map(Duration::from_secs), tag)
            .unwrap();
        let entry = cache.get_entry(key).unwrap().expect("stored");
        assert_eq!(entry.value, value, "case {i}");
        assert_eq!(entry.tag.as_deref(), tag, "case {i}");
        assert_eq!(
            entry.expire_time,
            expire.map(|e| 1000.0 + e as f64),
            "case {i}"
        );
        assert_counters_exact(&cache, &format!("case {i}"));
    }
    assert!(
        cache.check(false).unwrap().is_empty(),
        "no orphan value file"
    );
}

/// A write over the size limit culls every other row but never its own, also when it
/// replaced the row in place (no rowid at hand).
#[test]
fn a_replaced_row_is_never_culled_by_its_own_write() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::Cache::builder(dir.path())
        .size_limit(1) // the database's own pages are over it: every write culls
        .open()
        .unwrap();
    for (key, value) in [(b"a", b"1"), (b"b", b"2"), (b"b", b"3"), (b"a", b"4")] {
        cache.set(key, value, None, None).unwrap();
        assert_eq!(cache.get(key).unwrap().as_deref(), Some(&value[..]));
        assert_eq!(cache.len().unwrap(), 1, "the other key was culled");
    }
}

/// `delete` reports whether a live row went, and removes every kind of row.
#[test]
fn delete_reports_live_rows_and_removes_every_kind() {
    let (_dir, clock, cache) = manual_cache(1000.0);
    let big = vec![3u8; 40_000];
    cache.set(b"inline", b"v", None, None).unwrap();
    cache.set(b"file", &big, None, None).unwrap();
    cache
        .set(b"expired", b"v", Some(Duration::from_secs(1)), None)
        .unwrap();
    cache
        .set(b"later", b"v", Some(Duration::from_secs(60)), None)
        .unwrap();
    clock.advance(2.0);
    let cases: [(&[u8], bool); 5] = [
        (b"inline", true),
        (b"file", true),
        (b"expired", false),
        (b"later", true),
        (b"missing", false),
    ];
    for (key, live) in cases {
        assert_eq!(cache.delete(key).unwrap(), live, "{key:?}");
        assert!(!cache.delete(key).unwrap(), "{key:?} again");
    }
    assert_eq!(cache.len().unwrap(), 0);
    assert!(
        cache.check(false).unwrap().is_empty(),
        "the value file is gone"
    );
}

/// The statements of a set run prepared: none is prepared again per run (a statement
/// whose plan depends on a bound value is, and that doubled a set's CPU time).
#[test]
fn hot_writes_are_prepared_once() {
    let (_dir, _clock, cache) = manual_cache(1000.0);
    for i in 0..50u32 {
        let tag = (i % 3 == 0).then_some("t");
        let expire = (i % 5 == 0).then_some(Duration::from_secs(60));
        cache
            .set(&(i % 7).to_be_bytes(), &i.to_be_bytes(), expire, tag)
            .unwrap();
        cache.set(b"same", &i.to_be_bytes(), None, None).unwrap();
        if i % 2 == 1 {
            assert!(cache.delete(&(i % 7).to_be_bytes()).unwrap());
        }
    }
    let (runs, reprepared, pragma_reprepared) = cache
        .inner
        .read(|c| {
            let status = |which, what| super::prepared::with(c, which, |s| Ok(s.get_status(what)));
            let delete = super::Hot::DeleteLiveInline;
            assert!(status(delete, StatementStatus::Run)? >= 20);
            assert_eq!(status(delete, StatementStatus::RePrepare)?, 0);
            // The counter works: a PRAGMA is prepared again on every run.
            super::volume::database_bytes(c)?;
            super::volume::database_bytes(c)?;
            let pragma = c.prepare_cached("PRAGMA page_count")?;
            Ok((
                status(super::Hot::Upsert, StatementStatus::Run)?,
                status(super::Hot::Upsert, StatementStatus::RePrepare)?,
                pragma.get_status(StatementStatus::RePrepare),
            ))
        })
        .unwrap();
    assert!(runs >= 50, "the one-statement path ran ({runs})");
    assert!(pragma_reprepared > 0);
    assert_eq!(reprepared, 0);
}

/// Issue 16: `incr` left the row's store time where the first store put it; diskcache's
/// moves it to now (least-recently-stored culling and `expire` see the increment).
#[test]
fn incr_refreshes_store_time() {
    let (_dir, clock, cache) = manual_cache(1000.0);
    assert_eq!(cache.incr(b"n", 1, Some(0)).unwrap(), 1);
    clock.advance(50.0);
    assert_eq!(cache.incr(b"n", 1, None).unwrap(), 2);
    let stored: f64 = cache
        .inner
        .read(|c| {
            Ok(c.query_row(
                "SELECT store_time FROM cache WHERE key = ?1",
                [&b"n"[..]],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(stored, 1050.0);
}

/// A write re-reads the settings only when `counters.settings_version` moved, and every
/// change moves it: a size limit changed by another handle (as another process would), by
/// `stats` and by raw SQL applies to this handle's very next write, and the settings row
/// is read again only after such a change.
#[test]
fn writes_see_every_settings_change_and_read_the_row_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::Cache::open(dir.path()).unwrap();
    let other = crate::Cache::open(dir.path()).unwrap();
    let version = |c: &crate::Cache| -> i64 {
        c.inner
            .read(|c| Ok(super::size_and_settings_version(c)?.1))
            .unwrap()
    };
    let set = |key: &[u8]| cache.set(key, &[1; 100], None, None).unwrap();
    set(b"a");
    set(b"b");
    let cached = || cache.inner.settings.lock().unwrap().1;
    assert_eq!(cached(), Some(version(&cache)), "known after a write");
    type Change = fn(&crate::Cache);
    let cases: [(&str, Change, usize); 5] = [
        (
            "limit 1 by another handle",
            |o| {
                o.configure(|s| s.size_limit = 1).unwrap();
            },
            1,
        ),
        (
            "limit back up by another handle",
            |o| {
                o.configure(|s| s.size_limit = 1 << 30).unwrap();
            },
            2,
        ),
        (
            "statistics by stats",
            |o| {
                o.stats(true, false).unwrap();
            },
            2,
        ),
        (
            "limit 1 by raw SQL",
            |o| {
                o.inner
                    .write(|c, _| Ok(c.execute("UPDATE settings SET size_limit = 1", [])?))
                    .unwrap();
            },
            1,
        ),
        (
            "cull_limit 0 by raw SQL (no cull)",
            |o| {
                o.inner
                    .write(|c, _| Ok(c.execute("UPDATE settings SET cull_limit = 0", [])?))
                    .unwrap();
            },
            2,
        ),
    ];
    for (what, change, rows) in cases {
        let before = version(&cache);
        change(&other);
        assert!(version(&cache) > before, "{what}: the version moved");
        assert_ne!(cached(), Some(version(&cache)), "{what}: stale copy");
        set(b"a");
        set(b"b");
        assert_eq!(cache.len().unwrap() as usize, rows, "{what}");
        assert_eq!(cached(), Some(version(&cache)), "{what}: re-read once");
    }
    assert!(cache.settings().statistics);
}

/// A `delete` of a live inline row outside a transaction is one statement that is its own
/// transaction (no `BEGIN`, so no statement journal); inside `transact` it joins the
/// transaction and rolls back with it; a copy in the memory layer is never served after it.
#[test]
fn a_lone_delete_is_its_own_transaction_and_joins_an_open_one() {
    let (_dir, _clock, cache) = manual_cache(1000.0);
    let begins = || {
        cache
            .inner
            .read(|c| {
                super::prepared::with(c, super::Hot::Begin, |s| {
                    Ok(s.get_status(StatementStatus::Run))
                })
            })
            .unwrap()
    };
    for i in 0..10u32 {
        cache.set(&i.to_be_bytes(), b"v", None, None).unwrap();
        assert_eq!(
            cache.get(&i.to_be_bytes()).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    let before = begins();
    for i in 0..5u32 {
        assert!(cache.delete(&i.to_be_bytes()).unwrap());
        assert_eq!(cache.get(&i.to_be_bytes()).unwrap(), None, "key {i}");
    }
    assert_eq!(begins(), before, "no BEGIN for a lone delete");
    let rolled_back: crate::Result<()> = cache.transact(|tx| {
        assert!(tx.delete(&5u32.to_be_bytes())?);
        assert!(cache.delete(&6u32.to_be_bytes())?, "joins the transaction");
        assert_eq!(cache.get(&6u32.to_be_bytes())?, None, "seen inside it");
        Err(crate::Error::KeyNotFound)
    });
    assert!(rolled_back.is_err());
    for i in 5..10u32 {
        assert_eq!(
            cache.get(&i.to_be_bytes()).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    assert_eq!(cache.len().unwrap(), 5);
    assert!(cache.check(false).unwrap().is_empty());
}

/// The counters row equals the rows' count and sizes.
fn assert_counters_exact(cache: &crate::Cache, what: &str) {
    let (count, size, rows, sum): (i64, i64, i64, i64) = cache
        .inner
        .read(|c| {
            Ok(c.query_row(
                "SELECT count, size, (SELECT count(*) FROM cache), \
                 (SELECT total(size) FROM cache) FROM counters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, f64>(3)? as i64)),
            )?)
        })
        .unwrap();
    assert_eq!((count, size), (rows, sum), "{what}");
}

/// Inside a write transaction on a pooled connection, right after a write: the counters
/// its pin remembered are the row as it is.
fn assert_remembered_counters_exact(cache: &crate::Cache, what: &str) {
    let (known, actual) = cache
        .inner
        .read(|c| {
            let pin = super::prepared::pin_of(c).expect("a pooled connection");
            Ok((
                pin.counters_after(c, 0, 0),
                super::size_and_settings_version(c)?,
            ))
        })
        .unwrap();
    assert_eq!(known, Some(actual), "{what}");
}

/// Issue 18: a new row is one statement (no replace probe, no old-row SELECT) whose only
/// other change is its insert trigger's, so a run of new rows on a pinned connection reads
/// the counters row at most once; replacements in place between them keep it known. What
/// the pin remembers is the counters row as it is after every write, also when another
/// handle committed in between (then it is read again).
#[test]
fn new_rows_are_one_statement_and_read_the_counters_once() {
    let (dir, _clock, cache) = manual_cache(1000.0);
    let run = |c: &rusqlite::Connection, which| {
        super::prepared::with(c, which, |s| Ok(s.get_status(StatementStatus::Run)))
    };
    let runs = || {
        cache.inner.read(|c| {
            Ok((
                run(c, super::Hot::Upsert)?,
                run(c, super::Hot::SizeAndSettingsVersion)?,
            ))
        })
    };
    let (upserts, counter_reads) = cache
        .transact(|_| {
            let before = runs()?;
            for i in 0..60u32 {
                cache.set(&i.to_be_bytes(), b"new", None, None)?;
                if i % 10 == 0 {
                    cache.set(&i.to_be_bytes(), b"old", None, None)?; // in place
                }
            }
            let after = runs()?;
            Ok((after.0 - before.0, after.1 - before.1))
        })
        .unwrap();
    // One statement per write; SQLite's run counter also counts the insert trigger's
    // program, which runs once per new row.
    assert_eq!(upserts, 60 * 2 + 6, "one statement per write");
    assert!(counter_reads <= 1, "counters read {counter_reads} times");
    assert_counters_exact(&cache, "after the new rows");
    assert_eq!(cache.len().unwrap(), 60);
    let other = crate::Cache::open(dir.path()).unwrap();
    let ours = |i: u32, value: &[u8]| {
        cache
            .transact(|_| {
                cache.set(&i.to_be_bytes(), value, None, None)?;
                assert_remembered_counters_exact(&cache, &format!("{i} {value:?}"));
                Ok(())
            })
            .unwrap()
    };
    for i in 100..120u32 {
        ours(i, b"new");
        ours(i, b"NEW"); // in place
        ours(i + 100, b"ours");
        other.set(&i.to_be_bytes(), b"theirs", None, None).unwrap(); // rewritten
        other
            .set(&(i + 200).to_be_bytes(), b"theirs", None, None)
            .unwrap();
    }
    assert_counters_exact(&cache, "after both handles");
    assert_eq!(other.len().unwrap(), 120);
}
