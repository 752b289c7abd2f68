//! Writes and culling: installing a value (inline or file), putting and deleting rows,
//! culling expired then policy-ordered rows, and each operation's in-transaction form.

use crate::buffer::Drained;
use crate::error::{Error, Result};
use crate::files::TempFile;
use crate::memory::Held;
use crate::settings::Settings;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

impl Inner {
    /// Turns a payload into a stored form inside the transaction (renaming files into place).
    pub(crate) fn install<'p>(
        &self,
        payload: &'p mut Payload<'_>,
        p: &mut Pending,
    ) -> Result<Stored<'p>> {
        match payload {
            Payload::Bytes(b) => Ok(Stored::Inline(b)),
            Payload::File(t) => {
                let len = t.len;
                let (rel, full) = t.install(&self.dir)?;
                p.created.push(full);
                Ok(Stored::File { rel, len })
            }
        }
    }

    /// Inserts or replaces the row for `key` (see [`Put`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_row(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        stored: &Stored<'_>,
        meta: &[u8],
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<Put> {
        let (mode, filename, value, vlen): (i64, Option<&str>, Option<&[u8]>, u64) = match stored {
            Stored::Inline(b) => (MODE_INLINE, None, Some(b), b.len() as u64),
            Stored::File { rel, len } => (MODE_FILE, Some(rel.as_str()), None, *len),
        };
        let size = (key.len() as u64 + meta.len() as u64 + vlen) as i64;
        self.changed(p, key);
        // The two common writes in one statement: a new row, or the replacement of an
        // inline row (no file to unlink) of the same size whose indexed columns keep their
        // values (so no index but the policy's changes, and no trigger runs). Which one it
        // was: only an insert sets the last inserted rowid, cleared first.
        // SAFETY: a valid handle, used on this thread.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(c.handle(), 0) };
        let written = prepared::with(c, Hot::Upsert, |s| {
            s.execute(params![
                key,
                now,
                mode,
                filename,
                value,
                meta,
                size,
                expire_time,
                tag
            ])
        })?;
        if written == 1 {
            return Ok(match c.last_insert_rowid() {
                0 => Put::Replaced,
                rowid => Put::Inserted {
                    rowid,
                    size: size as u64,
                },
            });
        }
        // Old row: columns are only assigned when they change, so unchanged indexed
        // columns (expire_time, tag, access_count) and the size trigger cost no page writes.
        #[allow(clippy::type_complexity)]
        let old: Option<(i64, Option<String>, Option<f64>, Option<String>, i64, i64)> = c
            .prepare_cached(
                "SELECT rowid, filename, expire_time, tag, access_count, size FROM cache WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get_ref(1)?.as_str_or_null().ok().flatten().map(String::from),
                    r.get_ref(2)?.as_f64_or_null().ok().flatten(),
                    r.get_ref(3)?.as_str_or_null().ok().flatten().map(String::from),
                    r.get_ref(4)?.as_i64().unwrap_or(-1),
                    r.get_ref(5)?.as_i64().unwrap_or(-1),
                ))
            })
            .optional()?;
        match old {
            Some((rowid, old_file, old_expire, old_tag, old_count, old_size)) => {
                let mut sql = String::from(
                    "UPDATE cache SET raw = 1, store_time = :now, access_time = :now, mode = :mode, \
                     filename = :filename, value = :value, meta = :meta",
                );
                let set_expire = old_expire != expire_time;
                let set_tag = old_tag.as_deref() != tag;
                let set_size = old_size != size;
                if set_expire {
                    sql.push_str(", expire_time = :expire_time");
                }
                if set_tag {
                    sql.push_str(", tag = :tag");
                }
                if set_size {
                    sql.push_str(", size = :size");
                }
                if old_count != 0 {
                    sql.push_str(", access_count = 0");
                }
                sql.push_str(" WHERE rowid = :rowid");
                let mut stmt = c.prepare_cached(&sql)?;
                let mut named: Vec<(&str, &dyn ToSql)> = vec![
                    (":now", &now),
                    (":mode", &mode),
                    (":filename", &filename),
                    (":value", &value),
                    (":meta", &meta),
                    (":rowid", &rowid),
                ];
                if set_expire {
                    named.push((":expire_time", &expire_time));
                }
                if set_tag {
                    named.push((":tag", &tag));
                }
                if set_size {
                    named.push((":size", &size));
                }
                stmt.execute(named.as_slice())?;
                if let Some(path) = old_file.and_then(|f| value_path(&self.dir, &f)) {
                    p.unlink.push(path);
                }
                Ok(Put::Rewritten(rowid))
            }
            // Not after a conflict inside the write transaction; kept for any other refusal.
            None => {
                c.prepare_cached(
                    "INSERT INTO cache (key, raw, store_time, expire_time, access_time, access_count, \
                     tag, size, mode, filename, value, meta) \
                     VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![key, now, expire_time, tag, size, mode, filename, value, meta])?;
                Ok(Put::Rewritten(c.last_insert_rowid()))
            }
        }
    }

    /// Deletes up to `limit` rows matching `filter` (with `?1` = `arg`) in `order`,
    /// never `protect`. Returns how many were deleted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn delete_where(
        &self,
        c: &Connection,
        p: &mut Pending,
        filter: &str,
        order: &str,
        arg: &dyn ToSql,
        limit: i64,
        protect: i64,
    ) -> Result<u64> {
        let sql = format!(
            "DELETE FROM cache WHERE rowid IN (SELECT rowid FROM cache WHERE ({filter}) \
             AND rowid != ?2 ORDER BY {order} LIMIT ?3) RETURNING filename, key"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![arg, protect, limit])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            if let ValueRef::Blob(key) | ValueRef::Text(key) = r.get_ref(1)? {
                self.changed(p, key);
            }
            if let Some(path) = r
                .get_ref(0)?
                .as_str_or_null()
                .ok()
                .flatten()
                .and_then(|f| value_path(&self.dir, f))
            {
                p.unlink.push(path);
            }
        }
        Ok(n)
    }

    pub(crate) fn delete_expired(
        &self,
        c: &Connection,
        p: &mut Pending,
        now: f64,
        limit: i64,
        protect: i64,
    ) -> Result<u64> {
        let n = self.delete_where(
            c,
            p,
            "expire_time IS NOT NULL AND expire_time <= ?1",
            "expire_time",
            &now,
            limit,
            protect,
        )?;
        count_removed(c, Removal::Expired, n)?;
        Ok(n)
    }

    /// Culls inside the caller's transaction while the volume is over the limit:
    /// expired rows first, then by policy, in batches of `batch` rows, at most `max`
    /// rows in all. Never deletes `protect`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cull_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        s: &Settings,
        now: f64,
        protect: i64,
        batch: i64,
        max: u64,
    ) -> Result<u64> {
        let mut deleted = 0;
        let mut drained = false;
        while deleted < max && volume_in(c)? > s.size_limit {
            let mut n = self.delete_expired(c, p, now, batch, protect)?;
            if n == 0 {
                let Some(order) = s.eviction_policy.order_by() else {
                    break;
                };
                if s.eviction_policy.tracks_access() && !drained {
                    // Make this process's buffered accesses count before choosing victims.
                    Drained {
                        accesses: self.buffer.take_accesses(),
                        ..Drained::default()
                    }
                    .apply(c, s.eviction_policy, self.buffer.granularity())?;
                    drained = true;
                }
                n = self.delete_where(c, p, "1", order, &rusqlite::types::Null, batch, protect)?;
                count_removed(c, Removal::Culled, n)?;
            }
            if n == 0 {
                break;
            }
            deleted += n;
        }
        Ok(deleted)
    }

    /// The cull every write runs (diskcache semantics, continued until under the limit).
    pub(crate) fn cull_on_write(
        &self,
        c: &Connection,
        p: &mut Pending,
        now: f64,
        key: &[u8],
        put: Put,
    ) -> Result<u64> {
        // A row replaced in place changes no counter, a new row only through its trigger:
        // the pin may know them (see `pin`).
        let pin = prepared::pin_of(c);
        let known = pin.and_then(|pin| match put {
            Put::Replaced => pin.counters_after(c, 1, 0),
            Put::Inserted { size, .. } => pin.counters_after(c, 2, size),
            Put::Rewritten(_) => None,
        });
        let (size, version) = match known {
            Some(counters) => counters,
            None => size_and_settings_version(c)?,
        };
        if let Some(pin) = pin {
            // Held from here (the commit would take it anyway): the counters stay known to
            // this transaction's next writes too.
            pin.hold(c);
            pin.remember_counters(c, size, version);
        }
        let s = self.settings_at(c, version)?;
        if s.cull_limit == 0 {
            return Ok(0);
        }
        // The exact volume only when the cheap bound does not already show it under the
        // limit (see `volume`).
        let under = |db: u64| size.saturating_add(db) <= s.size_limit;
        if volume::database_bytes_bound(c).is_some_and(under) || under(volume::database_bytes(c)?) {
            return Ok(0);
        }
        // The row just written is never culled.
        let protect = match put {
            Put::Inserted { rowid, .. } | Put::Rewritten(rowid) => rowid,
            Put::Replaced => c
                .prepare_cached("SELECT rowid FROM cache WHERE key = ?1")?
                .query_row([key], |r| r.get(0))?,
        };
        self.cull_in(
            c,
            p,
            &s,
            now,
            protect,
            s.cull_limit as i64,
            MAX_CULL_PER_WRITE,
        )
    }

    pub(crate) fn payload_for<'a>(&self, value: &'a [u8]) -> Result<Payload<'a>> {
        if value.len() as u64 >= self.min_file_size.load(Ordering::Relaxed) {
            Ok(Payload::File(TempFile::write_all(&self.dir, value)?))
        } else {
            Ok(Payload::Bytes(value))
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        payload: &mut Payload<'_>,
        meta: &[u8],
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<()> {
        let stored = self.install(payload, p)?;
        let put = self.put_row(c, p, key, &stored, meta, expire_time, tag, now)?;
        self.cull_on_write(c, p, now, key, put)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        payload: &mut Payload<'_>,
        expire_time: Option<f64>,
        tag: Option<&str>,
        now: f64,
    ) -> Result<bool> {
        if let Found::Live(_) = lookup(c, key, now)? {
            return Ok(false);
        }
        self.put_in(c, p, key, payload, &[], expire_time, tag, now)?;
        Ok(true)
    }

    /// Reads a live value inside a transaction; faulty rows are removed and read as misses.
    pub(crate) fn get_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        now: f64,
    ) -> Result<Option<Entry>> {
        let out = match lookup(c, key, now)? {
            Found::Live(mut row) => match self.load_bytes(&mut row)? {
                Some(value) => Some(Entry {
                    value,
                    expire_time: row.expire_time,
                    tag: row.tag,
                }),
                None => {
                    self.remove_bad_in(c, p, key, row.rowid, row.filename.as_deref())?;
                    None
                }
            },
            Found::Undecodable(rowid) => {
                self.remove_bad_in(c, p, key, rowid, None)?;
                None
            }
            _ => None,
        };
        self.note_access(key, out.is_some(), now, false);
        Ok(out)
    }

    pub(crate) fn delete_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        now: f64,
    ) -> Result<bool> {
        // The common case in one statement: a live inline row (no file to unlink).
        if prepared::with(c, Hot::DeleteLiveInline, |s| s.execute(params![key, now]))? == 1 {
            self.changed(p, key);
            return Ok(true);
        }
        // Otherwise SELECT then DELETE by rowid: cheaper than DELETE ... RETURNING, which
        // buffers its output in an ephemeral table.
        let old: Option<(i64, Option<String>, Option<f64>)> = c
            .prepare_cached("SELECT rowid, filename, expire_time FROM cache WHERE key = ?1")?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get_ref(1)?
                        .as_str_or_null()
                        .ok()
                        .flatten()
                        .map(String::from),
                    r.get_ref(2)?.as_f64_or_null().ok().flatten(),
                ))
            })
            .optional()?;
        let old = match old {
            Some((rowid, file, expire_time)) => {
                c.prepare_cached("DELETE FROM cache WHERE rowid = ?1")?
                    .execute([rowid])?;
                self.changed(p, key);
                Some((file, expire_time))
            }
            None => None,
        };
        Ok(match old {
            Some((file, expire_time)) => {
                if let Some(path) = file.and_then(|f| value_path(&self.dir, &f)) {
                    p.unlink.push(path);
                }
                is_live(expire_time, now)
            }
            None => false,
        })
    }

    pub(crate) fn pop_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        now: f64,
    ) -> Result<Option<Vec<u8>>> {
        let value = match lookup(c, key, now)? {
            Found::Live(mut row) => self.load_bytes(&mut row)?,
            _ => None,
        };
        self.delete_in(c, p, key, now)?;
        Ok(value)
    }

    pub(crate) fn incr_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        delta: i64,
        default: Option<i64>,
        now: f64,
    ) -> Result<i64> {
        match lookup(c, key, now)? {
            Found::Live(row) => {
                let current = match (row.mode, &row.value) {
                    (MODE_INLINE, Some(v)) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .ok_or(Error::NotAnInteger)?,
                    _ => return Err(Error::NotAnInteger),
                };
                let next = current.checked_add(delta).ok_or(Error::NotAnInteger)?;
                let bytes = next.to_string();
                // Like diskcache, an increment is a new store: its store time moves to now.
                c.prepare_cached(
                    "UPDATE cache SET value = ?1, size = length(key) + length(meta) + ?2, \
                     store_time = ?4 WHERE rowid = ?3",
                )?
                .execute(params![
                    bytes.as_bytes(),
                    bytes.len() as i64,
                    row.rowid,
                    now
                ])?;
                self.changed(p, key);
                Ok(next)
            }
            _ => {
                let start = default.ok_or(Error::KeyNotFound)?;
                let next = start.checked_add(delta).ok_or(Error::NotAnInteger)?;
                let bytes = next.to_string();
                let stored = Stored::Inline(bytes.as_bytes());
                let put = self.put_row(c, p, key, &stored, &[], None, None, now)?;
                self.cull_on_write(c, p, now, key, put)?;
                Ok(next)
            }
        }
    }

    pub(crate) fn touch_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        expire_time: Option<f64>,
        now: f64,
    ) -> Result<bool> {
        let n = c
            .prepare_cached(
                "UPDATE cache SET expire_time = ?1 WHERE key = ?2 \
                 AND (expire_time IS NULL OR expire_time > ?3)",
            )?
            .execute(params![expire_time, key, now])?;
        if n == 1 {
            self.changed(p, key);
        }
        Ok(n == 1)
    }

    pub(crate) fn contains_in(&self, c: &Connection, key: &[u8], now: f64) -> Result<bool> {
        let row: Option<Option<f64>> = c
            .prepare_cached("SELECT expire_time FROM cache WHERE key = ?1")?
            .query_row([key], |r| Ok(r.get_ref(0)?.as_f64_or_null().ok().flatten()))
            .optional()?;
        Ok(row.is_some_and(|e| is_live(e, now)))
    }
}

/// [`Inner::put_row`]'s one statement for a new row or the replacement in place of an
/// inline row whose size, expiry, tag and access count stay (`coalesce` with a blob, which
/// no time or tag equals, tells NULL from any value); any other existing row is left alone
/// (no change) for the general path. `size` is compared, not assigned: assigning it runs
/// the size trigger's program, which loads the whole old row, value included. The
/// conditions compare the old row with `excluded`, never with a bare parameter, so SQLite's
/// planner never reads a bound value and the statement stays prepared
/// (`hot_writes_are_prepared_once`).
pub(crate) const UPSERT: &str = "INSERT INTO cache (key, raw, store_time, expire_time, \
     access_time, access_count, tag, size, mode, filename, value, meta) \
     VALUES (?1, 1, ?2, ?8, ?2, 0, ?9, ?7, ?3, ?4, ?5, ?6) \
     ON CONFLICT (key) DO UPDATE SET raw = 1, store_time = excluded.store_time, \
     access_time = excluded.access_time, mode = excluded.mode, filename = excluded.filename, \
     value = excluded.value, meta = excluded.meta \
     WHERE filename IS NULL AND access_count = 0 AND size + 0 = excluded.size \
     AND coalesce(expire_time, x'') = coalesce(excluded.expire_time, x'') \
     AND coalesce(tag, x'') = coalesce(excluded.tag, x'')";

/// What [`Inner::put_row`] did, for the cull after it (which row to protect, whether the
/// counters can be known without reading them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Put {
    /// A new row of `size` accounted bytes: only the insert trigger changed the counters.
    Inserted { rowid: i64, size: u64 },
    /// The old row replaced in place, its size kept: no counter changed.
    Replaced,
    /// The old row rewritten column by column (its size, expiry or tag may have changed).
    Rewritten(i64),
}

/// [`Inner::delete_in`]'s one statement for a live inline row (`coalesce`: no bare
/// parameter beside an indexed column, see [`UPSERT`]).
pub(crate) const DELETE_LIVE_INLINE: &str = "DELETE FROM cache WHERE key = ?1 \
     AND filename IS NULL AND coalesce(expire_time > ?2, 1)";

/// A value as stored by one row.
#[derive(Debug)]
pub(crate) enum Stored<'a> {
    Inline(&'a [u8]),
    File { rel: String, len: u64 },
}

pub(crate) fn held((row, value): (Row, Vec<u8>)) -> Held {
    Held {
        value,
        meta: row.meta,
        expire_time: row.expire_time,
        tag: row.tag,
    }
}

pub(crate) fn expire_at(now: f64, expire: Option<Duration>) -> Option<f64> {
    expire.map(|d| now + d.as_secs_f64())
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
