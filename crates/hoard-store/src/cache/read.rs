//! The read path: access/hit-miss recording and flushing, loading values, removing faulty rows.

use crate::error::Result;
use crate::files::{self, Value};
use crate::memory::{self, Held};
use rusqlite::{Connection, params};
use std::sync::atomic::Ordering;

use super::*;

/// What [`Cache::record_now_or_file`] could answer without blocking.
#[derive(Debug)]
pub enum RecordNow {
    /// The answer: an inline row, or `None` (missing or expired). Counted like `record`.
    Answered(Option<Record>),
    /// A live row whose value is in a file: [`Cache::open_file_row`] opens it where
    /// blocking is fine, without reading the row again. Not counted yet.
    File(FileRow),
    /// Nothing: no idle connection, the database busy, or a row to repair; ask
    /// [`Cache::record`] where blocking is fine.
    Later,
}

/// A live row whose value is in a file, as one SELECT found it (see [`RecordNow::File`]).
#[derive(Debug)]
pub struct FileRow {
    key: Vec<u8>,
    row: Row,
    now: f64,
}

impl FileRow {
    /// The key of the row.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Inner {
    /// Records a hit/miss and (LRU/LFU) an access. `may_flush` must be false inside a
    /// write transaction: a flush needs the write lock that transaction holds.
    pub(crate) fn note_access(&self, key: &[u8], hit: bool, now: f64, may_flush: bool) {
        let mut due = false;
        if self.statistics.load(Ordering::Relaxed) {
            due |= self.buffer.count(hit);
        }
        if hit && self.policy().tracks_access() {
            due |= self.buffer.access(key, now);
        }
        if due && may_flush {
            self.try_flush();
        }
    }

    /// Flushes if no other thread is flushing; errors keep the counters for the next try.
    pub(crate) fn try_flush(&self) {
        if let Ok(_g) = self.buffer.flushing.try_lock() {
            let _ = self.flush_drained();
        }
    }

    /// Writes what the buffer holds, [`FLUSH_CHUNK`](crate::buffer::FLUSH_CHUNK) keys per
    /// transaction. On error the counters are put back (accesses are dropped).
    pub(crate) fn flush_drained(&self) -> Result<()> {
        let policy = self.policy();
        for part in self.buffer.drain().into_chunks() {
            let g = self.buffer.granularity();
            self.write(|c, _| part.apply(c, policy, g))
                .inspect_err(|_| {
                    self.buffer.restore_counts(&part);
                })?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<()> {
        let _g = self
            .buffer
            .flushing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.flush_drained()
    }

    /// Deletes a faulty row (missing/short file, undecodable) if it is still the same row.
    pub(crate) fn remove_bad(&self, key: &[u8], rowid: i64, filename: Option<&str>) -> Result<()> {
        self.write(|c, p| self.remove_bad_in(c, p, key, rowid, filename))
    }

    pub(crate) fn remove_bad_in(
        &self,
        c: &Connection,
        p: &mut Pending,
        key: &[u8],
        rowid: i64,
        filename: Option<&str>,
    ) -> Result<()> {
        let n = c
            .prepare_cached(
                "DELETE FROM cache WHERE rowid = ?1 AND key = ?2 AND (?3 IS NULL OR filename = ?3)",
            )?
            .execute(params![rowid, key, filename])?;
        if n == 1 {
            self.changed(p, key);
        }
        if let Some(path) = filename
            .filter(|_| n == 1)
            .and_then(|f| value_path(&self.dir, f))
        {
            p.unlink.push(path);
        }
        Ok(())
    }

    /// Loads a row's whole value; `None` when its file is missing or has the wrong length.
    pub(crate) fn load_bytes(&self, row: &mut Row) -> Result<Option<Vec<u8>>> {
        match row.mode {
            MODE_INLINE => Ok(row.value.take()),
            _ => match row
                .filename
                .as_deref()
                .and_then(|f| value_path(&self.dir, f))
            {
                Some(path) => files::read_value_file(&path, row.value_len),
                None => Ok(None),
            },
        }
    }

    /// Opens a row's value for streaming; `None` when its file is missing or short.
    pub(crate) fn load_value(&self, row: &mut Row) -> Result<Option<Value>> {
        match row.mode {
            MODE_INLINE => Ok(row.value.take().map(Value::Inline)),
            _ => match row
                .filename
                .as_deref()
                .and_then(|f| value_path(&self.dir, f))
            {
                Some(path) => {
                    Ok(
                        files::open_value_file(&path, row.value_len)?.map(|file| Value::File {
                            file,
                            len: row.value_len,
                        }),
                    )
                }
                None => Ok(None),
            },
        }
    }

    /// The read path: one SELECT, then the value; faults become misses and are removed.
    pub(crate) fn fetch<T>(
        &self,
        key: &[u8],
        load: impl Fn(&Inner, &mut Row) -> Result<Option<T>>,
    ) -> Result<Option<(Row, T)>> {
        let now = self.clock.now();
        let found = self.read_row(|c| lookup(c, key, now))?;
        let out = match found {
            Found::Live(mut row) => match load(self, &mut row)? {
                Some(v) => Some((row, v)),
                None => {
                    self.remove_bad(key, row.rowid, row.filename.as_deref())?;
                    None
                }
            },
            Found::Undecodable(rowid) => {
                self.remove_bad(key, rowid, None)?;
                None
            }
            Found::Missing | Found::Expired => None,
        };
        self.note_access(key, out.is_some(), now, true);
        Ok(out)
    }

    /// See [`Cache::record_now_or_file`]: the answer, a file row to open where blocking is
    /// fine, or `Later` when the answer needs a wait or a write.
    pub(crate) fn fetch_now(&self, key: &[u8]) -> Result<RecordNow> {
        if self.joined(|_, _| ()).is_some() {
            return Ok(RecordNow::Later); // inside a transaction: its connection, its rules
        }
        let Some(conn) = self.idle_conn() else {
            return Ok(RecordNow::Later);
        };
        let now = self.clock.now();
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pin().hold_for_read(&conn);
        let found = lookup(&conn, key, now);
        conn.busy_timeout(self.busy_timeout())?;
        let out = match found {
            Err(e) if e.is_busy() => return Ok(RecordNow::Later),
            Err(e) => return Err(e),
            Ok(Found::Live(row)) if row.mode == MODE_INLINE && row.value.is_some() => {
                Some(Record {
                    meta: row.meta,
                    value: Value::Inline(row.value.unwrap_or_default()),
                    store_time: row.store_time,
                    expire_time: row.expire_time,
                    tag: row.tag,
                })
            }
            Ok(Found::Live(row)) if row.mode != MODE_INLINE => {
                let key = key.to_vec();
                return Ok(RecordNow::File(FileRow { key, row, now }));
            }
            Ok(Found::Live(_) | Found::Undecodable(_)) => return Ok(RecordNow::Later),
            Ok(Found::Missing | Found::Expired) => None,
        };
        self.note_access(key, out.is_some(), now, false);
        Ok(RecordNow::Answered(out))
    }

    /// See [`Cache::open_file_row`]: the value file of a row already read, opened; a row
    /// whose file is gone or short is removed (if still the same row) and reads as `None`.
    pub(crate) fn open_file_row(&self, f: FileRow) -> Result<Option<Record>> {
        let FileRow { key, mut row, now } = f;
        let out = match self.load_value(&mut row)? {
            Some(value) => Some(Record {
                meta: row.meta,
                value,
                store_time: row.store_time,
                expire_time: row.expire_time,
                tag: row.tag,
            }),
            None => {
                self.remove_bad(&key, row.rowid, row.filename.as_deref())?;
                None
            }
        };
        self.note_access(&key, out.is_some(), now, true);
        Ok(out)
    }

    /// `get`: from this handle's memory layer when its copy is current, else through
    /// [`fetch`](Self::fetch), keeping a copy of small values.
    pub(crate) fn get_held(&self, key: &[u8]) -> Result<Option<Held>> {
        let (Some(memory), Some(gens)) = (&self.memory, &self.gens) else {
            return Ok(self.fetch(key, |i, row| i.load_bytes(row))?.map(held));
        };
        let now = self.clock.now();
        let h = memory::key_hash(key);
        // Sampled before the database read: a change committed after it bumps the stamp.
        let stamp = gens.stamp(h);
        if let Some(known) = memory.get(h, key, stamp, now) {
            self.note_access(key, known.is_some(), now, true);
            return Ok(known);
        }
        let Some((row, value)) = self.fetch(key, |i, row| i.load_bytes(row))? else {
            memory.put(h, key, None, stamp, now);
            return Ok(None);
        };
        let inline = row.mode == MODE_INLINE;
        let out = held((row, value));
        if inline {
            memory.put(h, key, Some(out.clone()), stamp, now);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use crate::files::Value;
    use crate::{Cache, RecordNow};

    /// A value-file row found by `record_now_or_file` is opened without a second SELECT: a
    /// meta changed in between is not seen (the row as first read is what comes back), the
    /// file is read, and the access is counted once.
    #[test]
    fn a_file_row_found_now_is_opened_without_reading_the_row_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder(dir.path())
            .min_file_size(64)
            .statistics(true)
            .open()
            .unwrap();
        cache
            .set_with_meta(b"big", &[7u8; 100], b"first", None, None)
            .unwrap();
        let _ = cache.record(b"big").unwrap(); // leaves a connection idle
        let f = match cache.record_now_or_file(b"big").unwrap() {
            RecordNow::File(f) => f,
            other => panic!("a file row read as {other:?}"),
        };
        assert_eq!(f.key(), b"big");
        assert!(cache.set_meta(b"big", b"second", None).unwrap());
        let (hits, _) = cache.stats(true, false).unwrap();
        let rec = cache.open_file_row(f).unwrap().expect("its file is there");
        assert_eq!(rec.meta, b"first");
        let mut body = Vec::new();
        match rec.value {
            Value::File { mut file, .. } => {
                std::io::Read::read_to_end(&mut file, &mut body).unwrap();
            }
            other => panic!("a file row opened as {other:?}"),
        }
        assert_eq!(body, vec![7u8; 100]);
        assert_eq!(cache.stats(true, false).unwrap().0, hits + 1);
    }

    /// A copy held outside the store (the proxy's memory front) notes its hits with
    /// `note_hit_since`: every hit is counted, but an LRU access is buffered only once the
    /// access time advances by the granularity past the one last noted, so a copy hit many
    /// times a minute leaves its row (and the next flush) alone; LFU counts every access.
    #[test]
    fn note_hit_since_buffers_an_lru_access_once_per_granularity() {
        use crate::{Clock, EvictionPolicy, ManualClock};
        use std::time::Duration;
        let access_time = |c: &Cache| -> f64 {
            c.inner
                .read(|c| {
                    Ok(
                        c.query_row("SELECT access_time FROM cache WHERE key = x'6b'", [], |r| {
                            r.get(0)
                        })?,
                    )
                })
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000.0);
        let cache = Cache::builder(dir.path())
            .clock(clock.shared())
            .eviction_policy(EvictionPolicy::LeastRecentlyUsed)
            .statistics(true)
            .access_granularity(Duration::from_secs(60))
            .flush_on_access(false)
            .open()
            .unwrap();
        cache.set(b"k", b"v", None, None).unwrap();
        let (hits, _) = cache.stats(true, false).unwrap();
        clock.advance(59.0);
        let noted = cache.note_hit_since(b"k", 1_000.0);
        assert_eq!(noted, 1_000.0, "within the granularity: nothing noted");
        assert!(cache.inner.buffer.take_accesses().is_empty());
        clock.advance(2.0);
        let noted = cache.note_hit_since(b"k", noted);
        assert_eq!(noted, 1_061.0, "past it: the access is noted");
        cache.flush().unwrap();
        assert_eq!(access_time(&cache), 1_061.0);
        assert_eq!(cache.note_hit_since(b"k", noted), 1_061.0);
        assert!(cache.inner.buffer.take_accesses().is_empty());
        cache.flush().unwrap();
        assert_eq!(
            cache.stats(true, false).unwrap().0,
            hits + 3,
            "every hit counted"
        );

        // LFU: each hit is an access.
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder(dir.path())
            .clock(clock.shared())
            .eviction_policy(EvictionPolicy::LeastFrequentlyUsed)
            .access_granularity(Duration::from_secs(60))
            .flush_on_access(false)
            .open()
            .unwrap();
        cache.set(b"k", b"v", None, None).unwrap();
        let now = clock.now();
        cache.note_hit_since(b"k", now);
        cache.note_hit_since(b"k", now);
        assert_eq!(cache.inner.buffer.take_accesses()[&b"k".to_vec()].count, 2);
    }

    /// `record_now` answers what one SELECT can (inline rows, misses, expired rows) and defers
    /// everything needing file I/O, a write or a wait.
    #[test]
    fn record_now_answers_only_what_needs_no_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder(dir.path()).min_file_size(64).open().unwrap();
        cache.set(b"small", b"inline", None, None).unwrap();
        cache.set(b"big", &[7u8; 100], None, None).unwrap();
        cache
            .set(
                b"gone",
                b"x",
                Some(std::time::Duration::from_millis(1)),
                None,
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(cache.record(b"small").unwrap().is_some()); // leaves a connection idle

        let small = cache.record_now(b"small").unwrap().expect("answered");
        match small.expect("found").value {
            Value::Inline(v) => assert_eq!(v, b"inline"),
            other => panic!("inline row read as {other:?}"),
        }
        assert!(
            cache
                .record_now(b"missing")
                .unwrap()
                .expect("answered")
                .is_none()
        );
        assert!(
            cache
                .record_now(b"gone")
                .unwrap()
                .expect("answered")
                .is_none()
        );
        assert!(
            cache.record_now(b"big").unwrap().is_none(),
            "a value file is deferred"
        );
        // Inside a transaction on this thread the transaction's connection rules.
        cache
            .transact(|_| {
                assert!(cache.record_now(b"small").unwrap().is_none());
                Ok(())
            })
            .unwrap();
        // With every connection checked out, nothing is opened: deferred.
        let held: Vec<_> = std::iter::from_fn(|| cache.inner.idle_conn())
            .take(64)
            .collect();
        assert!(cache.record_now(b"small").unwrap().is_none());
        drop(held);
        assert!(cache.record_now(b"small").unwrap().is_some());
    }
}
