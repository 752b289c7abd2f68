//! The read-side memory layer: recently read small values kept in this process, served only
//! while the shared change counters of `cache.gen` ([`generations`](crate::generations)) say
//! no process changed their key.
//!
//! A `get` served from SQLite costs a read transaction (file locks on the WAL index) and a
//! B-tree lookup, about 3 µs. A value read again is served from memory instead, in well
//! under a microsecond, and stays exactly as correct as a database read: a reader samples
//! the key's [`Stamp`] *before* it reads the row and files the copy under it; the copy is
//! served only while a new sample is equal, the row is unexpired and the copy is younger
//! than [`TRUST`].
//!
//! Why that is safe: a write that commits after the reader sampled bumps the key's counter
//! after its commit, so the copy's stamp no longer matches. A write that committed before
//! the sample is in what the reader read. The bump before `COMMIT` covers copies taken before
//! the write began if the writer dies between its commit and the second bump; the only
//! window left (a read between those two points by a writer that then dies) is bounded by
//! [`TRUST`]. Unrelated keys share a counter with probability 1/slots, which only costs a
//! re-read.
//!
//! Only inline values (below `min_file_size`) are kept, within a byte budget per handle
//! ([`DEFAULT_BUDGET`], `CacheBuilder::memory_cache_size`; 0 turns the layer off). Entries
//! leave in insertion order (FIFO), which costs nothing on a hit.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

pub use crate::generations::Stamp;
pub(crate) use crate::generations::{GEN_FILE, Generations, key_hash};

/// Default memory budget of one cache handle for values read from the store.
pub const DEFAULT_BUDGET: u64 = 32 << 20;
/// Longest a copy is served without reading the row again, in seconds of the cache clock.
pub const TRUST: f64 = 1.0;
/// Independent locks, so threads reading different keys rarely contend.
const SHARDS: usize = 16;
/// Remembered misses may take at most 1/ABSENT_SHARE of the budget.
const ABSENT_SHARE: u64 = 4;
/// Bytes charged per entry on top of key and value (map, queue and allocation overhead).
const ENTRY_OVERHEAD: u64 = 96;

/// A value as read from the store, with what `get_entry` returns beside it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub(crate) value: Vec<u8>,
    /// The row's meta (`memoize_stampede` keeps its compute time there).
    pub(crate) meta: Vec<u8>,
    pub(crate) expire_time: Option<f64>,
    pub(crate) tag: Option<String>,
}

#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    /// `None`: the key had no live row (a miss is remembered like a value).
    copy: Option<Held>,
    stamp: Stamp,
    read_at: f64,
    seq: u64,
}

/// The map is keyed by the xxh3 hash already computed for the slot: no second hash.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Slot, BuildHasherDefault<Identity>>,
    order: VecDeque<(u64, u64)>,
    bytes: u64,
    /// Part of `bytes` held by remembered misses.
    absent_bytes: u64,
    seq: u64,
}

impl Shard {
    fn remove(&mut self, h: u64) {
        if let Some(old) = self.map.remove(&h) {
            let c = cost(&old.key, &old.copy);
            self.bytes -= c;
            if old.copy.is_none() {
                self.absent_bytes -= c;
            }
        }
    }
}

fn cost(key: &[u8], copy: &Option<Held>) -> u64 {
    let held = copy.as_ref().map_or(0, |c| {
        c.value.len() + c.meta.len() + c.tag.as_ref().map_or(0, |t| t.len())
    });
    (key.len() + held) as u64 + ENTRY_OVERHEAD
}

/// This handle's copies.
#[derive(Debug)]
pub(crate) struct MemoryLayer {
    shards: Vec<Mutex<Shard>>,
    budget_per_shard: u64,
}

impl MemoryLayer {
    pub(crate) fn new(budget: u64) -> MemoryLayer {
        MemoryLayer {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            budget_per_shard: budget / SHARDS as u64,
        }
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The low 16 bits pick the slot and the map's bucket, the top 7 its probe tag: use
        // bits in between for the shard.
        self.shards[(h >> 32) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `key` if it is still current (same stamp, unexpired at `now`, read
    /// less than [`TRUST`] ago): `Some(Some(copy))`, or `Some(None)` for a remembered miss.
    /// An entry that fails the test is dropped.
    pub(crate) fn get(&self, h: u64, key: &[u8], stamp: Stamp, now: f64) -> Option<Option<Held>> {
        let mut shard = self.shard(h);
        let s = shard.map.get(&h)?;
        let current = *s.key == *key
            && s.stamp == stamp
            && s.copy
                .as_ref()
                .is_none_or(|c| c.expire_time.is_none_or(|t| t > now))
            && now >= s.read_at
            && now - s.read_at < TRUST;
        if current {
            return Some(s.copy.clone());
        }
        shard.remove(h);
        None
    }

    /// Keeps `copy` of `key` (`None`: no live row), read from the store under `stamp` at
    /// `now`.
    pub(crate) fn put(&self, h: u64, key: &[u8], copy: Option<Held>, stamp: Stamp, now: f64) {
        let size = cost(key, &copy);
        if size > self.budget_per_shard / 8 {
            return;
        }
        let mut shard = self.shard(h);
        shard.remove(h);
        if copy.is_none() {
            // Misses of many distinct keys (a scan) must not push out the values.
            if shard.absent_bytes + size > self.budget_per_shard / ABSENT_SHARE {
                return;
            }
            shard.absent_bytes += size;
        }
        shard.seq += 1;
        let seq = shard.seq;
        shard.bytes += size;
        shard.map.insert(
            h,
            Slot {
                key: key.into(),
                copy,
                stamp,
                read_at: now,
                seq,
            },
        );
        shard.order.push_back((h, seq));
        while shard.bytes > self.budget_per_shard {
            let Some((old, old_seq)) = shard.order.pop_front() else {
                break;
            };
            if shard.map.get(&old).is_some_and(|s| s.seq == old_seq) {
                shard.remove(old);
            }
        }
        // Queue entries of replaced or dropped copies are skipped above; keep the queue
        // from growing without bound when the same keys are re-read under the budget.
        if shard.order.len() > 2 * shard.map.len() + 64 {
            let Shard { map, order, .. } = &mut *shard;
            order.retain(|(h, seq)| map.get(h).is_some_and(|s| s.seq == *seq));
        }
    }

    /// Bytes held (keys, values and per-entry overhead).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(v: &[u8]) -> Option<Held> {
        Some(Held {
            value: v.to_vec(),
            meta: Vec::new(),
            expire_time: None,
            tag: None,
        })
    }

    #[test]
    fn a_copy_is_served_only_under_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::map(dir.path()).unwrap();
        let m = MemoryLayer::new(1 << 20);
        let h = key_hash(b"k");
        let stamp = g.stamp(h);
        m.put(h, b"k", copy(b"v"), stamp, 10.0);
        assert_eq!(
            m.get(h, b"k", g.stamp(h), 10.5).unwrap().unwrap().value,
            b"v"
        );
        // Another process (a second mapping of the same file) changes the key.
        let other = Generations::map(dir.path()).unwrap();
        other.bump(h);
        assert!(m.get(h, b"k", g.stamp(h), 10.5).is_none());
        assert_eq!(m.bytes(), 0, "a stale copy is dropped");
        m.put(h, b"k", copy(b"w"), g.stamp(h), 11.0);
        other.bump_all();
        assert!(m.get(h, b"k", g.stamp(h), 11.0).is_none());
        // A miss is remembered too, under the same rule.
        let absent = key_hash(b"absent");
        m.put(absent, b"absent", None, g.stamp(absent), 12.0);
        assert_eq!(m.get(absent, b"absent", g.stamp(absent), 12.5), Some(None));
        other.bump(absent);
        assert_eq!(m.get(absent, b"absent", g.stamp(absent), 12.5), None);
    }

    #[test]
    fn copies_expire_with_the_row_and_after_the_trust_window() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::map(dir.path()).unwrap();
        let m = MemoryLayer::new(1 << 20);
        let h = key_hash(b"k");
        let mut c = copy(b"v");
        c.as_mut().unwrap().expire_time = Some(20.0);
        m.put(h, b"k", c, g.stamp(h), 19.5);
        assert!(m.get(h, b"k", g.stamp(h), 19.9).is_some());
        assert!(m.get(h, b"k", g.stamp(h), 20.0).is_none(), "expired row");
        m.put(h, b"k", copy(b"v"), g.stamp(h), 30.0);
        assert!(
            m.get(h, b"k", g.stamp(h), 30.0 + TRUST).is_none(),
            "too old"
        );
        m.put(h, b"k", copy(b"v"), g.stamp(h), 30.0);
        assert!(
            m.get(h, b"k", g.stamp(h), 29.0).is_none(),
            "clock went back"
        );
    }

    #[test]
    fn a_hash_collision_never_serves_another_key() {
        let m = MemoryLayer::new(1 << 20);
        let s = Stamp(0, 0);
        m.put(7, b"a", copy(b"1"), s, 0.0);
        assert!(m.get(7, b"b", s, 0.0).is_none());
    }

    #[test]
    fn the_budget_holds_and_oldest_copies_leave_first() {
        let budget = 64 << 10;
        let m = MemoryLayer::new(budget);
        let s = Stamp(0, 0);
        let value = vec![1u8; 300];
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys {
            m.put(key_hash(k), k, copy(&value), s, 0.0);
            assert!(m.bytes() <= budget);
        }
        let last = keys.last().unwrap();
        assert!(m.get(key_hash(last), last, s, 0.0).is_some());
        assert!(m.get(key_hash(&keys[0]), &keys[0], s, 0.0).is_none());
        // Remembered misses take at most a quarter of the budget.
        for i in 0..10_000 {
            let k = format!("absent{i}").into_bytes();
            m.put(key_hash(&k), &k, None, s, 0.0);
        }
        assert!(m.get(key_hash(last), last, s, 0.0).is_some());
        let absent: u64 = m
            .shards
            .iter()
            .map(|s| s.lock().unwrap().absent_bytes)
            .sum();
        assert!(absent <= budget / ABSENT_SHARE, "{absent}");
        // Values too large for the budget are never kept.
        let big = vec![0u8; budget as usize];
        m.put(1, b"big", copy(&big), s, 0.0);
        assert!(m.get(1, b"big", s, 0.0).is_none());
    }

    #[test]
    fn rereading_the_same_keys_keeps_the_queue_bounded() {
        let m = MemoryLayer::new(1 << 20);
        let s = Stamp(0, 0);
        for _ in 0..1000 {
            for k in [b"a", b"b"] {
                m.put(key_hash(k), k, copy(b"v"), s, 0.0);
            }
        }
        let total: usize = m.shards.iter().map(|s| s.lock().unwrap().order.len()).sum();
        assert!(total < 200, "queue holds {total}");
    }
}
