//! `cache.gen`'s formats across handles: a directory created now has the large table
//! (`GENERATION_SLOTS` counters), one created by an older version keeps its 65,536 and every
//! handle uses them; either way a write through one handle is seen at once by another's copy,
//! and only keys sharing a counter with the written one lose their copies.

use hoard::store::{Cache, GENERATION_SLOTS, LEGACY_GENERATION_SLOTS};

use super::{builder, raw};

/// Header bytes before the counters, in both formats.
const HEADER: usize = 64;

/// `cache.gen` as a version before the slot count was recorded wrote it.
fn write_legacy(dir: &std::path::Path) {
    let mut bytes = vec![0u8; HEADER + 8 * (LEGACY_GENERATION_SLOTS + 1)];
    bytes[..8].copy_from_slice(b"hoardgn1");
    std::fs::write(dir.join("cache.gen"), bytes).unwrap();
}

/// Two keys whose hashes share their low 16 bits (one counter of a legacy file) but not their
/// low 20 (two counters of a new one).
fn neighbours() -> (Vec<u8>, Vec<u8>) {
    let mut seen = std::collections::HashMap::new();
    for i in 0..1_000_000u32 {
        let k = format!("k{i}").into_bytes();
        let h = xxhash_rust::xxh3::xxh3_64(&k);
        if let Some(other) = seen.insert(h & 0xffff, k.clone()) {
            let ho = xxhash_rust::xxh3::xxh3_64(&other);
            if (ho ^ h) & 0xf_0000 != 0 {
                return (other, k);
            }
        }
    }
    unreachable!("a pair exists among a million keys")
}

/// Two handles (as two processes) on `dir`; `a` reads `near` into memory, the row is then
/// changed behind the store's back (raw SQL, no counter bump), and `b` writes `written`, a key
/// sharing `near`'s legacy counter. Returns what `a` reads for `near` then: the copy in memory
/// ("old") when its counter did not move, the row ("raw") when it did.
fn after_a_neighbours_write(dir: &std::path::Path) -> Vec<u8> {
    let (near, written) = neighbours();
    let a = Cache::open(dir).unwrap();
    let b = Cache::open(dir).unwrap();
    a.set(&near, b"old", None, None).unwrap();
    assert_eq!(a.get(&near).unwrap().as_deref(), Some(&b"old"[..]));
    raw(dir)
        .execute(
            "UPDATE cache SET value = ?1 WHERE key = ?2",
            rusqlite::params![&b"raw"[..], &near],
        )
        .unwrap();
    b.set(&written, b"w", None, None).unwrap();
    // And a write of the key itself through `b` is seen by `a` at once, in either layout.
    let seen = a.get(&near).unwrap().unwrap();
    b.set(&near, b"new", None, None).unwrap();
    assert_eq!(a.get(&near).unwrap().as_deref(), Some(&b"new"[..]));
    seen
}

#[test]
fn a_new_directory_gets_the_large_table_and_neighbours_keep_their_copies() {
    let (dir, _clock, b) = builder();
    drop(b.open().unwrap());
    let file = std::fs::read(dir.path().join("cache.gen")).unwrap();
    assert_eq!(&file[..8], b"hoardgn2");
    assert_eq!(
        u64::from_le_bytes(file[8..16].try_into().unwrap()),
        GENERATION_SLOTS as u64
    );
    assert_eq!(file.len(), HEADER + 8 * (GENERATION_SLOTS + 1));
    assert_eq!(
        after_a_neighbours_write(dir.path()),
        b"old",
        "a write of a key 2^16 apart in hash left the copy alone"
    );
}

/// Regression for the format change: a directory whose `cache.gen` an older version created
/// is opened with that file's 65,536 counters by every handle (never replaced: an older
/// process may have it mapped), so copies stay exact across them.
#[test]
fn a_legacy_file_is_kept_and_every_handle_uses_its_counters() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path());
    assert_eq!(
        after_a_neighbours_write(dir.path()),
        b"raw",
        "keys sharing a legacy counter invalidate each other's copies"
    );
    let file = std::fs::read(dir.path().join("cache.gen")).unwrap();
    assert_eq!(&file[..8], b"hoardgn1", "not rewritten");
    assert_eq!(file.len(), HEADER + 8 * (LEGACY_GENERATION_SLOTS + 1));
}

/// A `cache.gen` of a format this version does not know (a newer one) is never used or
/// rewritten: the handles keep no copies, so every read is the row.
#[test]
fn an_unknown_format_turns_the_copies_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; HEADER + 8 * (GENERATION_SLOTS + 1)];
    bytes[..8].copy_from_slice(b"hoardgn9");
    std::fs::write(dir.path().join("cache.gen"), &bytes).unwrap();
    let a = Cache::open(dir.path()).unwrap();
    assert_eq!(a.change_stamp(b"k"), None);
    a.set(b"k", b"old", None, None).unwrap();
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    raw(dir.path())
        .execute("UPDATE cache SET value = x'726177' WHERE key = x'6b'", [])
        .unwrap();
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"raw"[..]));
    assert_eq!(std::fs::read(dir.path().join("cache.gen")).unwrap(), bytes);
}
