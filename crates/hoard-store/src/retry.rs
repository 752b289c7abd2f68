//! Retry with backoff on `SQLITE_BUSY`, on top of SQLite's own busy timeout.
//!
//! Invariant: a caller sees [`Error::Timeout`] only after [`RETRY_BUDGET`] of contention,
//! never a raw "database is locked".

use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// Total time spent retrying one operation before giving up with [`Error::Timeout`].
pub(crate) const RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Runs `f` until it succeeds, fails with a non-busy error, or the budget is spent.
pub(crate) fn with_retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    loop {
        match f() {
            Err(e) if e.is_busy() => {
                if start.elapsed() >= RETRY_BUDGET {
                    return Err(Error::Timeout);
                }
                // Full jitter so contending processes do not retry in lockstep.
                let jitter = fastrand::u64(0..=delay.as_micros() as u64);
                std::thread::sleep(Duration::from_micros(jitter) + delay / 2);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_retried_other_errors_are_not() {
        let busy = || {
            Error::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ))
        };
        let mut calls = 0;
        let r = with_retry(|| {
            calls += 1;
            if calls < 3 { Err(busy()) } else { Ok(calls) }
        });
        assert_eq!(r.unwrap(), 3);

        let mut calls = 0;
        let r: Result<()> = with_retry(|| {
            calls += 1;
            Err(Error::KeyNotFound)
        });
        assert!(matches!(r, Err(Error::KeyNotFound)));
        assert_eq!(calls, 1);
    }
}
