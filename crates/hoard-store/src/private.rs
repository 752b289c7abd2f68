//! Private files: whatever the store creates is its owner's alone (directories 0700, files
//! 0600, whatever the umask), and [`exposure`] says who else could read or replace a directory.
//!
//! Invariants:
//! - Modes are given to `mkdir`/`open` themselves, so nothing the store creates is ever
//!   readable by another account, not even briefly; a umask can only narrow them, and when it
//!   narrowed the owner's own bits they are set back to exactly 0700/0600.
//! - `cache.db` is created 0600 before SQLite opens it. SQLite creates `-wal` and `-shm`
//!   itself with the mode of the database file (and `fchmod`s a new one to exactly that when
//!   the umask narrowed it), so they are 0600 in every process without touching the
//!   process-wide umask, which other threads creating files at the same moment rely on.
//! - An existing directory's mode is never changed by opening it (it may be one the user
//!   chose and shares on purpose); the files named by the store inside it (`cache.db`, its
//!   `-wal` and `-shm`, `cache.gen`) are tightened when this account owns them.
//!   [`Cache::check`](super::Cache::check) reports the directory and, with `fix`, tightens it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub use crate::exposure::{DIR_MODE, Exposure, FILE_MODE};

/// Group and others may read, enter or list.
const GROUP_OTHER: u32 = 0o077;
/// Group and others may write (create, rename, delete entries of a directory).
const GROUP_OTHER_WRITE: u32 = 0o022;
/// Only the owner of an entry may rename or delete it.
const STICKY: u32 = 0o1000;

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets `path`'s permission bits to exactly `mode` unless they already are.
fn exact_mode(path: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<()> {
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `fs::create_dir_all` with every directory it creates made 0700. Directories that
/// already exist keep their mode.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => exact_mode(path, &fs::metadata(path)?, DIR_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a new file (failing if the name exists) with mode 0600, open for writing.
pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Creates `path` empty with mode 0600 if it does not exist (an empty file is a new
/// database to SQLite); an existing file is left as it is.
pub(crate) fn precreate_file(path: &Path) -> io::Result<()> {
    match create_new_file(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Narrows a file this account owns to 0600 when group or others have any access; files
/// that are missing or owned by someone else are left alone ([`exposure`] reports them).
/// Returns whether it changed the mode.
pub(crate) fn tighten_own_file(path: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.uid() != effective_uid() || meta.mode() & GROUP_OTHER == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
    Ok(true)
}

/// Whether `uid` may own the path of something this process trusts.
fn trusted_owner(uid: u32) -> bool {
    uid == effective_uid() || uid == 0
}

/// What exposes `dir` and its files to other local accounts:
/// - `dir` itself: owned by another account (not root), writable by group/others, or
///   accessible to them;
/// - every parent (of the path as given and of the path it resolves to): owned by another
///   account (not root), or writable by group/others without the sticky bit (`/tmp` is fine);
/// - `names` inside `dir` (files the caller creates there): owned by another account, or
///   readable by group/others.
///
/// A `dir` that does not exist yet is judged by its parents only (the store creates it 0700).
pub fn exposure_of(dir: &Path, names: &[&str]) -> io::Result<Vec<Exposure>> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let mut found = Vec::new();
    let mut push = |e: Exposure| {
        if !found.contains(&e) {
            found.push(e);
        }
    };
    let mut parents: Vec<PathBuf> = prefixes(&abs);
    let exists = abs.is_dir();
    if exists {
        parents.pop(); // `dir` itself is judged below, more strictly
        let canonical = fs::canonicalize(&abs)?;
        let mut more = prefixes(&canonical);
        more.pop();
        parents.extend(more);
    }
    for p in parents {
        let Ok(m) = fs::metadata(&p) else { continue };
        if !trusted_owner(m.uid()) {
            push(Exposure::ForeignOwner {
                path: p,
                uid: m.uid(),
            });
        } else if m.mode() & GROUP_OTHER_WRITE != 0 && m.mode() & STICKY == 0 {
            push(Exposure::Writable {
                path: p,
                mode: m.mode(),
            });
        }
    }
    if !exists {
        return Ok(found);
    }
    let m = fs::metadata(&abs)?;
    if !trusted_owner(m.uid()) {
        push(Exposure::ForeignOwner {
            path: abs.clone(),
            uid: m.uid(),
        });
    }
    if m.mode() & GROUP_OTHER_WRITE != 0 {
        push(Exposure::Writable {
            path: abs.clone(),
            mode: m.mode(),
        });
    } else if m.mode() & GROUP_OTHER != 0 {
        push(Exposure::Readable {
            path: abs.clone(),
            mode: m.mode(),
        });
    }
    for name in names {
        let p = abs.join(name);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !trusted_owner(m.uid()) {
            push(Exposure::ForeignOwner {
                path: p,
                uid: m.uid(),
            });
        } else if m.is_file() && m.mode() & GROUP_OTHER != 0 {
            push(Exposure::Readable {
                path: p,
                mode: m.mode(),
            });
        }
    }
    Ok(found)
}

/// `/`, `/a`, `/a/b`, ... up to and including `path` (absolute, `..` resolved lexically).
fn prefixes(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                cur.pop();
                out.pop();
                continue;
            }
            Component::CurDir => continue,
            c => cur.push(c),
        }
        out.push(cur.clone());
    }
    out
}

/// Narrows `dir` to 0700 when this account owns it and group or others have any access.
/// Returns whether it changed the mode.
pub(crate) fn tighten_own_dir(dir: &Path) -> io::Result<bool> {
    let m = fs::metadata(dir)?;
    if m.uid() != effective_uid() || m.mode() & GROUP_OTHER == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    Ok(true)
}

/// Narrows a file (to 0600) or directory (to 0700) this account owns when group or others
/// have any access. Returns whether it changed the mode.
pub(crate) fn tighten_own(path: &Path) -> io::Result<bool> {
    if fs::symlink_metadata(path)?.is_dir() {
        tighten_own_dir(path)
    } else {
        tighten_own_file(path)
    }
}

/// Value files, temporary files and their directories (`ab/`, `ab/cd/`, `tmp/`) in `dir`
/// that group or others may access (left by earlier versions, or changed by hand).
pub(crate) fn wide_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn entries(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.path(), fs::symlink_metadata(e.path()).ok()?)))
            .collect()
    }
    let store_dir = |p: &Path| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n == super::files::TMP_DIR || (n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };
    let mut wide = Vec::new();
    let walk = |p: PathBuf, m: &fs::Metadata, wide: &mut Vec<PathBuf>| {
        if m.mode() & GROUP_OTHER != 0 && m.uid() == effective_uid() {
            wide.push(p);
        }
    };
    for (top, m) in entries(dir) {
        if !m.is_dir() || !store_dir(&top) {
            continue;
        }
        walk(top.clone(), &m, &mut wide);
        for (sub, m) in entries(&top) {
            walk(sub.clone(), &m, &mut wide);
            if m.is_dir() {
                for (f, m) in entries(&sub) {
                    walk(f, &m, &mut wide);
                }
            }
        }
    }
    Ok(wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_parent_components() {
        let p = prefixes(Path::new("/a/b/../c"));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/a"),
                PathBuf::from("/a/c")
            ]
        );
    }

    #[test]
    fn created_directories_are_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("x/y/z");
        create_dir_all(&d).unwrap();
        for p in [t.path().join("x"), t.path().join("x/y"), d.clone()] {
            assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, DIR_MODE, "{p:?}");
        }
        assert!(exposure_of(&d, &[]).unwrap().is_empty());
    }

    #[test]
    fn exposure_names_a_wide_directory_and_a_readable_file() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join("f"), b"").unwrap();
        fs::set_permissions(d.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = exposure_of(&d, &["f", "missing"]).unwrap();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|e| !e.is_replaceable()));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o775)).unwrap();
        let e = exposure_of(&d, &[]).unwrap();
        assert!(matches!(&e[..], [Exposure::Writable { .. }]), "{e:?}");
        assert!(tighten_own_dir(&d).unwrap());
        assert!(tighten_own_file(&d.join("f")).unwrap());
        assert!(exposure_of(&d, &["f"]).unwrap().is_empty());
    }
}
