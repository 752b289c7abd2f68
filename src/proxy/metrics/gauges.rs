//! Scrape-time figures of the store, the memory front and the shared tier: store gauges,
//! the memory front's count (`hoard_memory_front_bytes`), SQLite's heap
//! (`hoard_sqlite_heap_bytes`), the store's eviction
//! counts (`hoard_store_evictions_total{reason}`), shared tier gauges.
//!
//! Invariant: set only when `/metrics` is scraped, never on the request path; eviction
//! counters only catch up with the store's persisted totals (each gain added once).

use super::{Metrics, ReasonLabel, SharedLabel, catch_up};

impl Metrics {
    /// Store gauges (set when scraped).
    pub fn set_store(&self, entries: u64, volume: u64, size_limit: u64) {
        self.entries.set(entries.min(i64::MAX as u64) as i64);
        self.volume.set(volume.min(i64::MAX as u64) as i64);
        self.size_limit.set(size_limit.min(i64::MAX as u64) as i64);
    }

    /// The memory front's gauges (set when scraped): bytes as it counts them, and entries.
    pub fn set_front(&self, bytes: usize, entries: usize) {
        self.front_bytes.set(bytes.min(i64::MAX as usize) as i64);
        self.front_entries
            .set(entries.min(i64::MAX as usize) as i64);
    }

    /// SQLite's heap in this process (when scraped): `hoard_sqlite_heap_bytes`.
    pub fn set_sqlite_heap(&self, bytes: u64) {
        self.sqlite_heap.set(bytes.min(i64::MAX as u64) as i64);
    }

    /// The store's eviction counts (when scraped): `hoard_store_evictions_total`. The
    /// first scrape of a process brings the counter up to the store's all-time count.
    pub fn set_evictions(&self, culled: u64, expired: u64) {
        for (i, (reason, now)) in [("culled", culled), ("expired", expired)]
            .into_iter()
            .enumerate()
        {
            let c = self.evictions.get_or_create(&ReasonLabel { reason });
            catch_up(&c, &self.evictions_seen[i], now);
        }
    }

    /// Shared tier gauges (set when scraped).
    pub fn set_shared(&self, s: &crate::entries::shared::SharedStatus) {
        use crate::entries::shared::BreakerState;
        let open = |b: &BreakerState| i64::from(matches!(b, BreakerState::Open));
        let figures: [(&'static str, i64); 17] = [
            ("hits", s.hits as i64),
            ("misses", s.misses as i64),
            ("damaged", s.damaged as i64),
            ("forged", s.forged as i64),
            ("errors", s.errors as i64),
            ("timeouts", s.timeouts as i64),
            ("skipped", s.skipped as i64),
            ("writes", s.writes as i64),
            ("oversize", s.oversize as i64),
            ("invalidations_received", s.invalidations_received as i64),
            ("breaker_open", open(&s.breaker)),
            ("breaker_open_ranges", s.breaker_open_ranges as i64),
            ("write_breaker_open", open(&s.write_breaker)),
            ("breaker_opened", s.breaker_opened as i64),
            ("connected", i64::from(s.connected && s.subscribed)),
            ("latency_micros_sum", s.latency_micros_sum as i64),
            ("latency_count", s.latency_count as i64),
        ];
        for (figure, v) in figures {
            self.shared.get_or_create(&SharedLabel { figure }).set(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::entries::shared::{BreakerState, SharedStatus};
    use crate::proxy::metrics::Metrics;

    #[test]
    fn shared_breaker_figures_are_exported() {
        let m = Metrics::new();
        m.set_shared(&SharedStatus {
            connected: true,
            subscribed: true,
            breaker: BreakerState::Open,
            breaker_open_ranges: 22,
            breaker_ranges: 64,
            write_breaker: BreakerState::Closed,
            breaker_opened: 23,
            hits: 0,
            misses: 0,
            damaged: 0,
            forged: 7,
            errors: 0,
            timeouts: 0,
            skipped: 0,
            writes: 0,
            oversize: 0,
            invalidations_received: 0,
            latency_micros_sum: 0,
            latency_count: 0,
            connect_error: None,
        });
        let text = m.encode();
        for line in [
            r#"hoard_shared_tier{figure="breaker_open"} 1"#,
            r#"hoard_shared_tier{figure="breaker_open_ranges"} 22"#,
            r#"hoard_shared_tier{figure="write_breaker_open"} 0"#,
            r#"hoard_shared_tier{figure="forged"} 7"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
