//! Reading entries: the in-memory front first, then the store; Vary index resolution; body
//! verification (length, xxh3-64 digest) with damaged rows dropped.

use std::cell::Cell;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::hot::HotValue;
use super::{Entries, Loaded, StoredBody, Tier};
use crate::http_cache::{self, CacheKey, HeadRecord, StoredHead};
use crate::store::{ChangeStamp, FileRow, Record, RecordNow, Value};

/// A row as read: `None` when there is no live row.
type Row = Option<Record>;

impl Entries {
    /// The store half of [`load`](Entries::load): read the URL row, follow a Vary index to the
    /// request's variant, verify the body (length always; digest of small bodies now, of a
    /// value file once per process before its first byte is sent), and keep small rows in the
    /// in-memory front under the change stamps sampled before each read.
    ///
    /// Answered on the calling task when the store can say without blocking (misses and
    /// inline rows: one SELECT that never waits on a lock, [`Cache::record_now_or_file`]);
    /// otherwise (value files, a busy database, a damaged row to remove) on a blocking
    /// thread, which opens a value file found on the task without reading its row again.
    ///
    /// [`Cache::record_now_or_file`]: crate::store::Cache::record_now_or_file
    pub async fn load_store(&self, key: &CacheKey, headers: &HeaderMap) -> Loaded {
        let now = Reader {
            entries: self,
            blocking: false,
            file: Cell::new(None),
        };
        if let Ok(Some(l)) = now.load(key, headers) {
            return l;
        }
        // A value-file row found above is opened there without reading it again.
        let file = now.file.into_inner();
        let entries = self.clone();
        let key = key.clone();
        let headers = headers.clone();
        let res = tokio::task::spawn_blocking(move || {
            Reader {
                entries: &entries,
                blocking: true,
                file: Cell::new(file),
            }
            .load(&key, &headers)
        })
        .await;
        match res {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => Loaded::Miss,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store lookup failed: treating as a miss");
                Loaded::Miss
            }
            Err(e) => {
                tracing::warn!(error = %e, "store lookup task failed");
                Loaded::Miss
            }
        }
    }

    /// The in-memory half of [`load`](Entries::load): `None` when the rows are not in memory
    /// under their current change stamps.
    pub fn load_hot(&self, key: &CacheKey, headers: &HeaderMap) -> Option<Loaded> {
        let (hot, store) = (&self.hot, &self.store);
        let first = hot.get(key.as_bytes(), store.change_stamp(key.as_bytes()))?;
        let (row_key, v) = match &first.value {
            HotValue::Variant { .. } | HotValue::Packed { .. } => {
                (key.as_bytes().to_vec(), first.clone())
            }
            HotValue::Index(vary) => {
                let vkey = http_cache::variant_key(key, vary.names(), headers);
                let v = hot.get(&vkey, store.change_stamp(&vkey))?;
                (vkey, v)
            }
        };
        let (head, body) = match &v.value {
            HotValue::Variant { head, body } => (head.clone(), body),
            // Decoded from the bytes its row held when read (and decoded) under this stamp;
            // bytes that no longer decode are dropped and the store asked instead.
            HotValue::Packed { meta, body } => match StoredHead::decode(meta) {
                Ok(head) => (Arc::new(head), body),
                Err(_) => {
                    hot.remove(&row_key);
                    return None;
                }
            },
            HotValue::Index(_) => return None,
        };
        // Counted always; the access only when the store would write it.
        v.set_noted(store.note_hit_since(&row_key, v.noted()));
        Some(Loaded::Found {
            row_key,
            head,
            body: StoredBody::Mem(body.clone()),
            tier: Tier::Memory,
        })
    }
}

/// One store read of an entry, either on a blocking thread (`blocking`: may wait on locks,
/// read value files, remove damaged rows) or on an async task, where every step that would
/// block answers `Ok(None)` ("do it on a blocking thread") instead.
struct Reader<'a> {
    entries: &'a Entries,
    blocking: bool,
    /// A row whose value is in a file, found by the async pass with the change stamp sampled
    /// before that read: the blocking pass opens its file instead of reading the row again.
    file: Cell<Option<(Option<ChangeStamp>, FileRow)>>,
}

impl Reader<'_> {
    /// The change stamp of `key` sampled before its row was read, and the row: `Ok(None)`
    /// when this reader may not read it without blocking.
    fn read(&self, key: &[u8]) -> crate::store::Result<Option<(Option<ChangeStamp>, Row)>> {
        let store = &self.entries.store;
        if self.blocking {
            match self.file.take() {
                Some((stamp, f)) if f.key() == key => {
                    return Ok(Some((stamp, store.open_file_row(f)?)));
                }
                other => self.file.set(other),
            }
            let stamp = store.change_stamp(key);
            return Ok(Some((stamp, store.record(key)?)));
        }
        let stamp = store.change_stamp(key);
        match store.record_now_or_file(key)? {
            RecordNow::Answered(rec) => Ok(Some((stamp, rec))),
            RecordNow::File(f) => {
                self.file.set(Some((stamp, f)));
                Ok(None)
            }
            RecordNow::Later => Ok(None),
        }
    }

    /// Remove a damaged row, then report a miss of `kind` (`Ok(None)` where it may not write).
    fn drop_row(&self, row_key: &[u8], kind: Loaded) -> crate::store::Result<Option<Loaded>> {
        if !self.blocking {
            return Ok(None);
        }
        self.entries.store.delete(row_key)?;
        Ok(Some(kind))
    }

    fn load(&self, key: &CacheKey, headers: &HeaderMap) -> crate::store::Result<Option<Loaded>> {
        let hot = &self.entries.hot;
        // Stamps are sampled before each read: the hot front keeps a row only under its stamp.
        let Some((stamp, rec)) = self.read(key.as_bytes())? else {
            return Ok(None);
        };
        let Some(rec) = rec else {
            return Ok(Some(Loaded::Miss));
        };
        let (row_key, head, rec, stamp) = match HeadRecord::decode(&rec.meta) {
            Ok(HeadRecord::Variant(head)) => (key.as_bytes().to_vec(), head, rec, stamp),
            Ok(HeadRecord::VaryIndex(vary)) => {
                let vkey = http_cache::variant_key(key, vary.names(), headers);
                let noted = self.entries.store.clock().now();
                hot.put(key.as_bytes(), HotValue::Index(vary), stamp, noted);
                let Some((vstamp, vrec)) = self.read(&vkey)? else {
                    return Ok(None);
                };
                let Some(vrec) = vrec else {
                    return Ok(Some(Loaded::VaryMiss));
                };
                match HeadRecord::decode(&vrec.meta) {
                    Ok(HeadRecord::Variant(head)) => (vkey, head, vrec, vstamp),
                    _ => return self.drop_row(&vkey, Loaded::VaryMiss),
                }
            }
            Err(e) => {
                if self.blocking {
                    tracing::warn!(key = %key, error = %e, "undecodable entry head: dropped");
                }
                return self.drop_row(key.as_bytes(), Loaded::Miss);
            }
        };
        if rec.len() != head.body_len {
            if self.blocking {
                tracing::warn!(key = %key, "stored body length differs from head: dropped");
            }
            return self.drop_row(&row_key, Loaded::Miss);
        }
        let head = Arc::new(head);
        // A body that does not match its head's digest is never served: drop the row.
        let damaged = |what: &str| -> crate::store::Result<Option<Loaded>> {
            if self.blocking {
                tracing::warn!(key = %key, "{what} does not match its digest: dropped");
            }
            self.drop_row(&row_key, Loaded::Miss)
        };
        // Inline values, and value files small enough for the in-memory front, are read
        // whole, checked, and kept in the front.
        let small = match rec.value {
            Value::Inline(v) => Ok(v),
            Value::File { .. } if !self.blocking => return Ok(None),
            Value::File { ref file, len } if hot.admits(len) => {
                use std::os::unix::fs::FileExt;
                let mut body = vec![0u8; len as usize];
                file.read_exact_at(&mut body, 0)?;
                Ok(body)
            }
            large => Err(large),
        };
        let body = match small {
            Ok(v) => {
                if xxhash_rust::xxh3::xxh3_64(&v) != head.body_digest {
                    return damaged("stored body");
                }
                let b = Bytes::from(v);
                if hot.admits(b.len() as u64) {
                    hot.put_read(
                        &row_key,
                        head.clone(),
                        Bytes::from(rec.meta),
                        b.clone(),
                        stamp,
                        // The read above noted this access.
                        self.entries.store.clock().now(),
                    );
                }
                StoredBody::Mem(b)
            }
            Err(value) => {
                // The first time this process serves a value file, check all of it
                // before sending a byte; later reads are checked as they stream.
                let id = (row_key.clone(), head.body_digest);
                let verified = &self.entries.verified;
                if let Value::File { ref file, len } = value
                    && !verified.contains(&id)
                {
                    if hash_file(file, len)? != head.body_digest {
                        return damaged("value file");
                    }
                    verified.insert(id);
                }
                let rec = Record { value, ..rec };
                StoredBody::Rec(rec, row_key.clone())
            }
        };
        Ok(Some(Loaded::Found {
            row_key,
            head,
            body,
            tier: Tier::Disk,
        }))
    }
}

/// xxh3-64 of the first `len` bytes of `file`, read with positional reads (the file's cursor,
/// from which the body is streamed afterwards, does not move).
fn hash_file(file: &std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], off)?;
        hasher.update(&buf[..want]);
        off += want as u64;
    }
    Ok(hasher.digest())
}

/// Value files this process has checked in full against their digests (bounded).
#[derive(Debug, Default)]
pub struct Verified {
    set: std::sync::Mutex<std::collections::HashSet<(Vec<u8>, u64)>>,
}

impl Verified {
    pub(super) fn contains(&self, id: &(Vec<u8>, u64)) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    pub(super) fn insert(&self, id: (Vec<u8>, u64)) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= 100_000 {
            s.clear();
        }
        s.insert(id);
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
