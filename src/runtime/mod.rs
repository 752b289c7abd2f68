//! The tokio runtime of `hoard serve`: how many worker threads (`--threads`), and a
//! single-threaded runtime when that is one (which polls busily after requests:
//! [`busy_poll`], `--busy-poll`).

pub mod busy_poll;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use busy_poll::BusyPoll;

/// Most worker threads accepted.
pub const MAX_THREADS: usize = 1024;

/// `--threads N`: a worker count from 1 to [`MAX_THREADS`], or `auto` (`None`: tokio's
/// default, the CPUs this process may run on, which honours `taskset` and cgroup CPU limits).
pub fn parse_threads(s: &str) -> Result<Option<NonZeroUsize>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let n: usize = s.parse().map_err(|_| {
        format!("expected a number of threads (1-{MAX_THREADS}) or auto, got {s:?}")
    })?;
    match NonZeroUsize::new(n) {
        Some(n) if n.get() <= MAX_THREADS => Ok(Some(n)),
        _ => Err(format!(
            "threads must be 1-{MAX_THREADS} (or auto), got {n}"
        )),
    }
}

/// How the runtime schedules its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread runs the listener and every connection: nothing to steal, no cross-thread
    /// wake-ups (chosen when hoard may run on one CPU, or `--threads 1`).
    CurrentThread,
    /// Work-stealing workers, this many.
    MultiThread(NonZeroUsize),
}

/// The flavor for `threads` (`None`: `auto`) when the process may run on `cpus` CPUs.
pub fn flavor(threads: Option<NonZeroUsize>, cpus: NonZeroUsize) -> Flavor {
    let n = threads.unwrap_or(cpus);
    if n.get() == 1 {
        Flavor::CurrentThread
    } else {
        Flavor::MultiThread(n)
    }
}

/// The CPUs this process may run on (`taskset`, cgroup CPU limits), 1 when unknown.
pub fn usable_cpus() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The runtime of `hoard serve`, its flavor, and its busy poller when it has one.
#[derive(Debug)]
pub struct Built {
    /// The runtime.
    pub runtime: tokio::runtime::Runtime,
    /// Single-threaded or work-stealing, and how many workers.
    pub flavor: Flavor,
    /// Present on a single-threaded runtime with a non-zero `--busy-poll` window.
    pub busy_poll: Option<Arc<BusyPoll>>,
}

/// The runtime for `threads` workers (`None`: one per usable CPU): a single-threaded one when
/// that is one worker, a work-stealing one otherwise. A single-threaded runtime polls its
/// sockets without sleeping for `busy_poll` after a request started (zero: never); a
/// work-stealing one always sleeps when idle (its workers share one poller: a spinning worker
/// would keep the others from it). Blocking work (store writes, value-file reads) goes to
/// tokio's blocking threads either way.
pub fn build(threads: Option<NonZeroUsize>, busy_poll: Duration) -> std::io::Result<Built> {
    let flavor = flavor(threads, usable_cpus());
    let poller = (flavor == Flavor::CurrentThread && !busy_poll.is_zero()).then(BusyPoll::new);
    let mut b = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.get());
            b
        }
    };
    b.enable_all();
    if let Some(p) = &poller {
        let p = p.clone();
        b.on_thread_park(move || p.before_park());
    }
    let runtime = b.build()?;
    if let Some(p) = &poller {
        runtime.spawn(p.clone().run(busy_poll));
    }
    Ok(Built {
        runtime,
        flavor,
        busy_poll: poller,
    })
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flavor::CurrentThread => f.write_str("1 thread"),
            Flavor::MultiThread(n) => write!(f, "{n} worker threads"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thread_counts() {
        assert_eq!(parse_threads("1"), Ok(NonZeroUsize::new(1)));
        assert_eq!(parse_threads(" 8 "), Ok(NonZeroUsize::new(8)));
        assert_eq!(parse_threads("auto"), Ok(None));
        assert_eq!(parse_threads("1024"), Ok(NonZeroUsize::new(1024)));
        for bad in ["0", "1025", "-1", "", "two", "1.5"] {
            assert!(parse_threads(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_worker_is_a_single_threaded_runtime() {
        let one = NonZeroUsize::MIN;
        let four = NonZeroUsize::new(4).unwrap();
        for (threads, cpus, want) in [
            (None, one, Flavor::CurrentThread),
            (None, four, Flavor::MultiThread(four)),
            (Some(one), four, Flavor::CurrentThread),
            (Some(four), one, Flavor::MultiThread(four)),
        ] {
            assert_eq!(flavor(threads, cpus), want, "{threads:?} on {cpus} CPUs");
        }
        let built = build(Some(one), Duration::ZERO).unwrap();
        assert_eq!(built.flavor.to_string(), "1 thread");
        assert_eq!(
            built.runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
    }

    #[test]
    fn builds_a_runtime_with_that_many_workers() {
        let one = build(NonZeroUsize::new(1), Duration::ZERO).unwrap();
        assert_eq!(one.runtime.metrics().num_workers(), 1);
        let three = build(NonZeroUsize::new(3), Duration::from_micros(100)).unwrap();
        assert_eq!(three.runtime.metrics().num_workers(), 3);
        assert_eq!(three.flavor.to_string(), "3 worker threads");
        assert!(
            three.busy_poll.is_none(),
            "work-stealing workers never busy-poll"
        );
    }
}
