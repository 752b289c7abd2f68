//! Row codec: the columns a read selects, decoding a row (or finding it inconsistent),
//! liveness, value-file paths, and the settings row.

use crate::error::Result;
use crate::files::TempFile;
use crate::settings::{EvictionPolicy, Settings};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

use super::*;

/// A value about to be stored.
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    /// Bytes to store inline.
    Bytes(&'a [u8]),
    /// A temporary file to rename into place.
    File(TempFile),
}

/// A decoded row.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) rowid: i64,
    pub(crate) mode: i64,
    pub(crate) filename: Option<String>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) expire_time: Option<f64>,
    pub(crate) value_len: u64,
    pub(crate) meta: Vec<u8>,
    pub(crate) store_time: f64,
    pub(crate) tag: Option<String>,
}

/// Outcome of looking a key up.
#[derive(Debug)]
pub(crate) enum Found {
    Missing,
    Expired,
    Live(Row),
    /// A row exists but cannot be decoded.
    Undecodable(i64),
}

pub(crate) fn is_live(expire_time: Option<f64>, now: f64) -> bool {
    expire_time.is_none_or(|t| t > now)
}

/// Validates a stored relative file name before it is joined to the directory.
pub(crate) fn value_path(dir: &Path, rel: &str) -> Option<PathBuf> {
    let ok = !rel.is_empty()
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(':'));
    ok.then(|| dir.join(rel))
}

pub(crate) fn is_decode_error(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// Decodes a row selected with [`ROW_COLS`]; `Ok(None)` when it is inconsistent.
pub(crate) fn decode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Row>> {
    let rowid: i64 = r.get(0)?;
    let mode: i64 = r.get(1)?;
    let filename: Option<String> = r.get(2)?;
    let value: Option<Vec<u8>> = match r.get_ref(3)? {
        ValueRef::Null => None,
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
        _ => return Ok(None),
    };
    let expire_time: Option<f64> = r.get(4)?;
    let size: i64 = r.get(5)?;
    let klen: i64 = r.get(6)?;
    let mlen: i64 = r.get::<_, Option<i64>>(7)?.unwrap_or(0);
    let meta: Vec<u8> = r.get::<_, Option<Vec<u8>>>(8)?.unwrap_or_default();
    let store_time: f64 = r.get(9)?;
    let tag: Option<String> = r.get(10)?;
    let value_len = size - klen - mlen;
    let consistent = match mode {
        MODE_INLINE => value.as_ref().is_some_and(|v| v.len() as i64 == value_len),
        MODE_FILE => filename.is_some() && value_len >= 0,
        _ => false,
    };
    Ok(consistent.then_some(Row {
        rowid,
        mode,
        filename,
        value,
        expire_time,
        value_len: value_len.max(0) as u64,
        meta,
        store_time,
        tag,
    }))
}

pub(crate) fn found_from(r: &rusqlite::Row<'_>, now: f64) -> Result<Found> {
    let rowid: i64 = r.get(0)?;
    match decode_row(r) {
        Ok(Some(row)) if is_live(row.expire_time, now) => Ok(Found::Live(row)),
        Ok(Some(_)) => Ok(Found::Expired),
        Ok(None) => Ok(Found::Undecodable(rowid)),
        Err(e) if is_decode_error(&e) => Ok(Found::Undecodable(rowid)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn lookup(c: &Connection, key: &[u8], now: f64) -> Result<Found> {
    let mut stmt = c.prepare_cached(concat!(
        "SELECT ",
        row_cols!(),
        " FROM cache WHERE key = ?1"
    ))?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        None => Ok(Found::Missing),
        Some(r) => found_from(r, now),
    }
}

/// Decodes a row selected with [`settings_cols`]; the policy is returned as text.
pub(crate) fn settings_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Settings, String)> {
    Ok((
        Settings {
            size_limit: r.get::<_, i64>(0)?.max(0) as u64,
            cull_limit: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32,
            eviction_policy: EvictionPolicy::default(),
            min_file_size: r.get::<_, i64>(3)?.max(0) as u64,
            statistics: r.get::<_, i64>(4)? != 0,
            sqlite_mmap_size: r.get::<_, i64>(5)?.max(0) as u64,
            sqlite_cache_size: r.get(6)?,
        },
        r.get::<_, String>(2)?,
    ))
}

pub(crate) fn with_policy((s, policy): (Settings, String)) -> Result<Settings> {
    Ok(Settings {
        eviction_policy: policy.parse()?,
        ..s
    })
}

/// Reads the settings row.
pub(crate) fn read_settings(c: &Connection) -> Result<Settings> {
    let row = c
        .prepare_cached(concat!(
            "SELECT ",
            settings_cols!(),
            " FROM settings WHERE id = 0"
        ))?
        .query_row([], settings_from)?;
    with_policy(row)
}

/// The rows' accounted size and the settings row's version (every write needs both), in
/// one statement on the one-row `counters` table.
pub(crate) fn size_and_settings_version(c: &Connection) -> Result<(u64, i64)> {
    let (size, version) = prepared::with(c, Hot::SizeAndSettingsVersion, |s| {
        s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
    })?;
    Ok((size.max(0) as u64, version))
}

pub(crate) fn write_settings(c: &Connection, s: &Settings) -> Result<()> {
    let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
    c.prepare_cached(
        "UPDATE settings SET size_limit = ?1, cull_limit = ?2, eviction_policy = ?3, \
         min_file_size = ?4, statistics = ?5, sqlite_mmap_size = ?6, sqlite_cache_size = ?7 \
         WHERE id = 0",
    )?
    .execute(params![
        clamp(s.size_limit),
        s.cull_limit as i64,
        s.eviction_policy.as_str(),
        clamp(s.min_file_size),
        s.statistics as i64,
        clamp(s.sqlite_mmap_size),
        s.sqlite_cache_size,
    ])?;
    Ok(())
}

pub(crate) fn policy_to_u8(p: EvictionPolicy) -> u8 {
    EvictionPolicy::ALL
        .iter()
        .position(|x| *x == p)
        .unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    macro_rules! path_ok {
        ($name:ident, $rel:expr, $ok:expr) => {
            #[test]
            fn $name() {
                assert_eq!(value_path(Path::new("/c"), $rel).is_some(), $ok);
            }
        };
    }
    path_ok!(path_normal, "ab/cd/0123.val", true);
    path_ok!(path_parent, "../etc/passwd", false);
    path_ok!(path_absolute, "/etc/passwd", false);
    path_ok!(path_empty, "", false);
    path_ok!(path_backslash, "ab\\cd", false);
    path_ok!(path_dot, "ab/./x.val", false);

    #[test]
    fn liveness_boundary() {
        let cases = [
            (None, 5.0, true),
            (Some(6.0), 5.0, true),
            (Some(5.0), 5.0, false),
            (Some(4.0), 5.0, false),
        ];
        for (exp, now, live) in cases {
            assert_eq!(is_live(exp, now), live, "{exp:?} at {now}");
        }
    }
}
