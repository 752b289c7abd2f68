//! Partial entries (RFC 9111 3.3, 3.4): the pieces of a representation stored from 206
//! responses, combined while their strong validator stays the same, and turned into a normal
//! stored 200 under the URL key once they cover the whole representation.
//!
//! Layout: one row per URL under `hoard-partial\0<URL key>`, tagged with the URL key (purge and
//! invalidation remove it with the URL's other rows); meta = [`PartialRecord`] (format 3), value
//! = the pieces' bytes in order. Partial rows stay local (never in the shared tier), are never
//! kept in the in-memory front, and only exist for responses without `Vary`.
//!
//! Invariants: a piece is served only when the row's value matches its length and digest (a
//! damaged row is deleted); pieces of different representations never mix; at most
//! [`MAX_PIECES`] pieces and [`MAX_PARTIAL_LEN`] complete bytes per entry; at most
//! [`AT_ONCE`] partial entries in memory per process ([`Entries::partial_permit`], never
//! waited for: without a permit a range is simply not answered from, or stored as, pieces),
//! and a served range is copied out, so no client holds a whole entry's buffer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{StatusCode, response};

use super::Entries;
use crate::http_cache::{
    self, CacheKey, ContentRange, HeadRecord, PartialRecord, Pieces, Source, StoredHead,
};
use crate::store::Value;

/// Most pieces one partial entry holds; a part that would make more is served, not stored.
pub const MAX_PIECES: usize = 16;
/// Largest complete representation stored from parts (they are combined in memory).
pub const MAX_PARTIAL_LEN: u64 = 64 * 1024 * 1024;
/// Partial entries read or combined in memory at once by one process.
pub const AT_ONCE: usize = 4;

/// A stored partial entry, read whole and verified.
#[derive(Debug, Clone)]
pub struct Partial {
    /// The representation's head (status 200, no `Content-Range`).
    pub head: Arc<StoredHead>,
    /// Length of the complete representation.
    pub complete_len: u64,
    /// The spans held.
    pub pieces: Pieces,
    /// The pieces' bytes, in order.
    pub body: Bytes,
}

impl Partial {
    /// The bytes `first..=last`, when one stored piece holds them all.
    /// A copy of the bytes `first..=last`, when one piece holds them (a copy: the entry's
    /// whole buffer is freed once the caller is done with the entry).
    pub fn slice(&self, first: u64, last: u64) -> Option<Bytes> {
        let off = self.pieces.locate(first, last)? as usize;
        Some(Bytes::copy_from_slice(
            &self.body[off..off + (last - first + 1) as usize],
        ))
    }
}

/// What storing a part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStored {
    /// Kept as (or combined into) a partial entry.
    Partial,
    /// The parts now cover the representation: stored as a complete 200 under the URL key.
    Complete,
    /// Not kept: too many pieces, too large, invalidated meanwhile, or the store refused.
    Refused,
}

/// One 206 from an origin, to store.
#[derive(Debug)]
pub struct Part<'a> {
    /// The request as sent, without `Range`.
    pub req: &'a Parts,
    /// The 206's head.
    pub res: &'a response::Parts,
    /// Its `Content-Range`.
    pub range: ContentRange,
    /// Its body (exactly the range).
    pub body: Bytes,
    /// When the request went and the response came, and how long the exchange took.
    pub times: (SystemTime, SystemTime, Duration),
    /// Invalidation generation when the request went.
    pub generation: u64,
}

/// What every partial entry's row key starts with.
const ROW_PREFIX: &[u8] = b"hoard-partial\0";

/// Row key of the partial entry of the URL key `url_key`.
pub(super) fn row_key(url_key: &[u8]) -> Vec<u8> {
    [ROW_PREFIX, url_key].concat()
}

/// Whether `store` holds any partial entry (one index lookup).
pub(super) fn any_stored(store: &crate::store::Cache) -> crate::store::Result<bool> {
    store.contains_prefix(ROW_PREFIX)
}

impl Entries {
    /// A permit to hold one partial entry in memory (read it, or collect and combine a part),
    /// `None` when [`AT_ONCE`] are already held: the caller then does without pieces.
    pub fn partial_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.partial_budget.clone().try_acquire_owned().ok()
    }

    /// The partial entry of `key`, if one is stored and intact.
    pub async fn load_partial(&self, key: &CacheKey) -> Option<Partial> {
        let (store, rk) = (self.store.clone(), row_key(key.as_bytes()));
        let res = tokio::task::spawn_blocking(move || -> crate::store::Result<Option<Partial>> {
            let Some(rec) = store.record(&rk)? else {
                return Ok(None);
            };
            let Ok(p) = PartialRecord::decode(&rec.meta) else {
                store.delete(&rk)?;
                return Ok(None);
            };
            let body = match rec.value {
                Value::Inline(v) => v,
                Value::File { ref file, len } => {
                    use std::os::unix::fs::FileExt;
                    let mut v = vec![0u8; len as usize];
                    file.read_exact_at(&mut v, 0)?;
                    v
                }
            };
            if body.len() as u64 != p.head.body_len
                || xxhash_rust::xxh3::xxh3_64(&body) != p.head.body_digest
            {
                tracing::warn!("stored partial body does not match its head: dropped");
                store.delete(&rk)?;
                return Ok(None);
            }
            Ok(Some(Partial {
                head: Arc::new(p.head),
                complete_len: p.complete_len,
                pieces: p.pieces,
                body: Bytes::from(body),
            }))
        })
        .await;
        match res {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading a partial entry failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Store one 206 (RFC 9111 3.3): combined with the stored pieces when both carry the same
    /// strong validator (3.4), replacing them otherwise; a complete result becomes the URL's
    /// stored 200 and the partial row goes.
    pub async fn store_part(&self, key: &CacheKey, part: Part<'_>) -> PartStored {
        let complete = part.range.complete;
        if complete > MAX_PARTIAL_LEN || !self.health.may_store() {
            return PartStored::Refused;
        }
        let (t_req, t_res, delta) = part.times;
        // The representation's head: a 200 of the complete length, without the range.
        let mut whole = part.res.clone();
        whole.status = StatusCode::OK;
        whole.headers.remove(header::CONTENT_RANGE);
        whole
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(complete));
        let head = StoredHead::new(part.req, &whole, t_req, t_res, 0, 0, delta);
        let existing = self
            .load_partial(key)
            .await
            .filter(|p| p.complete_len == complete)
            .filter(|p| {
                http_cache::same_representation(&p.head.response_headers, &head.response_headers)
            });
        let new = part.range.piece();
        let (pieces, body) = match &existing {
            Some(p) => {
                let (pieces, plan) = p.pieces.combine(new);
                if pieces.as_slice().len() > MAX_PIECES {
                    return PartStored::Refused;
                }
                let mut v = Vec::with_capacity(pieces.stored_len() as usize);
                for (src, len) in plan {
                    let (from, off) = match src {
                        Source::Stored(o) => (&p.body, o),
                        Source::New(o) => (&part.body, o),
                    };
                    v.extend_from_slice(&from[off as usize..(off + len) as usize]);
                }
                (pieces, v)
            }
            None => (
                Pieces::new(vec![new]).expect("one non-empty piece"),
                part.body.to_vec(),
            ),
        };
        let mut head = head;
        head.body_len = body.len() as u64;
        head.body_digest = xxhash_rust::xxh3::xxh3_64(&body);
        let done = pieces.is_complete(complete);
        let tag = key.as_str().to_string();
        let (store, hot, inv) = (self.store.clone(), self.hot.clone(), self.inv.clone());
        let (url_key, prk, generation) = (
            key.as_bytes().to_vec(),
            row_key(key.as_bytes()),
            part.generation,
        );
        let (meta, rk) = if done {
            (HeadRecord::Variant(head.clone()).encode(), url_key.clone())
        } else {
            let rec = PartialRecord {
                head: head.clone(),
                complete_len: complete,
                pieces,
            };
            (rec.encode(), prk.clone())
        };
        let value = body.clone();
        let res = tokio::task::spawn_blocking(move || -> crate::store::Result<bool> {
            if inv.since(&tag, generation) {
                return Ok(false);
            }
            let mut w = store.writer(&rk, None, Some(&tag))?;
            std::io::Write::write_all(&mut w, &value)?;
            w.set_meta(meta);
            w.commit()?;
            hot.remove(&rk);
            if done {
                store.delete(&prk)?;
            }
            if inv.since(&tag, generation) {
                store.delete(&rk)?;
                return Ok(false);
            }
            Ok(true)
        })
        .await;
        match res {
            Ok(Ok(true)) if done => {
                self.health.write_ok();
                self.share(key.as_str(), key.as_bytes(), &head, &body, None)
                    .await;
                PartStored::Complete
            }
            Ok(Ok(true)) => {
                self.health.write_ok();
                PartStored::Partial
            }
            Ok(Ok(false)) => PartStored::Refused,
            Ok(Err(e)) => {
                self.health.write_failed(&e);
                PartStored::Refused
            }
            Err(_) => PartStored::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partial entries are read whole into memory: many concurrent range requests must not
    /// each hold up to 64 MiB. Past `AT_ONCE`, no permit (the request goes on without pieces).
    #[test]
    fn partial_entries_in_memory_are_bounded_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Cache::open(dir.path()).unwrap();
        let entries = Entries::new(
            store,
            super::super::hot::HotCache::new(0, 0, Duration::ZERO),
        );
        let held: Vec<_> = (0..AT_ONCE).map(|_| entries.partial_permit()).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(entries.partial_permit().is_none(), "one more than AT_ONCE");
        drop(held);
        assert!(
            entries.partial_permit().is_some(),
            "released permits are free again"
        );
    }
}
