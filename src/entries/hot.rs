//! In-memory front for hot store rows: heads and small bodies, so a hit on a hot URL needs no
//! blocking thread and no SQLite read. A response is kept decoded (no decode on a hit) while
//! it fits in free room; once the front is full, a row read from the store is kept packed (its
//! stored head as the store holds it, decoded again on each hit: about half the memory of a
//! decoded 1 KiB response), so a working set larger than the front has more of it in memory.
//!
//! Invariants: an entry mirrors one store row as it was read by this process, filed under the
//! row key's change stamp sampled before that read (`Cache::change_stamp`), or as this process
//! wrote it (a fill), filed under the stamp the store proves belongs to that write
//! (`Cache::write_stamp` inside the write transaction, `Cache::stamp_after_write` after it;
//! never a stamp merely sampled after the commit, which may be another process's newer write),
//! and is used only while a new sample is equal and for at most `ttl`: a write of the row by
//! any process sharing the directory (a refresh, a purge, `hoard purge`) changes the stamp, so
//! it is seen at once; the time a row is trusted bounds the rest (writes made behind the
//! store's back): `ttl` for a row read without a change stamp (no `cache.gen`: btrfs/ZFS, or
//! not writable), and at least [`STAMPED_TTL`] for one read under a stamp, so a wide working
//! set of rows hit every few seconds stays in memory instead of being read from SQLite again.
//! This process's own refreshes and invalidations also remove entries directly. Freshness is still decided
//! per request from the head and the current time, so a memory hit is exactly the response a
//! store hit would be. Memory stays within `budget` bytes, counted as the process holds
//! them (allocations, the header maps' tables, the key's two copies: [`footprint`]), not
//! only the body's bytes.
//!
//! A hit also tells the store about the access (LRU order, hit counts) through
//! `Cache::note_hit_since`: the entry remembers when its access was last noted, so a row hit
//! many times a minute adds one key to the store's next access flush, not one per hit.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http_cache::{StoredHead, Vary};
use crate::store::ChangeStamp;

/// What a row holds, decoded.
#[derive(Debug)]
pub enum HotValue {
    /// A stored response: head and the whole body.
    Variant {
        /// Decoded head.
        head: Arc<StoredHead>,
        /// The body.
        body: Bytes,
    },
    /// A stored response in its stored form: the encoded head ([`StoredHead::encode`], as
    /// read from its row), decoded on each hit, and the whole body. What a full front files.
    Packed {
        /// The head as the store holds it.
        meta: Bytes,
        /// The body.
        body: Bytes,
    },
    /// A Vary index under a URL key.
    Index(Vary),
}

/// The form in which [`HotCache::put_read`] kept a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Decoded: it fit in free room.
    Decoded,
    /// Packed ([`HotValue::Packed`]): the front was full; the oldest rows made room.
    Packed,
    /// Not kept (a body too large, a zero budget, or larger than a shard).
    NotKept,
}

/// A row kept in memory, and when its access was last noted to the store.
#[derive(Debug)]
pub struct HotEntry {
    /// The decoded row.
    pub value: HotValue,
    /// Store clock seconds (f64 bits) of the access last noted for this row.
    noted: AtomicU64,
}

impl HotEntry {
    /// Store clock seconds of the access last noted for this row.
    pub fn noted(&self) -> f64 {
        f64::from_bits(self.noted.load(Ordering::Relaxed))
    }

    /// Remember `t` as the time of the access last noted.
    pub fn set_noted(&self, t: f64) {
        self.noted.store(t.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Slot {
    value: Arc<HotEntry>,
    loaded: Instant,
    stamp: Option<ChangeStamp>,
    size: usize,
    /// Insertion number: the slot's place in its shard's `order`.
    seq: u64,
}

/// One shard: the map, and its keys in insertion order for O(1) eviction (first in, first
/// out). `order` may hold keys already removed or replaced (their `seq` no longer matches);
/// they are skipped when met and compacted away once they are the majority.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Vec<u8>, Slot>,
    order: VecDeque<(Vec<u8>, u64)>,
    next_seq: u64,
    bytes: usize,
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.size;
        }
    }

    /// Evict the oldest entry still present; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|s| s.seq == seq) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    /// File `value` (counted as `size` bytes) as the newest entry; the caller made room.
    fn file(
        &mut self,
        key: &[u8],
        value: HotValue,
        size: usize,
        stamp: Option<ChangeStamp>,
        noted: f64,
    ) {
        self.compact();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += size;
        self.order.push_back((key.to_vec(), seq));
        self.map.insert(
            key.to_vec(),
            Slot {
                value: Arc::new(HotEntry {
                    value,
                    noted: AtomicU64::new(noted.to_bits()),
                }),
                loaded: Instant::now(),
                stamp,
                size,
                seq,
            },
        );
    }

    /// Drop `order` entries of keys no longer present once they outnumber the live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
        }
    }
}

/// Bounded map from row key to decoded row.
#[derive(Debug)]
pub struct HotCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
    max_entry: usize,
    ttl: Duration,
}

const SHARDS: usize = 16;

/// A row this process wrote (a fill) is kept only while the front holds less than
/// 1/FILL_SHARE of its budget: most URLs a proxy stores are never asked for again (a
/// crawler's), and each holds memory (about 4 KiB for a 1 KiB response) that a process storing
/// many would only pay for; rows read from the store may take all of it.
const FILL_SHARE: usize = 16;

/// Roughly the least a stored response holds besides its body (its decoded head, the key, the
/// map's slot; [`footprint`]), for [`HotCache::takes_fill`]'s estimate.
const FILL_HEAD: usize = 2048;

/// Whether an insertion may evict other rows to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Oldest rows out until it fits (a row read from the store: it was asked for).
    Evict,
    /// Only into free room (a row just written: it may never be asked for).
    IfFree,
}

/// How long a row read under a change stamp is trusted (unless `ttl` is longer): writes by any
/// hoard process change the stamp at once, so this only bounds writes made with raw SQL. Ten
/// minutes: with a minute, a front of 100,000 entries read each of them from SQLite again
/// every minute (1,700 store reads a second), and a working set hit in bursts minutes apart
/// found the front cold at each burst.
pub const STAMPED_TTL: Duration = Duration::from_secs(600);

impl HotCache {
    /// A cache of at most `budget` bytes whose entries are trusted for `ttl`. Bodies larger
    /// than `max_entry` bytes are never kept. A zero budget disables it.
    pub fn new(budget: usize, max_entry: usize, ttl: Duration) -> Self {
        HotCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: budget / SHARDS,
            max_entry,
            ttl,
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let h = xxhash_rust::xxh3::xxh3_64(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Is this body small enough to keep?
    pub fn admits(&self, body_len: u64) -> bool {
        self.shard_budget > 0 && body_len as usize <= self.max_entry
    }

    /// Would a fill of `key` with a body of `body_len` bytes be kept now (the body fits and
    /// the key's shard is under the fills' share, [`FILL_SHARE`])? Asked before the fill
    /// copies its body for the front: past the share, a fill builds nothing for it.
    /// [`HotCache::put_if_room`] decides again when the entry is filed.
    pub fn takes_fill(&self, key: &[u8], body_len: u64) -> bool {
        self.admits(body_len) && {
            let s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
            s.bytes + body_len as usize + FILL_HEAD <= self.shard_budget / FILL_SHARE
        }
    }

    /// The longest body it keeps (0 when disabled).
    pub fn max_body(&self) -> u64 {
        if self.shard_budget > 0 {
            self.max_entry as u64
        } else {
            0
        }
    }

    /// The decoded row, if loaded less than `ttl` ago under the same change stamp.
    pub fn get(&self, key: &[u8], stamp: Option<ChangeStamp>) -> Option<Arc<HotEntry>> {
        if self.shard_budget == 0 {
            return None;
        }
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let slot = s.map.get(key)?;
        if slot.stamp == stamp && slot.loaded.elapsed() <= self.trust(stamp) {
            return Some(slot.value.clone());
        }
        s.remove(key);
        s.compact();
        None
    }

    /// How long a row read under `stamp` may be used.
    fn trust(&self, stamp: Option<ChangeStamp>) -> Duration {
        match stamp {
            Some(_) => self.ttl.max(STAMPED_TTL),
            None => self.ttl,
        }
    }

    /// Remember a row read from the store under `stamp` (sampled before the read), whose
    /// access the store noted at `noted` (store clock seconds), evicting the oldest rows to
    /// make room.
    pub fn put(&self, key: &[u8], value: HotValue, stamp: Option<ChangeStamp>, noted: f64) {
        self.insert(key, value, stamp, noted, Room::Evict);
    }

    /// Remember a row this process wrote (a fill), under the stamp the store says is its
    /// write's own (`Cache::stamp_after_write`), only if it fits without evicting another and
    /// the front is under a sixteenth full ([`FILL_SHARE`]): most URLs a proxy stores are never
    /// asked for again, and must neither push out rows that were nor fill memory.
    /// `false` when not kept.
    pub fn put_if_room(
        &self,
        key: &[u8],
        value: HotValue,
        stamp: Option<ChangeStamp>,
        noted: f64,
    ) -> bool {
        self.insert(key, value, stamp, noted, Room::IfFree)
    }

    /// Remember a response read from the store under `stamp` (sampled before the read), whose
    /// access the store noted at `noted`: decoded while it fits in free room, else packed
    /// (`meta`, the head as its row holds it; [`HotValue::Packed`]), the oldest rows evicted to
    /// make room. A full front thus fills with packed rows, about twice as many.
    pub fn put_read(
        &self,
        key: &[u8],
        head: Arc<StoredHead>,
        meta: Bytes,
        body: Bytes,
        stamp: Option<ChangeStamp>,
        noted: f64,
    ) -> Form {
        if self.shard_budget == 0 || body.len() > self.max_entry {
            return Form::NotKept;
        }
        let decoded = HotValue::Variant {
            head,
            body: body.clone(),
        };
        let decoded_size = footprint(key, &decoded);
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        s.remove(key);
        let (value, size, form) = if s.bytes + decoded_size <= self.shard_budget {
            (decoded, decoded_size, Form::Decoded)
        } else {
            let packed = HotValue::Packed { meta, body };
            let size = footprint(key, &packed);
            (packed, size, Form::Packed)
        };
        if size > self.shard_budget {
            s.compact();
            return Form::NotKept;
        }
        while s.bytes + size > self.shard_budget && s.evict_oldest() {}
        s.file(key, value, size, stamp, noted);
        form
    }

    fn insert(
        &self,
        key: &[u8],
        value: HotValue,
        stamp: Option<ChangeStamp>,
        noted: f64,
        room: Room,
    ) -> bool {
        if let HotValue::Variant { body, .. } | HotValue::Packed { body, .. } = &value
            && body.len() > self.max_entry
        {
            return false;
        }
        let size = footprint(key, &value);
        if self.shard_budget == 0 || size > self.shard_budget {
            return false;
        }
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        s.remove(key);
        match room {
            // Make room, oldest first: O(1) per entry evicted (a full front is the normal
            // state of a working set larger than the budget, so a put must never scan the
            // shard).
            Room::Evict => while s.bytes + size > self.shard_budget && s.evict_oldest() {},
            Room::IfFree if s.bytes + size > self.shard_budget / FILL_SHARE => {
                s.compact();
                return false;
            }
            Room::IfFree => {}
        }
        s.file(key, value, size, stamp, noted);
        true
    }

    /// Forget a row.
    pub fn remove(&self, key: &[u8]) {
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        s.remove(key);
        s.compact();
    }

    /// Forget every row whose key starts with `prefix` (a URL key and all its variants).
    pub fn remove_prefix(&self, prefix: &[u8]) {
        for sh in &self.shards {
            let mut s = sh.lock().unwrap_or_else(|e| e.into_inner());
            let mut freed = 0;
            s.map.retain(|k, slot| {
                let keep = !k.starts_with(prefix);
                if !keep {
                    freed += slot.size;
                }
                keep
            });
            s.bytes -= freed;
            s.compact();
        }
    }

    /// Entries held (the `hoard_memory_front_entries` gauge).
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    /// Bytes held, as counted by [`footprint`] (the `hoard_memory_front_bytes` gauge).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

/// malloc's bookkeeping per allocation, and its rounding (glibc: 16 bytes).
const ALLOC: usize = 16;

/// Bytes of one allocation of `n` bytes.
fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.next_multiple_of(ALLOC) + ALLOC
    }
}

/// Bytes a header map holds: its index table (a power of two of 4-byte slots, 4/3 of its
/// capacity), its entries (name, value, hash and links each, capacity of them), and each
/// value's and name's own allocation (a standard name has none: counted anyway, a bound).
fn map_bytes(h: &HeaderMap) -> usize {
    let cap = h.capacity();
    if cap == 0 {
        return 0;
    }
    let slots = (cap + cap / 3).next_power_of_two();
    let bucket = size_of::<(HeaderName, HeaderValue)>() + 4 * size_of::<usize>();
    alloc(slots * 4)
        + alloc(cap * bucket)
        + h.iter()
            .map(|(k, v)| alloc(v.len()) + alloc(k.as_str().len()))
            .sum::<usize>()
}

/// Bytes of a URI's text (one shared buffer, plus its sharing header).
fn uri_len(uri: &http::Uri) -> usize {
    uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + 4 * size_of::<usize>()
}

/// Bytes an entry holds in this process: the key twice (the map's and the eviction
/// order's), the slot and the map's bucket, the shared entry, and for a response its body,
/// its decoded head (URI, both header maps, the memo's parsed `Cache-Control` and freshness,
/// a flat `MEMO`) or, packed, its encoded head. The head must be one of its own (decoded
/// from the store, or a fill's [`StoredHead::detached`]): a head that still shares its
/// connections' read buffers holds them too, which this does not count. Checked against the
/// heap bytes of entries from no body to 1 MiB (within 10%:
/// `footprint_is_what_entries_take_in_the_heap`) and against RSS (`benches/front_rss.sh`,
/// README's `memory-cache-size`): a 1 KiB response with 8 header fields is about 4 KiB
/// decoded and 1.8 KiB packed.
pub fn footprint(key: &[u8], value: &HotValue) -> usize {
    /// The memo's derived values once computed (parsed directives, lookup key).
    const MEMO: usize = 128;
    let fixed = 2 * alloc(key.len())
        + size_of::<(Vec<u8>, Slot)>() * 8 / 7 // the map's bucket at its load factor
        + size_of::<(Vec<u8>, u64)>()
        + alloc(size_of::<HotEntry>() + 2 * size_of::<usize>());
    fixed
        + match value {
            HotValue::Variant { head, body } => {
                alloc(body.len())
                    + alloc(size_of::<StoredHead>() + 2 * size_of::<usize>())
                    + alloc(uri_len(&head.uri))
                    + map_bytes(&head.request_headers)
                    + map_bytes(&head.response_headers)
                    + head.rule.as_ref().map_or(0, |r| alloc(r.len()))
                    + MEMO
            }
            // The encoded head and the body (shared with the response that read it: its
            // `Bytes` header too); decoding on a hit holds nothing after it.
            HotValue::Packed { meta, body } => {
                alloc(meta.len()) + alloc(body.len()) + alloc(3 * size_of::<usize>())
            }
            HotValue::Index(vary) => 64 * (1 + vary.names().len()),
        }
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod tests;
