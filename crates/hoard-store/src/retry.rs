//! Retry with backoff on `SQLITE_BUSY`, on top of SQLite's own busy timeout.
//!
//! Invariant: a caller sees [`Error::Timeout`] only after its budget of contention
//! ([`RETRY_BUDGET`], or the handle's fail-soft timeout, see
//! [`CacheBuilder::timeout`](crate::CacheBuilder::timeout)), never a raw "database is locked".

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// Total time spent retrying one operation before giving up with [`Error::Timeout`].
pub(crate) const RETRY_BUDGET: Duration = Duration::from_secs(60);

thread_local! {
    /// Set by [`patiently`]: handles with a fail-soft timeout retry for [`RETRY_BUDGET`].
    static PATIENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the full [`RETRY_BUDGET`] for every handle used on this thread, whatever
/// its fail-soft timeout (diskcache's `retry=True`; `FanoutCache::transact` and bulk
/// deletes use it).
pub(crate) fn patiently<T>(f: impl FnOnce() -> T) -> T {
    let was = PATIENT.with(|p| p.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PATIENT.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(was);
    f()
}

/// The retry budget of a handle whose fail-soft timeout is `timeout` (none: [`RETRY_BUDGET`]).
pub(crate) fn budget(timeout: Option<Duration>) -> Duration {
    match timeout {
        Some(t) if !PATIENT.with(Cell::get) => t,
        _ => RETRY_BUDGET,
    }
}

/// Runs `f` until it succeeds, fails with a non-busy error, or [`RETRY_BUDGET`] is spent.
pub(crate) fn with_retry<T>(f: impl FnMut() -> Result<T>) -> Result<T> {
    with_retry_for(RETRY_BUDGET, f)
}

/// Runs `f` until it succeeds, fails with a non-busy error, or `budget` is spent (at least
/// one attempt).
pub(crate) fn with_retry_for<T>(budget: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    loop {
        match f() {
            Err(e) if e.is_busy() => {
                let spent = start.elapsed();
                if spent >= budget {
                    return Err(Error::Timeout);
                }
                // Full jitter so contending processes do not retry in lockstep.
                let jitter = fastrand::u64(0..=delay.as_micros() as u64);
                let pause = (Duration::from_micros(jitter) + delay / 2).min(budget - spent);
                std::thread::sleep(pause);
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

    #[test]
    fn a_fail_soft_budget_gives_up_unless_patient() {
        let t = Some(Duration::from_millis(5));
        let cases = [
            (None, false, RETRY_BUDGET),
            (t, false, Duration::from_millis(5)),
            (t, true, RETRY_BUDGET),
        ];
        for (timeout, patient, want) in cases {
            let got = if patient {
                patiently(|| budget(timeout))
            } else {
                budget(timeout)
            };
            assert_eq!(got, want, "{timeout:?} patient={patient}");
        }
        assert_eq!(
            budget(t),
            Duration::from_millis(5),
            "restored after patiently"
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let mut busy = Some(busy);
        let r: Result<()> = with_retry_for(Duration::ZERO, || Err(busy.take().unwrap().into()));
        assert!(
            matches!(r, Err(Error::Timeout)),
            "one attempt, then Timeout"
        );
    }
}
