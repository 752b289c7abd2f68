//! In-memory front for hot store rows: decoded heads and small bodies, so a hit on a hot URL
//! needs no blocking thread, no SQLite read and no decode.
//!
//! Invariants: an entry mirrors one store row as it was read by this process, filed under the
//! row key's change stamp sampled before that read (`Cache::change_stamp`), and is used only
//! while a new sample is equal and for at most `ttl`: a write of the row by any process sharing
//! the directory (a refresh, a purge, `hoard purge`) changes the stamp, so it is seen at once;
//! the time a row is trusted bounds the rest (writes made behind the store's back): `ttl` for a
//! row read without a change stamp (no `cache.gen`: btrfs/ZFS, or not writable), and at least
//! [`STAMPED_TTL`] for one read under a stamp, so a wide working set of rows hit every few
//! seconds stays in memory instead of being read from SQLite again. This process's own writes,
//! refreshes and invalidations also remove entries directly. Freshness is still decided
//! per request from the head and the current time, so a memory hit is exactly the response a
//! store hit would be. Memory stays within `budget` bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

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
    /// A Vary index under a URL key.
    Index(Vary),
}

#[derive(Debug)]
struct Slot {
    value: Arc<HotValue>,
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

/// How long a row read under a change stamp is trusted (unless `ttl` is longer): writes by any
/// hoard process change the stamp at once, so this only bounds writes made with raw SQL.
pub const STAMPED_TTL: Duration = Duration::from_secs(60);

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

    /// The decoded row, if loaded less than `ttl` ago under the same change stamp.
    pub fn get(&self, key: &[u8], stamp: Option<ChangeStamp>) -> Option<Arc<HotValue>> {
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

    /// Remember a row read from the store under `stamp` (sampled before the read).
    pub fn put(&self, key: &[u8], value: HotValue, stamp: Option<ChangeStamp>) {
        let size = key.len()
            + 256
            + match &value {
                HotValue::Variant { head, body } => {
                    if body.len() > self.max_entry {
                        return;
                    }
                    body.len()
                        + head
                            .response_headers
                            .iter()
                            .map(|(k, v)| k.as_str().len() + v.len() + 32)
                            .sum::<usize>()
                }
                HotValue::Index(_) => 64,
            };
        if self.shard_budget == 0 || size > self.shard_budget {
            return;
        }
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        s.remove(key);
        // Make room, oldest first: O(1) per entry evicted (a full front is the normal state
        // of a working set larger than the budget, so a put must never scan the shard).
        while s.bytes + size > self.shard_budget && s.evict_oldest() {}
        s.compact();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.bytes += size;
        s.order.push_back((key.to_vec(), seq));
        s.map.insert(
            key.to_vec(),
            Slot {
                value: Arc::new(value),
                loaded: Instant::now(),
                stamp,
                size,
                seq,
            },
        );
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

    /// Bytes held (for tests).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx() -> HotValue {
        HotValue::Index(Vary::None)
    }

    #[test]
    fn get_put_remove() {
        let h = HotCache::new(1 << 20, 1024, Duration::from_secs(60));
        assert!(h.get(b"a", None).is_none());
        h.put(b"a", idx(), None);
        assert!(h.get(b"a", None).is_some());
        h.remove(b"a");
        assert!(h.get(b"a", None).is_none());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn a_changed_stamp_drops_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Cache::open(dir.path()).unwrap();
        let h = HotCache::new(1 << 20, 1024, Duration::from_secs(60));
        let before = store.change_stamp(b"a");
        assert!(before.is_some());
        h.put(b"a", idx(), before);
        assert!(h.get(b"a", store.change_stamp(b"a")).is_some());
        // Another handle (as another process would) writes the row.
        let other = crate::store::Cache::open(dir.path()).unwrap();
        other.set(b"a", b"new", None, None).unwrap();
        assert!(h.get(b"a", store.change_stamp(b"a")).is_none());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn expires_after_ttl() {
        let h = HotCache::new(1 << 20, 1024, Duration::ZERO);
        h.put(b"a", idx(), None);
        std::thread::sleep(Duration::from_millis(2));
        assert!(h.get(b"a", None).is_none());
    }

    #[test]
    fn stays_within_budget() {
        let h = HotCache::new(SHARDS * 4096, 1024, Duration::from_secs(60));
        for i in 0..10_000u32 {
            h.put(&i.to_be_bytes(), idx(), None);
        }
        assert!(h.bytes() <= SHARDS * 4096);
    }

    /// A full front evicts the oldest entries first, and its bookkeeping stays bounded
    /// however many entries pass through (removed and replaced ones included).
    #[test]
    fn a_full_front_evicts_oldest_first_in_bounded_space() {
        let h = HotCache::new(SHARDS * 4096, 1024, Duration::from_secs(60));
        let key = |i: u32| format!("k{i}").into_bytes();
        for i in 0..50_000u32 {
            h.put(&key(i), idx(), None);
            if i % 3 == 0 {
                h.remove(&key(i));
            }
            if i % 5 == 0 {
                h.put(&key(i), idx(), None); // replaced: a new place in the order
            }
        }
        assert!(h.bytes() <= SHARDS * 4096);
        assert!(
            h.get(&key(49_999), None).is_some(),
            "the newest entry is kept"
        );
        assert!(h.get(&key(1), None).is_none(), "the oldest went first");
        for sh in &h.shards {
            let s = sh.lock().unwrap();
            assert!(
                s.order.len() <= 2 * s.map.len() + 65,
                "order {} map {}",
                s.order.len(),
                s.map.len()
            );
            let live: usize = s.map.values().map(|v| v.size).sum();
            assert_eq!(live, s.bytes);
        }
    }

    #[test]
    fn remove_prefix_drops_variants() {
        let h = HotCache::new(1 << 20, 1024, Duration::from_secs(60));
        h.put(b"GET http://a/x", idx(), None);
        h.put(b"GET http://a/x\0accept-encoding=gzip", idx(), None);
        h.put(b"GET http://a/y", idx(), None);
        h.remove_prefix(b"GET http://a/x");
        assert!(h.get(b"GET http://a/x", None).is_none());
        assert!(h.get(b"GET http://a/y", None).is_some());
    }

    #[test]
    fn zero_budget_disables() {
        let h = HotCache::new(0, 1024, Duration::from_secs(60));
        h.put(b"a", idx(), None);
        assert!(h.get(b"a", None).is_none());
        assert!(!h.admits(1));
    }
}
