//! Injected write faults, for tests: make every write to one cache directory fail as a full
//! or read-only disk would, without filling a disk. Invariant: with no fault injected the
//! check is one relaxed atomic load, and without the `test-hooks` feature there is no check.

use std::io;
use std::path::Path;
#[cfg(feature = "test-hooks")]
use std::path::PathBuf;
#[cfg(feature = "test-hooks")]
use std::sync::Mutex;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether any fault is injected in this process (fast path for [`check`]).
#[cfg(feature = "test-hooks")]
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Directories whose writes fail, with the error they fail with.
#[cfg(feature = "test-hooks")]
static FAULTS: Mutex<Vec<(PathBuf, io::ErrorKind)>> = Mutex::new(Vec::new());

/// Makes every store write under `dir` (value files, inserts, head rewrites) fail with `kind`
/// in this process, for every [`Cache`](super::Cache) handle on that directory; `None`
/// lifts the fault. Reads, deletes and culling are unaffected. For tests of disk-full and
/// read-only behaviour; `dir` is compared as given to the builder.
#[cfg(feature = "test-hooks")]
pub fn inject_write_fault(dir: &Path, kind: Option<io::ErrorKind>) {
    let mut f = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    f.retain(|(d, _)| d != dir);
    if let Some(kind) = kind {
        f.push((dir.to_path_buf(), kind));
    }
    ACTIVE.store(!f.is_empty(), Ordering::Release);
}

/// Fails with the injected error if writes under `dir` are to fail.
#[cfg(feature = "test-hooks")]
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

/// Without `test-hooks` no fault can be injected.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn check(_dir: &Path) -> io::Result<()> {
    Ok(())
}
