//! In-memory front for hot store rows: decoded heads and small bodies, so a hit on a hot URL
//! needs no blocking thread, no SQLite read and no decode.
//!
//! Invariants: an entry mirrors one store row as it was read or written by this process, and
//! is trusted for at most `ttl` after that (other processes sharing the directory may replace
//! or purge the row; their changes are seen here within `ttl`). This process's own writes,
//! refreshes and invalidations update or remove entries at once. Freshness is still decided
//! per request from the head and the current time, so a memory hit is exactly the response a
//! store hit would be. Memory stays within `budget` bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::http_cache::{StoredHead, Vary};

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
    size: usize,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Vec<u8>, Slot>,
    bytes: usize,
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

    /// The decoded row, if loaded less than `ttl` ago.
    pub fn get(&self, key: &[u8]) -> Option<Arc<HotValue>> {
        if self.shard_budget == 0 {
            return None;
        }
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let slot = s.map.get(key)?;
        if slot.loaded.elapsed() <= self.ttl {
            return Some(slot.value.clone());
        }
        let size = slot.size;
        s.map.remove(key);
        s.bytes -= size;
        None
    }

    /// Remember a row.
    pub fn put(&self, key: &[u8], value: HotValue) {
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
        if let Some(old) = s.map.remove(key) {
            s.bytes -= old.size;
        }
        // Make room: expired entries first, then arbitrary ones (hash order is effectively random).
        if s.bytes + size > self.shard_budget {
            let ttl = self.ttl;
            let mut freed = 0;
            s.map.retain(|_, slot| {
                let keep = slot.loaded.elapsed() <= ttl;
                if !keep {
                    freed += slot.size;
                }
                keep
            });
            s.bytes -= freed;
            while s.bytes + size > self.shard_budget {
                let Some(k) = s.map.keys().next().cloned() else {
                    break;
                };
                if let Some(old) = s.map.remove(&k) {
                    s.bytes -= old.size;
                }
            }
        }
        s.bytes += size;
        s.map.insert(
            key.to_vec(),
            Slot {
                value: Arc::new(value),
                loaded: Instant::now(),
                size,
            },
        );
    }

    /// Forget a row.
    pub fn remove(&self, key: &[u8]) {
        let mut s = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = s.map.remove(key) {
            s.bytes -= old.size;
        }
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
        assert!(h.get(b"a").is_none());
        h.put(b"a", idx());
        assert!(h.get(b"a").is_some());
        h.remove(b"a");
        assert!(h.get(b"a").is_none());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn expires_after_ttl() {
        let h = HotCache::new(1 << 20, 1024, Duration::ZERO);
        h.put(b"a", idx());
        std::thread::sleep(Duration::from_millis(2));
        assert!(h.get(b"a").is_none());
    }

    #[test]
    fn stays_within_budget() {
        let h = HotCache::new(SHARDS * 4096, 1024, Duration::from_secs(60));
        for i in 0..10_000u32 {
            h.put(&i.to_be_bytes(), idx());
        }
        assert!(h.bytes() <= SHARDS * 4096);
    }

    #[test]
    fn remove_prefix_drops_variants() {
        let h = HotCache::new(1 << 20, 1024, Duration::from_secs(60));
        h.put(b"GET http://a/x", idx());
        h.put(b"GET http://a/x\0accept-encoding=gzip", idx());
        h.put(b"GET http://a/y", idx());
        h.remove_prefix(b"GET http://a/x");
        assert!(h.get(b"GET http://a/x").is_none());
        assert!(h.get(b"GET http://a/y").is_some());
    }

    #[test]
    fn zero_budget_disables() {
        let h = HotCache::new(0, 1024, Duration::from_secs(60));
        h.put(b"a", idx());
        assert!(h.get(b"a").is_none());
        assert!(!h.admits(1));
    }
}
