//! Values at or above `min_file_size`: files, streaming reads and writes, abandoned writes.

use std::io::{Read, Write};

use hoard::store::{Cache, Value};

use super::{builder, open, temp_files, value_files};

const BIG: usize = 100 * 1024;

fn big(seed: u8) -> Vec<u8> {
    (0..BIG)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn large_values_live_in_two_level_files() {
    let (dir, _c, cache) = open();
    cache.set(b"big", &big(1), None, None).unwrap();
    cache.set(b"small", &[1; 100], None, None).unwrap();
    let files = value_files(dir.path());
    assert_eq!(files.len(), 1);
    let rel = files[0].strip_prefix(dir.path()).unwrap();
    let parts: Vec<_> = rel.iter().collect();
    assert_eq!(parts.len(), 3, "ab/cd/name.val: {rel:?}");
    assert_eq!(cache.get(b"big").unwrap().unwrap(), big(1));
    assert!(cache.delete(b"big").unwrap());
    assert!(value_files(dir.path()).is_empty(), "unlinked after delete");
    assert_eq!(temp_files(dir.path()), 0);
}

#[test]
fn replacing_a_file_value_removes_the_old_file() {
    let (dir, _c, cache) = open();
    cache.set(b"k", &big(1), None, None).unwrap();
    cache.set(b"k", &big(2), None, None).unwrap();
    assert_eq!(value_files(dir.path()).len(), 1);
    cache.set(b"k", b"small now", None, None).unwrap();
    assert!(value_files(dir.path()).is_empty());
    assert_eq!(cache.get(b"k").unwrap().unwrap(), b"small now");
}

#[test]
fn min_file_size_boundary() {
    let (dir, _c, b) = builder();
    let cache = b.min_file_size(10).open().unwrap();
    cache.set(b"nine", &[0; 9], None, None).unwrap();
    assert!(value_files(dir.path()).is_empty());
    cache.set(b"ten", &[0; 10], None, None).unwrap();
    assert_eq!(value_files(dir.path()).len(), 1);
}

#[test]
fn writer_streams_to_a_file_and_record_streams_back() {
    let (dir, _c, cache) = open();
    let mut w = cache.writer(b"stream", super::secs(60), Some("t")).unwrap();
    w.set_meta(b"head".to_vec());
    let chunk = [42u8; 8192];
    for _ in 0..128 {
        w.write_all(&chunk).unwrap();
    }
    assert_eq!(w.written(), 1 << 20);
    assert_eq!(temp_files(dir.path()), 1, "spilled to a temp file");
    assert!(
        cache.record(b"stream").unwrap().is_none(),
        "invisible before commit"
    );
    assert_eq!(w.commit().unwrap(), 1 << 20);
    assert_eq!(temp_files(dir.path()), 0);
    let rec = cache.record(b"stream").unwrap().unwrap();
    assert_eq!(rec.meta, b"head");
    assert_eq!(rec.tag.as_deref(), Some("t"));
    assert!(matches!(rec.value, Value::File { len, .. } if len == 1 << 20));
    let mut r = rec.into_reader();
    assert_eq!(r.len(), 1 << 20);
    let mut n = 0u64;
    let mut buf = [0u8; 10_000];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        assert!(buf[..k].iter().all(|&b| b == 42));
        n += k as u64;
    }
    assert_eq!(n, 1 << 20);
}

#[test]
fn small_writer_stays_inline() {
    let (dir, _c, cache) = open();
    let mut w = cache.writer(b"s", None, None).unwrap();
    w.write_all(b"hello").unwrap();
    w.commit().unwrap();
    assert!(value_files(dir.path()).is_empty());
    assert_eq!(temp_files(dir.path()), 0);
    let rec = cache.record(b"s").unwrap().unwrap();
    assert!(matches!(rec.value, Value::Inline(ref v) if v == b"hello"));
}

#[test]
fn abandoned_writer_leaves_no_row_and_no_file() {
    let (dir, _c, cache) = open();
    let mut w = cache.writer(b"k", None, None).unwrap();
    w.write_all(&big(3)).unwrap();
    assert_eq!(temp_files(dir.path()), 1);
    drop(w);
    assert_eq!(temp_files(dir.path()), 0);
    assert!(value_files(dir.path()).is_empty());
    assert_eq!(cache.len().unwrap(), 0);
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn set_reader_stores_everything_and_failing_reader_stores_nothing() {
    let (dir, _c, cache) = open();
    let data = big(4);
    assert_eq!(
        cache.set_reader(b"r", &data[..], None, None).unwrap(),
        BIG as u64
    );
    assert_eq!(cache.get(b"r").unwrap().unwrap(), data);

    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("upstream reset"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
    }
    assert!(cache.set_reader(b"f", Failing(BIG), None, None).is_err());
    assert!(!cache.contains(b"f").unwrap());
    assert_eq!(value_files(dir.path()).len(), 1);
    assert_eq!(temp_files(dir.path()), 0);
}

#[test]
fn open_record_survives_concurrent_delete() {
    let (_dir, _c, cache) = open();
    cache.set(b"k", &big(5), None, None).unwrap();
    let rec = cache.record(b"k").unwrap().unwrap();
    let other = Cache::open(cache.directory()).unwrap();
    assert!(other.delete(b"k").unwrap());
    let mut out = Vec::new();
    rec.into_reader().read_to_end(&mut out).unwrap();
    assert_eq!(out, big(5));
}

#[test]
fn rolled_back_transaction_removes_its_files() {
    let (dir, _c, cache) = open();
    let r: hoard::store::Result<()> = cache.transact(|tx| {
        tx.set(b"a", &big(1), None, None)?;
        tx.set(b"b", &big(2), None, None)?;
        Err(hoard::store::Error::Timeout)
    });
    assert!(r.is_err());
    assert!(value_files(dir.path()).is_empty());
    assert_eq!(temp_files(dir.path()), 0);
    assert_eq!(cache.len().unwrap(), 0);
}

#[test]
fn pop_and_clear_remove_files() {
    let (dir, _c, cache) = open();
    cache.set(b"a", &big(1), None, None).unwrap();
    cache.set(b"b", &big(2), None, Some("t")).unwrap();
    cache.set(b"c", &big(3), None, None).unwrap();
    assert_eq!(cache.pop(b"a").unwrap().unwrap(), big(1));
    assert_eq!(cache.evict("t").unwrap(), 1);
    assert_eq!(value_files(dir.path()).len(), 1);
    assert_eq!(cache.clear().unwrap(), 1);
    assert!(value_files(dir.path()).is_empty());
}

#[test]
fn emptied_value_directories_are_removed() {
    let (dir, _c, cache) = open();
    for i in 0..20u8 {
        cache.set(&[i], &[i; 40 << 10], None, None).unwrap();
    }
    let dirs = |p: &std::path::Path| {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != "tmp")
            .count()
    };
    assert!(dirs(dir.path()) > 0);
    for i in 0..20u8 {
        cache.delete(&[i]).unwrap();
    }
    assert_eq!(dirs(dir.path()), 0, "no empty ab/ directories left");
    // And writing again recreates them.
    cache.set(b"again", &[1; 40 << 10], None, None).unwrap();
    assert_eq!(cache.get(b"again").unwrap().unwrap().len(), 40 << 10);
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn opening_removes_temporary_files_abandoned_by_killed_writers() {
    let dir = tempfile::tempdir().unwrap();
    drop(Cache::open(dir.path()).unwrap());
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let old = dir.path().join("tmp/killed-writer.tmp");
    let live = dir.path().join("tmp/live-writer.tmp");
    let gen_tmp = dir.path().join("cache.gen.tmp-7-00");
    for f in [&old, &live, &gen_tmp] {
        std::fs::write(f, b"partial").unwrap();
    }
    let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    for f in [&old, &gen_tmp] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
    }
    let _c = Cache::open(dir.path()).unwrap();
    assert!(!old.exists() && !gen_tmp.exists());
    assert!(
        live.exists(),
        "a file written to recently may belong to a live writer"
    );
}
