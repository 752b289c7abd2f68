//! Corruption: a `cache.db` of garbage is moved aside (timestamped) and recreated when the
//! caller opted in (the proxy does; the library alone reports `Error::Corrupt`), and a stored
//! entry head that does not decode is a miss and is replaced.

use std::fs;
use std::path::Path;

use hoard::store::{Cache, Error};

use crate::proxy::harness::{Origin, full, get, start_proxy_in, wait_stored};
use crate::store::value_files;

fn aside_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

/// A store with one inline and one file value, then `cache.db` overwritten with garbage.
fn garbage_db() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Cache::open(dir.path()).unwrap();
        c.set(b"small", b"v", None, None).unwrap();
        c.set(b"big", &[7; 64 << 10], None, None).unwrap();
    }
    assert_eq!(value_files(dir.path()).len(), 1);
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(dir.path().join("cache.db"), garbage).unwrap();
    dir
}

#[test]
fn garbage_database_is_an_error_unless_recovery_was_asked_for() {
    let dir = garbage_db();
    match Cache::open(dir.path()) {
        Err(Error::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        aside_files(dir.path()).is_empty(),
        "nothing moved without opt-in"
    );
    let c = Cache::builder(dir.path())
        .recover_corrupt(true)
        .open()
        .unwrap();
    assert_eq!(c.len().unwrap(), 0);
    let aside = aside_files(dir.path());
    assert!(
        aside.iter().any(|n| n.starts_with("cache.db.corrupt-")),
        "{aside:?}"
    );
    let stamp: u64 = aside[0].rsplit('-').next().unwrap().parse().unwrap();
    assert!(stamp > 1_700_000_000, "a unix timestamp: {stamp}");
    assert!(
        value_files(dir.path()).is_empty(),
        "orphan value files removed"
    );
    c.set(b"k", b"v", None, None).unwrap();
    assert_eq!(c.get(b"k").unwrap().unwrap(), b"v");
    assert!(c.check(false).unwrap().is_empty());
    // A healthy database is never moved aside.
    drop(c);
    Cache::builder(dir.path())
        .recover_corrupt(true)
        .open()
        .unwrap();
    assert_eq!(aside_files(dir.path()), aside);
}

#[test]
fn database_with_a_damaged_schema_page_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    drop(Cache::open(dir.path()).unwrap());
    let db = dir.path().join("cache.db");
    let mut bytes = fs::read(&db).unwrap();
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    // Keep the 100-byte header, smash the rest of page 1 (the schema b-tree).
    for (i, b) in bytes.iter_mut().enumerate().take(4096).skip(100) {
        *b = (i * 13 % 256) as u8;
    }
    fs::write(&db, bytes).unwrap();
    let _ = fs::remove_file(dir.path().join("cache.db-wal"));
    let _ = fs::remove_file(dir.path().join("cache.db-shm"));
    assert!(matches!(Cache::open(dir.path()), Err(Error::Corrupt(_))));
    let c = Cache::builder(dir.path())
        .recover_corrupt(true)
        .open()
        .unwrap();
    c.set(b"k", b"v", None, None).unwrap();
    let aside = aside_files(dir.path());
    assert!(
        aside.iter().any(|n| n.starts_with("cache.db.corrupt-")),
        "{aside:?}"
    );
}

async fn origin() -> Origin {
    Origin::start(|req| {
        let body = format!("body of {}", req.uri().path());
        http::Response::builder()
            .header("cache-control", "max-age=3600")
            .body(full(body))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn proxy_recovers_from_a_garbage_database() {
    let dir = garbage_db();
    let origin = origin().await;
    let (_h, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    assert!(
        aside_files(dir.path())
            .iter()
            .any(|n| n.starts_with("cache.db.corrupt-"))
    );
    let url = origin.url("/x");
    let r = get(proxy, &url).await;
    assert_eq!(r.text(), "body of /x");
    wait_stored(proxy, &url).await;
    get(proxy, &url).await.cache_status().assert_hit();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn corrupt_entry_head_is_a_miss_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin().await;
    let (_h, proxy) = start_proxy_in(dir.path(), None, |c| c.memory_cache_size = 0).await;
    let url = origin.url("/head");
    get(proxy, &url).await;
    wait_stored(proxy, &url).await;
    assert_eq!(origin.hits(), 1);
    let raw = crate::store::raw(dir.path());
    let key = hoard::http_cache::cache_key(&http::Method::GET, &url.parse().unwrap()).unwrap();
    for garbage in [&b""[..], b"\x02", b"\x02\x01\xff\xff\xff", b"\x09garbage"] {
        let n = raw
            .execute(
                "UPDATE cache SET meta = ?1, size = length(key) + ?2 + length(value) \
                 WHERE key = ?3",
                rusqlite::params![garbage, garbage.len() as i64, key.as_bytes()],
            )
            .unwrap();
        assert_eq!(n, 1);
        let before = origin.hits();
        let r = get(proxy, &url).await;
        assert_eq!(r.text(), "body of /head");
        assert!(!r.cache_status().hit, "{garbage:?}: a miss");
        assert_eq!(origin.hits(), before + 1);
        wait_stored(proxy, &url).await;
        get(proxy, &url).await.cache_status().assert_hit();
    }
    let c = Cache::open(dir.path()).unwrap();
    assert!(c.check(false).unwrap().is_empty());
}
