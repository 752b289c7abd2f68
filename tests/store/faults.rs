//! Bad input and faults: missing/short files, undecodable rows, corrupt or newer databases.

use std::fs;
use std::io::Read;

use hoard::store::{Cache, Error};

use super::{open, raw, value_files};

const BIG: usize = 64 * 1024;

#[test]
fn missing_value_file_is_a_miss_and_the_row_is_removed() {
    for op in ["get", "record", "get_entry", "peekitem"] {
        let (dir, _c, cache) = open();
        cache.set(b"k", &[1; BIG], None, None).unwrap();
        fs::remove_file(&value_files(dir.path())[0]).unwrap();
        let hit = match op {
            "get" => cache.get(b"k").unwrap().is_some(),
            "record" => cache.record(b"k").unwrap().is_some(),
            "get_entry" => cache.get_entry(b"k").unwrap().is_some(),
            _ => cache.peekitem(false).unwrap().is_some(),
        };
        assert!(!hit, "{op}");
        assert_eq!(cache.len().unwrap(), 0, "{op}: row removed");
        assert!(cache.check(false).unwrap().is_empty(), "{op}");
    }
}

#[test]
fn short_value_file_is_a_miss_and_removed() {
    for op in ["get", "record"] {
        let (dir, _c, cache) = open();
        cache.set(b"k", &[1; BIG], None, None).unwrap();
        let f = value_files(dir.path()).remove(0);
        fs::write(&f, [1; 10]).unwrap();
        let hit = match op {
            "get" => cache.get(b"k").unwrap().is_some(),
            _ => cache.record(b"k").unwrap().is_some(),
        };
        assert!(!hit, "{op}");
        assert_eq!(cache.len().unwrap(), 0);
        assert!(
            value_files(dir.path()).is_empty(),
            "{op}: short file unlinked"
        );
    }
}

#[test]
fn file_truncated_while_streaming_is_unexpected_eof() {
    let (dir, _c, cache) = open();
    cache.set(b"k", &[1; BIG], None, None).unwrap();
    let rec = cache.record(b"k").unwrap().unwrap();
    let f = value_files(dir.path()).remove(0);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(100)
        .unwrap();
    let mut out = Vec::new();
    let err = rec.into_reader().read_to_end(&mut out).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn undecodable_rows_are_misses_not_panics() {
    let breakages = [
        "UPDATE cache SET mode = 99",
        "UPDATE cache SET value = NULL",
        "UPDATE cache SET store_time = 'yesterday'",
        "UPDATE cache SET size = -5",
        "UPDATE cache SET mode = 2, filename = '../../etc/passwd'",
        "UPDATE cache SET value = 42",
    ];
    for sql in breakages {
        let (dir, _c, cache) = open();
        cache.set(b"k", b"value", None, None).unwrap();
        raw(dir.path()).execute(sql, []).unwrap();
        assert_eq!(cache.get(b"k").unwrap(), None, "{sql}");
        assert!(cache.record(b"k").unwrap().is_none(), "{sql}");
        cache.set(b"k", b"again", None, None).unwrap();
        assert_eq!(cache.get(b"k").unwrap().unwrap(), b"again", "{sql}");
    }
}

#[test]
fn check_finds_and_fixes_problems() {
    let (dir, _c, cache) = open();
    cache.set(b"a", &[1; BIG], None, None).unwrap();
    cache.set(b"b", &[2; BIG], None, None).unwrap();
    cache.set(b"c", b"inline", None, None).unwrap();
    assert!(cache.check(false).unwrap().is_empty());
    let files = value_files(dir.path());
    // 1. a row's file goes missing; 2. an orphan file; 3. counters drift; 4. old temp file.
    fs::remove_file(&files[0]).unwrap();
    let orphan = dir.path().join("ab/cd/orphan.val");
    fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    fs::write(&orphan, b"x").unwrap();
    raw(dir.path())
        .execute("UPDATE counters SET count = count + 7", [])
        .unwrap();
    fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let tmp = dir.path().join("tmp/dead.tmp");
    // 5. what a process killed while creating cache.gen leaves.
    let gen_tmp = dir.path().join("cache.gen.tmp-1-00");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    for f in [&tmp, &gen_tmp] {
        fs::write(f, b"x").unwrap();
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    let problems = cache.check(false).unwrap();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("missing")));
    assert!(problems.iter().any(|p| p.contains("orphan")));
    assert!(problems.iter().any(|p| p.contains("counters")));
    assert!(problems.iter().any(|p| p.contains("temporary")));
    assert_eq!(cache.check(true).unwrap().len(), 5);
    assert!(cache.check(false).unwrap().is_empty());
    assert_eq!(cache.len().unwrap(), 2);
    assert!(!orphan.exists());
    assert!(!tmp.exists());
    assert!(!gen_tmp.exists());
    assert!(dir.path().join("cache.gen").exists(), "the real one stays");
}

#[test]
fn not_a_database_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cache.db"), vec![b'x'; 8192]).unwrap();
    match Cache::open(dir.path()) {
        Err(Error::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn newer_schema_is_refused_with_a_clear_error() {
    let (dir, _c, cache) = open();
    drop(cache);
    raw(dir.path())
        .pragma_update(None, "user_version", 1000)
        .unwrap();
    let err = Cache::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::NewerSchema { found: 1000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("1000"));
}

#[test]
fn reopening_an_existing_cache_keeps_data() {
    let (dir, _c, cache) = open();
    cache.set(b"k", b"v", None, None).unwrap();
    drop(cache);
    let again = Cache::open(dir.path()).unwrap();
    assert_eq!(again.get(b"k").unwrap().unwrap(), b"v");
}
