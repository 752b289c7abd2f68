//! The tokio runtimes of `hoard serve`: how many threads (`--threads`), and how they share
//! the work (`--scheduler`): one single-threaded runtime per thread, each accepting on a
//! listener of its own ([`Flavor::PerCore`]), or work-stealing workers. A single-threaded
//! runtime polls busily after requests ([`busy_poll`], `--busy-poll`).

pub mod busy_poll;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use busy_poll::BusyPoll;

thread_local! {
    /// This thread's index among the per-core threads (0: the main thread, and every thread
    /// of the other modes).
    static CORE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the per-core thread this runs on (0 outside the per-core siblings): what
/// per-thread resources (the origin client's connection pools) are picked by.
pub fn core_index() -> usize {
    CORE.with(std::cell::Cell::get)
}

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

/// `--scheduler`: how several threads share the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// A single-threaded runtime per thread, each with its own listener (`SO_REUSEPORT`):
    /// a connection lives on the thread that accepted it (nginx's worker model).
    #[default]
    PerCore,
    /// One runtime whose workers share one listener and steal each other's tasks.
    WorkStealing,
}

impl std::str::FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheduler, String> {
        match s.trim() {
            "per-core" => Ok(Scheduler::PerCore),
            "work-stealing" => Ok(Scheduler::WorkStealing),
            _ => Err(format!("{s:?}: expected per-core or work-stealing")),
        }
    }
}

/// How the runtime schedules its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread runs the listener and every connection: nothing to steal, no cross-thread
    /// wake-ups (chosen when hoard may run on one CPU, or `--threads 1`).
    CurrentThread,
    /// This many threads (two or more), each a single-threaded runtime with its own listener:
    /// the first is the process's main runtime, the others its [`Siblings`].
    PerCore(NonZeroUsize),
    /// Work-stealing workers, this many.
    MultiThread(NonZeroUsize),
}

/// The flavor for `threads` (`None`: `auto`) when the process may run on `cpus` CPUs.
pub fn flavor(threads: Option<NonZeroUsize>, cpus: NonZeroUsize, scheduler: Scheduler) -> Flavor {
    let n = threads.unwrap_or(cpus);
    match scheduler {
        _ if n.get() == 1 => Flavor::CurrentThread,
        Scheduler::PerCore => Flavor::PerCore(n),
        Scheduler::WorkStealing => Flavor::MultiThread(n),
    }
}

/// The CPUs this process may run on (`taskset`, cgroup CPU limits), 1 when unknown.
pub fn usable_cpus() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The runtime of `hoard serve`, its flavor, and its busy poller when it has one.
#[derive(Debug)]
pub struct Built {
    /// The runtime (in the per-core mode, the first of its single-threaded runtimes).
    pub runtime: tokio::runtime::Runtime,
    /// Single-threaded, per-core or work-stealing, and how many threads.
    pub flavor: Flavor,
    /// Present on a single-threaded runtime with a non-zero `--busy-poll` window.
    pub busy_poll: Option<Arc<BusyPoll>>,
    /// The per-core mode's other runtimes, to start on threads of their own.
    pub siblings: Option<Siblings>,
}

/// The runtime for `threads` threads (`None`: one per usable CPU) scheduled by `scheduler`:
/// a single-threaded one when that is one thread; else per-core single-threaded runtimes (the
/// first returned here, the others as [`Siblings`]) or one work-stealing runtime. A
/// single-threaded runtime polls its sockets without sleeping for `busy_poll` after a request
/// started (zero: never); a work-stealing one always sleeps when idle (its workers share one
/// poller: a spinning worker would keep the others from it). Blocking work (store writes,
/// value-file reads) goes to tokio's blocking threads either way.
pub fn build(
    threads: Option<NonZeroUsize>,
    scheduler: Scheduler,
    busy_poll: Duration,
) -> std::io::Result<Built> {
    let flavor = flavor(threads, usable_cpus(), scheduler);
    let (runtime, poller, siblings) = match flavor {
        Flavor::CurrentThread => {
            let (rt, p) = single_threaded(busy_poll)?;
            (rt, p, None)
        }
        Flavor::PerCore(n) => {
            let (rt, p) = single_threaded(busy_poll)?;
            let siblings = Siblings {
                count: n.get() - 1,
                busy_poll,
            };
            (rt, p, Some(siblings))
        }
        Flavor::MultiThread(n) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n.get())
                .enable_all()
                .build()?;
            (rt, None, None)
        }
    };
    Ok(Built {
        runtime,
        flavor,
        busy_poll: poller,
        siblings,
    })
}

/// A single-threaded runtime, with its busy poller when `busy_poll` is not zero (the poll
/// loop spawned on it, its park hook installed).
fn single_threaded(
    busy_poll: Duration,
) -> std::io::Result<(tokio::runtime::Runtime, Option<Arc<BusyPoll>>)> {
    let poller = (!busy_poll.is_zero()).then(BusyPoll::new);
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    if let Some(p) = &poller {
        let p = p.clone();
        b.on_thread_park(move || p.before_park());
    }
    let runtime = b.build()?;
    if let Some(p) = &poller {
        runtime.spawn(p.clone().run(busy_poll));
    }
    Ok((runtime, poller))
}

/// The per-core mode's runtimes besides the main one: each a single-threaded runtime (busy
/// polling like the main one) on a thread of its own, started with [`Siblings::start`].
#[derive(Debug, Clone)]
pub struct Siblings {
    count: usize,
    busy_poll: Duration,
}

impl Siblings {
    /// How many (the thread count less the main one).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Start sibling `index` (1 and up; the main runtime is 0): a thread named
    /// `hoard-core-INDEX` that builds `task` inside its runtime and runs it; the thread, and
    /// every task spawned on its runtime, ends when `task` does.
    pub fn start<F, Fut>(
        &self,
        index: usize,
        task: F,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (rt, _poller) = single_threaded(self.busy_poll)?;
        std::thread::Builder::new()
            .name(format!("hoard-core-{index}"))
            .spawn(move || {
                CORE.with(|c| c.set(index));
                let task = {
                    let _entered = rt.enter();
                    task()
                };
                rt.block_on(task);
            })
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flavor::CurrentThread => f.write_str("1 thread"),
            Flavor::PerCore(n) => write!(f, "{n} threads, per-core"),
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
        use Scheduler::{PerCore, WorkStealing};
        for (threads, cpus, scheduler, want) in [
            (None, one, PerCore, Flavor::CurrentThread),
            (None, one, WorkStealing, Flavor::CurrentThread),
            (None, four, PerCore, Flavor::PerCore(four)),
            (None, four, WorkStealing, Flavor::MultiThread(four)),
            (Some(one), four, PerCore, Flavor::CurrentThread),
            (Some(four), one, WorkStealing, Flavor::MultiThread(four)),
            (Some(four), one, PerCore, Flavor::PerCore(four)),
        ] {
            assert_eq!(
                flavor(threads, cpus, scheduler),
                want,
                "{threads:?} on {cpus} CPUs, {scheduler:?}"
            );
        }
        let built = build(Some(one), PerCore, Duration::ZERO).unwrap();
        assert_eq!(built.flavor.to_string(), "1 thread");
        assert_eq!(
            built.runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        assert!(built.siblings.is_none());
    }

    #[test]
    fn parses_schedulers() {
        assert_eq!("per-core".parse(), Ok(Scheduler::PerCore));
        assert_eq!(" work-stealing ".parse(), Ok(Scheduler::WorkStealing));
        assert!("percore".parse::<Scheduler>().is_err());
    }

    #[test]
    fn builds_a_runtime_with_that_many_workers() {
        let one = build(
            NonZeroUsize::new(1),
            Scheduler::WorkStealing,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(one.runtime.metrics().num_workers(), 1);
        let three = build(
            NonZeroUsize::new(3),
            Scheduler::WorkStealing,
            Duration::from_micros(100),
        )
        .unwrap();
        assert_eq!(three.runtime.metrics().num_workers(), 3);
        assert_eq!(three.flavor.to_string(), "3 worker threads");
        assert!(
            three.busy_poll.is_none(),
            "work-stealing workers never busy-poll"
        );
    }

    #[test]
    fn per_core_threads_are_single_threaded_runtimes_that_poll() {
        let three = build(
            NonZeroUsize::new(3),
            Scheduler::PerCore,
            Duration::from_micros(100),
        )
        .unwrap();
        assert_eq!(three.flavor.to_string(), "3 threads, per-core");
        assert_eq!(
            three.runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        assert!(three.busy_poll.is_some());
        let siblings = three.siblings.expect("two siblings");
        assert_eq!(siblings.count(), 2);
        // A sibling runs its task on a single-threaded runtime of its own thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let t = siblings
            .start(1, move || async move {
                let h = tokio::runtime::Handle::current();
                tokio::task::yield_now().await;
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((h.runtime_flavor(), name, core_index())).unwrap();
            })
            .unwrap();
        t.join().unwrap();
        let (flavor, name, core) = rx.recv().unwrap();
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
        assert_eq!(name.as_deref(), Some("hoard-core-1"));
        assert_eq!(
            (core, core_index()),
            (1, 0),
            "the sibling's index, the main thread's"
        );
    }
}
