//! Writes that fail for lack of room, for real and without root: a child process lowers
//! its own file size limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored), so a write that would
//! make a file larger than it fails with `EFBIG` (a write that straddles it is cut short
//! first), as a write on a full disk fails with `ENOSPC`. The child then exits without
//! closing the store, as a crash would; the parent reopens it without the limit (SQLite
//! recovers the WAL) and checks what the child's writes left.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use hoard_store::Cache;

const CHILD_ENV: &str = "HOARD_STORE_TEST_FSIZE_DIR";

/// Room left above the store's files when the child lowers its limit.
const HEADROOM: u64 = 1 << 20;

fn value(i: u32) -> Vec<u8> {
    format!("{i:08}").repeat(128).into_bytes() // 1 KiB, distinct per key
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// The size limit the child sets: the largest of the store's files now, plus [`HEADROOM`].
fn limit_for(dir: &Path) -> u64 {
    let largest = ["cache.db", "cache.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    largest + HEADROOM
}

/// Child side of [`a_full_disk_fails_writes_and_loses_nothing_acknowledged`]; a no-op as
/// a normal test. Prints one line per outcome.
#[test]
fn full_disk_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let cache = Cache::open(dir).unwrap();
    let limit = limit_for(dir);
    // SAFETY: ignoring a signal and lowering this process's own soft limit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut rl: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut rl), 0);
        rl.rlim_cur = limit as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rl), 0);
    }
    println!("limit {limit}");
    // A value file larger than the limit: its write fails before any row is written.
    let big = vec![5u8; 2 * HEADROOM as usize];
    match cache.set(b"big", &big, None, None) {
        Ok(()) => println!("big: stored"),
        Err(e) => println!("big: failed unwritable={} {e}", e.is_unwritable()),
    }
    // A transaction of sets whose pages alone are over the limit: all or nothing.
    let tx = cache.transact(|tx| {
        for j in 0..50u32 {
            tx.set(format!("tx-{j}").as_bytes(), &[7u8; 30_000], None, None)?;
        }
        Ok(())
    });
    match tx {
        Ok(()) => println!("tx: stored"),
        Err(e) => println!("tx: failed unwritable={} {e}", e.is_unwritable()),
    }
    // Single sets until one fails.
    for i in 0..100_000u32 {
        match cache.set(&key(i), &value(i), None, None) {
            Ok(()) => println!("set ok: {i}"),
            Err(e) => {
                println!("set failed: {i} unwritable={} {e}", e.is_unwritable());
                // Not visible to this process either.
                println!("visible: {}", cache.get(&key(i)).unwrap().is_some());
                break;
            }
        }
    }
    println!("done.");
    // Gone without closing, as a crash would leave it: the parent's open recovers the WAL,
    // with the failed writes' frames past its last commit.
    std::process::exit(0);
}

#[test]
fn a_full_disk_fails_writes_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    Cache::open(dir)
        .unwrap()
        .set(b"before", b"v", None, None)
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "full_disk_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait().unwrap();
    let report = lines.join("\n");
    assert!(status.success(), "the child panicked or failed:\n{report}");
    // libtest may print "test full_disk_child ... " before a line: take what follows.
    let said = |prefix: &str| -> Option<String> {
        lines
            .iter()
            .find_map(|l| l.find(prefix).map(|at| l[at + prefix.len()..].to_string()))
    };
    assert!(said("done.").is_some(), "{report}");
    assert!(
        said("big: failed unwritable=true").is_some(),
        "a value file over the limit fails: {report}"
    );
    assert!(
        said("tx: failed unwritable=true").is_some(),
        "a transaction over the limit fails: {report}"
    );
    let failed: u32 = said("set failed: ")
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a single set failed");
    assert!(
        said(&format!("set failed: {failed} unwritable=true")).is_some(),
        "{report}"
    );
    assert_eq!(said("visible: ").as_deref(), Some("false"), "{report}");
    let acknowledged: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.split("set ok: ").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(
        acknowledged,
        (0..failed).collect::<Vec<_>>(),
        "every set before the failing one was acknowledged, in order"
    );
    assert!(failed >= 10, "the limit left room for some sets ({failed})");

    let wal = std::fs::metadata(dir.join("cache.db-wal")).map_or(0, |m| m.len());
    assert!(wal > 0, "the child left its WAL to recover");

    // Reopened without the limit: every acknowledged set is there with its value, nothing
    // of the failed ones is, and the store is undamaged.
    let cache = Cache::open(dir).unwrap();
    assert_eq!(cache.get(b"before").unwrap().as_deref(), Some(&b"v"[..]));
    for i in 0..failed {
        assert_eq!(cache.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(cache.get(&key(failed)).unwrap(), None, "the failed set");
    assert_eq!(cache.get(b"big").unwrap(), None, "the failed value file");
    for j in 0..50 {
        assert_eq!(
            cache.get(format!("tx-{j}").as_bytes()).unwrap(),
            None,
            "tx-{j}"
        );
    }
    assert_eq!(cache.len().unwrap(), u64::from(failed) + 1);
    assert_eq!(cache.check(false).unwrap(), Vec::<String>::new());
    // And writes work again, value files and transactions included.
    cache.set(&key(failed), &value(failed), None, None).unwrap();
    cache
        .set(b"big", &vec![5u8; 2 * HEADROOM as usize], None, None)
        .unwrap();
    cache
        .transact(|tx| tx.set(b"tx-0", &[7u8; 30_000], None, None))
        .unwrap();
    assert_eq!(cache.get(&key(failed)).unwrap(), Some(value(failed)));
    assert_eq!(
        cache.get(b"big").unwrap().map(|v| v.len()),
        Some(2 * HEADROOM as usize)
    );
    assert_eq!(cache.get(b"tx-0").unwrap().map(|v| v.len()), Some(30_000));
    assert_eq!(cache.check(false).unwrap(), Vec::<String>::new());
}
