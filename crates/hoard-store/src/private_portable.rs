//! The portable stand-in for `private` where there are no Unix modes and owners (non-Unix
//! targets, or Unix built with `--cfg hoard_store_portable` to test this file): files and
//! directories are created with the platform's defaults and nothing is reported exposed.
//!
//! Invariant: the same crate API as `private`, so the rest of the store does not know which
//! one it runs on; only what cannot be expressed without Unix modes is left out.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub use crate::exposure::{DIR_MODE, Exposure, FILE_MODE};

/// The effective user id of this process: 0, as there are no Unix user ids.
pub fn effective_uid() -> u32 {
    0
}

/// `fs::create_dir_all` (no modes to give).
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Creates `path`, failing if it exists.
pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Creates `path` empty unless it exists.
pub(crate) fn precreate_file(path: &Path) -> io::Result<()> {
    match create_new_file(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Nothing to tighten: returns false.
pub(crate) fn tighten_own_file(_path: &Path) -> io::Result<bool> {
    Ok(false)
}

/// Nothing to tighten: returns false.
pub(crate) fn tighten_own_dir(_dir: &Path) -> io::Result<bool> {
    Ok(false)
}

/// Nothing to tighten: returns false.
pub(crate) fn tighten_own(_path: &Path) -> io::Result<bool> {
    Ok(false)
}

/// No entry is "wide" without Unix modes.
pub(crate) fn wide_entries(_dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(Vec::new())
}

/// Without Unix modes and owners nothing is reported (see `private` on Unix).
pub fn exposure_of(_dir: &Path, _names: &[&str]) -> io::Result<Vec<Exposure>> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_what_the_store_needs() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        precreate_file(&nested.join("db")).unwrap();
        precreate_file(&nested.join("db")).unwrap(); // exists: fine
        assert!(create_new_file(&nested.join("db")).is_err());
        assert!(exposure_of(&nested, &["db"]).unwrap().is_empty());
    }
}
