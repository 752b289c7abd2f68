//! Hit-for-pass marks: keys recently found uncacheable, each until an instant.
//!
//! Invariant: bounded in entries and bytes whatever the traffic. A mark is a 16-byte hash of
//! the key (xxh3-128 under a per-process random seed), never the key itself, so a 60 KB URL
//! costs what a short one does; at most [`MAX_MARKS`] are held, the oldest dropped first; an
//! expired mark leaves at the next `mark` or `is_pass` (a time-ordered queue popped from its
//! front: amortised O(1) per call, no scan of the table). A mark lost early (table full) or a
//! hash collision only changes whether a miss is coalesced, never what is served or stored.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// Most marks held at once: 10 s of 6,553 uncacheable misses per second; about 6 MiB at most
/// (`a_full_table_weighs_the_same_for_any_key_length`).
pub const MAX_MARKS: usize = 65_536;

/// A key's mark: its 128-bit hash.
type Mark = u128;

/// The marks and when each ends.
#[derive(Debug)]
pub struct PassMarks {
    seed: u64,
    ttl: Duration,
    until: HashMap<Mark, Instant>,
    /// Every mark in the order it was set (its end, as set then): ends only grow, since `ttl`
    /// is fixed and `now` is monotonic. A mark set again, or cleared, leaves its older
    /// entry here; popping that entry removes nothing (its end no longer matches).
    order: VecDeque<(Mark, Instant)>,
    cap: usize,
}

impl PassMarks {
    /// Marks that last `ttl`, at most [`MAX_MARKS`] of them.
    pub fn new(ttl: Duration) -> Self {
        Self::with_cap(ttl, MAX_MARKS)
    }

    fn with_cap(ttl: Duration, cap: usize) -> Self {
        PassMarks {
            seed: fastrand::u64(..),
            ttl,
            until: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn hash(&self, key: &[u8]) -> Mark {
        xxh3_128_with_seed(key, self.seed)
    }

    /// Mark `key` as pass until `now + ttl`; the oldest mark goes when the table is full.
    pub fn mark(&mut self, key: &[u8], now: Instant) {
        self.expire(now);
        let m = self.hash(key);
        let until = now + self.ttl;
        while self.order.len() >= self.cap {
            self.pop_front();
        }
        self.until.insert(m, until);
        self.order.push_back((m, until));
    }

    /// Whether `key` is marked at `now`.
    pub fn is_pass(&mut self, key: &[u8], now: Instant) -> bool {
        self.expire(now);
        let m = self.hash(key);
        self.until.get(&m).is_some_and(|u| *u > now)
    }

    /// Forget `key`'s mark.
    pub fn clear(&mut self, key: &[u8]) {
        let m = self.hash(key);
        self.until.remove(&m);
    }

    /// Marks held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Drop every mark that ended at or before `now`.
    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, u)| *u <= now) {
            self.pop_front();
        }
        // Shrink after a burst so the memory it took goes back (not on every call: only when
        // the queue uses under a quarter of its room).
        if self.order.capacity() > 1024 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
            self.until.shrink_to(self.until.len() * 2);
        }
    }

    fn pop_front(&mut self) {
        if let Some((m, u)) = self.order.pop_front()
            && self.until.get(&m) == Some(&u)
        {
            self.until.remove(&m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// (what happens, at seconds after t0) applied in order, then the keys expected marked.
    enum Step {
        Mark(&'static str, u64),
        Clear(&'static str),
    }

    fn run(steps: &[Step], at: u64, cap: usize) -> (Vec<&'static str>, usize) {
        let t0 = Instant::now();
        let mut p = PassMarks::with_cap(TTL, cap);
        for s in steps {
            match s {
                Step::Mark(k, t) => p.mark(k.as_bytes(), t0 + secs(*t)),
                Step::Clear(k) => p.clear(k.as_bytes()),
            }
        }
        let keys = ["a", "b", "c", "d"];
        let marked = keys
            .into_iter()
            .filter(|k| p.is_pass(k.as_bytes(), t0 + secs(at)))
            .collect();
        (marked, p.len())
    }

    #[test]
    fn marks_end_expire_and_leave_at_once() {
        use Step::*;
        // (steps, asked at, cap, marked then, marks held after the asking)
        type Case = (&'static [Step], u64, usize, &'static [&'static str], usize);
        let cases: &[Case] = &[
            (&[Mark("a", 0)], 5, 8, &["a"], 1),
            (&[Mark("a", 0)], 10, 8, &[], 0),
            (&[Mark("a", 0), Mark("b", 5)], 12, 8, &["b"], 1),
            (&[Mark("a", 0), Mark("b", 5)], 20, 8, &[], 0),
            // Set again: the later end counts, the first entry's pop removes nothing.
            (&[Mark("a", 0), Mark("a", 8)], 12, 8, &["a"], 1),
            (&[Mark("a", 0), Clear("a")], 1, 8, &[], 0),
            (&[Mark("a", 0), Clear("a"), Mark("a", 3)], 11, 8, &["a"], 1),
            // Full: the oldest goes first.
            (
                &[Mark("a", 0), Mark("b", 1), Mark("c", 2)],
                3,
                2,
                &["b", "c"],
                2,
            ),
            (
                &[Mark("a", 0), Mark("b", 1), Mark("a", 2), Mark("c", 3)],
                4,
                2,
                &["a", "c"],
                2,
            ),
        ];
        for (i, (steps, at, cap, want, held)) in cases.iter().enumerate() {
            let (marked, len) = run(steps, *at, *cap);
            assert_eq!(&marked, want, "case {i}");
            assert_eq!(len, *held, "case {i}");
        }
    }

    /// Regression (session 11 finding 6): 1,500 no-store URLs of 60 KB kept about 96 MB until
    /// 10,000 keys; now a mark is 16 bytes and expired ones leave at the next call.
    #[test]
    fn hit_for_pass_forgets_long_urls_once_expired() {
        let t0 = Instant::now();
        let mut p = PassMarks::new(TTL);
        let long = "x".repeat(60_000);
        let (_, heap) = crate::test_alloc::held(|| {
            for i in 0..1_500 {
                p.mark(format!("{long}{i}").as_bytes(), t0);
            }
        });
        assert_eq!(p.len(), 1_500);
        assert!(heap < 256 * 1024, "1,500 marks hold {heap} bytes");
        assert!(!p.is_pass(b"other", t0 + TTL));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_full_table_weighs_the_same_for_any_key_length() {
        let t0 = Instant::now();
        for len in [10, 1_000] {
            let key = "k".repeat(len);
            let (p, heap) = crate::test_alloc::held(|| {
                let mut p = PassMarks::new(TTL);
                for i in 0..MAX_MARKS + 10 {
                    p.mark(format!("{key}{i}").as_bytes(), t0);
                }
                p
            });
            assert_eq!(p.len(), MAX_MARKS, "{len}");
            assert!(heap < 7 * 1024 * 1024, "{len}-byte keys: {heap} bytes");
        }
    }

    #[test]
    fn expiry_walks_only_what_ended() {
        let t0 = Instant::now();
        let mut p = PassMarks::new(TTL);
        for i in 0..100u64 {
            p.mark(&i.to_le_bytes(), t0 + Duration::from_millis(i * 100));
        }
        // At t0 + 15 s the marks set at or before t0 + 5 s have ended: 49 left.
        assert!(!p.is_pass(&0u64.to_le_bytes(), t0 + secs(15)));
        assert_eq!(p.len(), 49);
        assert!(p.is_pass(&99u64.to_le_bytes(), t0 + secs(15)));
    }
}
