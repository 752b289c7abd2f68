//! The store's single error type. Every fallible store operation returns [`Result`].
//!
//! Invariant: SQLite's `DatabaseCorrupt` and `NotADatabase` never surface as
//! [`Error::Sqlite`]; they are mapped to [`Error::Corrupt`] so callers can react to
//! corruption (e.g. by clearing the directory) with one match arm.

use rusqlite::ErrorCode;

/// Result of every store operation.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// fn stored(cache: &hoard_store::Cache) -> hoard_store::Result<bool> {
///     cache.contains(b"k")
/// }
/// assert!(!stored(&hoard_store::Cache::open(dir.path())?)?);
/// # Ok(())
/// # }
/// ```
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the store.
///
/// ```
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// match cache.incr(b"missing", 1, None) {
///     Err(hoard_store::Error::KeyNotFound) => {}
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file or a value file is damaged or not a database.
    #[error("cache store is corrupt: {0}")]
    Corrupt(String),
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[source] SqliteError),
    /// Filesystem error (value files, directories).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The database was written by a newer hoard with a schema this build does not know.
    #[error("cache database has schema version {found}, this build supports up to {supported}")]
    NewerSchema {
        /// `PRAGMA user_version` found in the database.
        found: i64,
        /// Highest schema version this build can use.
        supported: i64,
    },
    /// The database stayed locked by other writers longer than the retry budget,
    /// or a [`Lock`](super::Lock) could not be acquired in time.
    #[error("timed out waiting for the cache database or lock")]
    Timeout,
    /// `incr`/`decr` on a missing key without a default.
    #[error("key not found")]
    KeyNotFound,
    /// `incr`/`decr` on a value that is not a decimal `i64`, or an overflow.
    #[error("value is not an integer (or the result overflows i64)")]
    NotAnInteger,
    /// A typed value could not be encoded by its [`Codec`](crate::Codec).
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// Stored bytes are not a value of the type asked for (wrong type, unknown format
    /// byte, damaged bytes, or zstd-compressed without the `zstd` feature).
    #[error("cannot decode value: {0}")]
    Decode(String),
    /// A recipe's `release` by a caller that does not hold it: an [`RLock`](crate::RLock)
    /// not held by this process and thread, or a [`BoundedSemaphore`](crate::BoundedSemaphore)
    /// released more often than acquired (diskcache's `AssertionError`).
    #[error("cannot release {0}: not acquired")]
    NotAcquired(&'static str),
    /// A setting read from the database or given by the caller is invalid.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// An SQLite error other than corruption, opaque so that the SQLite binding is not part of
/// the store's API: it displays SQLite's message and tells its result code.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir(dir.path().join("cache.db"))?; // a directory where the database goes
/// match hoard_store::Cache::open(dir.path()) {
///     Err(hoard_store::Error::Sqlite(e)) => println!("sqlite said {e} (code {:?})", e.code()),
///     other => println!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteError(pub(crate) rusqlite::Error);

impl SqliteError {
    /// SQLite's extended result code (`SQLITE_BUSY` = 5, `SQLITE_FULL` = 13, ...), when the
    /// error came from SQLite itself rather than from the binding (a type mismatch, say).
    pub fn code(&self) -> Option<i32> {
        match &self.0 {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
            _ => None,
        }
    }
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                Error::Corrupt(e.to_string())
            }
            _ => Error::Sqlite(SqliteError(e)),
        }
    }
}

impl Error {
    /// True when the error says the disk is full or the directory refuses writes (read-only
    /// file system, permissions, quota): a condition that may clear without anyone touching
    /// the store, so callers may carry on uncached and try again later.
    pub fn is_unwritable(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Error::Io(e) => matches!(
                e.kind(),
                K::StorageFull
                    | K::ReadOnlyFilesystem
                    | K::PermissionDenied
                    | K::QuotaExceeded
                    | K::FileTooLarge
            ),
            Error::Sqlite(SqliteError(rusqlite::Error::SqliteFailure(f, _))) => matches!(
                f.code,
                ErrorCode::DiskFull
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::PermissionDenied
            ),
            _ => false,
        }
    }

    /// True when the error is SQLite's `SQLITE_BUSY`/`SQLITE_LOCKED` (worth retrying).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Error::Sqlite(SqliteError(rusqlite::Error::SqliteFailure(f, _)))
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_codes_map_to_variants() {
        let cases: &[(i32, &str, bool)] = &[
            (rusqlite::ffi::SQLITE_CORRUPT, "corrupt", false),
            (rusqlite::ffi::SQLITE_NOTADB, "corrupt", false),
            (rusqlite::ffi::SQLITE_BUSY, "sqlite", true),
            (rusqlite::ffi::SQLITE_LOCKED, "sqlite", true),
            (rusqlite::ffi::SQLITE_FULL, "sqlite", false),
        ];
        for &(code, kind, busy) in cases {
            let e = Error::from(failure(code));
            let got = match e {
                Error::Corrupt(_) => "corrupt",
                Error::Sqlite(_) => "sqlite",
                _ => "other",
            };
            assert_eq!(got, kind, "code {code}");
            assert_eq!(e.is_busy(), busy, "code {code}");
        }
    }

    #[test]
    fn full_or_read_only_is_unwritable() {
        use std::io::{Error as IoError, ErrorKind as K};
        let cases: Vec<(Error, bool)> = vec![
            (Error::from(failure(rusqlite::ffi::SQLITE_FULL)), true),
            (Error::from(failure(rusqlite::ffi::SQLITE_READONLY)), true),
            (Error::from(failure(rusqlite::ffi::SQLITE_IOERR)), true),
            (Error::from(failure(rusqlite::ffi::SQLITE_BUSY)), false),
            (Error::from(failure(rusqlite::ffi::SQLITE_CORRUPT)), false),
            (Error::Io(IoError::from(K::StorageFull)), true),
            (Error::Io(IoError::from(K::ReadOnlyFilesystem)), true),
            (Error::Io(IoError::from(K::PermissionDenied)), true),
            (Error::Io(IoError::from(K::NotFound)), false),
            (Error::Timeout, false),
        ];
        for (e, want) in cases {
            assert_eq!(e.is_unwritable(), want, "{e:?}");
        }
    }
}
