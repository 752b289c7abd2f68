//! Injected write faults, for tests: make every write to one cache directory fail as a full
//! or read-only disk would, without filling a disk. Invariant: with no fault injected the
//! check is one relaxed atomic load.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether any fault is injected in this process (fast path for [`check`]).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Directories whose writes fail, with the error they fail with.
static FAULTS: Mutex<Vec<(PathBuf, io::ErrorKind)>> = Mutex::new(Vec::new());

/// Makes every store write under `dir` (value files, inserts, head rewrites) fail with `kind`
/// in this process, for every [`Cache`](super::Cache) handle on that directory; `None`
/// lifts the fault. Reads, deletes and culling are unaffected. For tests of disk-full and
/// read-only behaviour; `dir` is compared as given to the builder.
#[doc(hidden)]
pub fn inject_write_fault(dir: &Path, kind: Option<io::ErrorKind>) {
    let mut f = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    f.retain(|(d, _)| d != dir);
    if let Some(kind) = kind {
        f.push((dir.to_path_buf(), kind));
    }
    ACTIVE.store(!f.is_empty(), Ordering::Release);
}

/// Fails with the injected error if writes under `dir` are to fail.
pub(crate) fn check(dir: &Path) -> io::Result<()> {
    if !ACTIVE.load(Ordering::Acquire) {
        return Ok(());
    }
    let f = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    match f.iter().find(|(d, _)| d == dir) {
        Some((_, kind)) => Err(io::Error::new(*kind, "injected write fault")),
        None => Ok(()),
    }
}
