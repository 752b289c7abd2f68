//! [`Exposure`]: why another local account could read or replace what the store's directory
//! holds, and the modes the store gives what it creates. Plain data, the same on every
//! platform; `private` finds exposures (on Unix) and creates files with these modes.

use std::path::{Path, PathBuf};

/// Mode of every directory the store creates (Unix).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates (Unix).
pub const FILE_MODE: u32 = 0o600;

/// Why another account could read or replace what a directory holds.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let found: Vec<hoard_store::Exposure> = hoard_store::exposure(cache.directory())?;
/// for e in &found {
///     println!("{e:?}"); // e.g. a parent directory others may write
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Group or others may list or enter the directory, or read the file.
    Readable {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Group or others may create, rename or delete entries: the directory itself (sticky
    /// or not: others could create the names the store has yet to create), or a parent
    /// without the sticky bit (the whole directory could be swapped).
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by an account that is neither this one nor root, which can change its mode or
    /// contents at will.
    ForeignOwner {
        /// The directory or file.
        path: PathBuf,
        /// The owner's user id.
        uid: u32,
    },
}

impl Exposure {
    /// True when another account could replace the store's files (not just read them):
    /// a process should refuse to trust such a directory.
    pub fn is_replaceable(&self) -> bool {
        !matches!(self, Exposure::Readable { .. })
    }

    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            Exposure::Readable { path, .. }
            | Exposure::Writable { path, .. }
            | Exposure::ForeignOwner { path, .. } => path,
        }
    }
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exposure::Readable { path, mode } if *mode & 0o170000 == 0o040000 => write!(
                f,
                "{} is accessible to group/others (mode {:04o}): other local accounts can \
                 read what it holds; fix: chmod 700 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            Exposure::Readable { path, mode } => write!(
                f,
                "{} is readable by group/others (mode {:04o}); fix: chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            Exposure::Writable { path, mode } => write!(
                f,
                "{} is writable by group/others (mode {:04o}): another local account could \
                 replace its contents; fix: chmod go-w {} (or use a directory only you can write)",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            Exposure::ForeignOwner { path, uid } => write!(
                f,
                "{} is owned by uid {uid}, not by this user ({}) or root: that account could \
                 replace its contents; fix: use a directory you own (or chown it)",
                path.display(),
                crate::private::effective_uid()
            ),
        }
    }
}
