//! Whether the store accepts writes. When a write fails because the disk is full or the
//! cache directory is read-only, the proxy stops trying to store (responses pass through
//! uncached) and lets one fill through per [`PROBE_INTERVAL`] to find out whether writes
//! work again. Invariant: one log line per change of state, never one per request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// While writes fail, how often one fill is let through to probe the store.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Shared by every fill of one proxy.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// True while writes are failing (fast path for the healthy case).
    degraded: AtomicBool,
    /// When the last probe was let through.
    last_probe: Mutex<Option<Instant>>,
}

impl StoreHealth {
    /// Whether a response should be stored: always when healthy; while degraded, once per
    /// [`PROBE_INTERVAL`] (that fill is the probe).
    pub fn may_store(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < PROBE_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Whether writes are currently failing.
    #[cfg(test)]
    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// A store write failed. Disk-full and read-only errors switch to pass-through (logged
    /// once); other errors are logged at debug level by the caller's context.
    pub fn write_failed(&self, e: &crate::store::Error) {
        if !e.is_unwritable() {
            tracing::warn!(error = %e, "storing a response failed");
            return;
        }
        *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %e,
                "cache store refuses writes (disk full or read-only): responses pass through \
                 uncached; retrying every {}s",
                PROBE_INTERVAL.as_secs()
            );
        }
    }

    /// A store write succeeded: if writes had been failing, caching resumes (logged once).
    pub fn write_ok(&self) {
        if self.degraded.load(Ordering::Acquire) && self.degraded.swap(false, Ordering::AcqRel) {
            tracing::warn!("cache store accepts writes again: caching resumed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> crate::store::Error {
        crate::store::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull))
    }

    #[test]
    fn degraded_lets_one_probe_through_per_interval() {
        let h = StoreHealth::default();
        assert!(h.may_store() && h.may_store());
        h.write_failed(&full());
        assert!(h.is_degraded());
        assert!(!h.may_store(), "no probe right after the failure");
        *h.last_probe.lock().unwrap() = Some(Instant::now() - PROBE_INTERVAL);
        assert!(h.may_store(), "one probe");
        assert!(!h.may_store(), "only one");
        h.write_ok();
        assert!(!h.is_degraded());
        assert!(h.may_store() && h.may_store());
    }

    #[test]
    fn other_errors_do_not_degrade() {
        let h = StoreHealth::default();
        h.write_failed(&crate::store::Error::Timeout);
        assert!(!h.is_degraded());
    }
}
