//! The access log: one line per request (target `hoard::access`), formatted on the request
//! path and written by a dedicated thread in batches, so a slow, full or blocked destination
//! never blocks a request.
//!
//! Invariants:
//! - A request thread only formats its line (`access_line`, or the fmt layer on a colour
//!   terminal) and appends it to a shared, bounded byte buffer under a mutex held for a `memcpy`; it never makes a
//!   system call for the log, except one wake of the writer thread when that thread is idle
//!   or the buffer has just crossed a quarter of its bound.
//! - When the buffer holds [`BUFFER_BYTES`], further lines are dropped whole and counted
//!   ([`dropped`], `hoard_access_log_dropped_total`); the writer thread warns on stderr at most
//!   every [`WARN_EVERY`].
//! - The writer thread swaps the buffer for an empty one (the two buffers are reused, no
//!   allocation per line) and writes the batch with one `write_all`.
//! - A file destination is reopened (append, created 0600) on [`Reopener::reopen`] (SIGHUP in
//!   `main`), so `mv access.log access.log.1; kill -HUP` starts a new file.
//! - [`AccessLogGuard`] flushes on drop, waiting at most [`FLUSH_TIMEOUT`] for a blocked
//!   destination.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The tracing target of access lines.
pub const TARGET: &str = "hoard::access";
/// Bound of the bytes waiting for the writer thread; lines beyond it are dropped.
pub const BUFFER_BYTES: usize = 4 << 20;
/// How long the writer thread lets a batch gather after a write.
pub const LINGER: Duration = Duration::from_millis(10);
/// Longest wait for the last lines to be written at shutdown.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest interval between two "lines dropped" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lines dropped because the buffer was full, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access lines dropped because the destination did not keep up, since the process started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where access lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard error, like the other log lines (the default).
    Stderr,
    /// No access lines at all.
    Off,
    /// This file, appended to and reopened on SIGHUP.
    File(PathBuf),
}

impl Destination {
    /// `stderr` (or `-`), `off`, or a path (write `./off` for a file named `off`).
    pub fn parse(s: &str) -> Result<Destination, String> {
        match s.trim() {
            "" => Err("expected a path, `stderr` or `off`".to_string()),
            "stderr" | "-" => Ok(Destination::Stderr),
            "off" => Ok(Destination::Off),
            p => Ok(Destination::File(PathBuf::from(p))),
        }
    }
}

/// Where the writer thread writes.
enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

impl Sink {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(b),
            Sink::File { file, .. } => file.write_all(b),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot reopen the access log; still writing to the old file"
                ),
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Formatted lines waiting for the writer thread.
    buf: Vec<u8>,
    /// The writer thread waits for a wake (the buffer was empty).
    idle: bool,
    reopen: bool,
    shutdown: bool,
    /// The writer thread has written everything and ended.
    done: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Signalled when the writer thread ends.
    ended: Condvar,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append one formatted line, or drop it when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut st = self.lock();
        let before = st.buf.len();
        if before + line.len() > self.limit || st.done {
            drop(st);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.buf.extend_from_slice(line);
        let quarter = self.limit / 4;
        let wake = st.idle || (before < quarter && st.buf.len() >= quarter);
        st.idle = false;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// The access log's input: whole lines, through [`AccessLog::push`] or, as the `MakeWriter`
/// of a tracing fmt layer, one write per line.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

impl AccessLog {
    /// Append one whole line (`\n`-terminated), or drop and count it when the buffer is full.
    pub fn push(&self, line: &[u8]) {
        self.shared.push(line);
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("limit", &self.shared.limit)
            .finish()
    }
}

/// One line's writer (the fmt layer calls `write_all` once per event).
#[derive(Debug)]
pub struct LineWriter<'a> {
    log: &'a AccessLog,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.log.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AccessLog {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { log: self }
    }
}

/// Asks the writer thread to reopen its file (SIGHUP).
#[derive(Clone)]
pub struct Reopener {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reopener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reopener")
    }
}

impl Reopener {
    /// Reopen the file before the next batch is written.
    pub fn reopen(&self) {
        self.shared.lock().reopen = true;
        self.shared.wake.notify_one();
    }
}

/// Keeps the writer thread; flushes and stops it when dropped.
pub struct AccessLogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AccessLogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLogGuard")
    }
}

impl Drop for AccessLogGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.shutdown = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while !st.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(st);
                eprintln!(
                    "hoard: the access log did not take its last lines within {FLUSH_TIMEOUT:?}"
                );
                return; // the thread is left blocked in its write; the process is ending
            }
            st = self
                .shared
                .ended
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(st);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pieces of a running access log.
#[derive(Debug)]
pub struct Started {
    /// The writer for the fmt layer.
    pub writer: AccessLog,
    /// Reopens a file destination; `None` for stderr.
    pub reopener: Option<Reopener>,
    /// Flushes on drop: keep it alive until the proxy has stopped.
    pub guard: AccessLogGuard,
}

/// Open `dest` (`None` for [`Destination::Off`]) and start the writer thread.
pub fn start(dest: &Destination) -> io::Result<Option<Started>> {
    start_with_limit(dest, BUFFER_BYTES)
}

/// [`start`] with another buffer bound (tests).
pub fn start_with_limit(dest: &Destination, limit: usize) -> io::Result<Option<Started>> {
    let sink = match dest {
        Destination::Off => return Ok(None),
        Destination::Stderr => Sink::Stderr,
        Destination::File(p) => Sink::File {
            path: p.clone(),
            file: open_append(p)?,
        },
    };
    let is_file = matches!(sink, Sink::File { .. });
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        ended: Condvar::new(),
        limit,
    });
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("hoard-access-log".to_string())
        .spawn(move || run(&s, sink))?;
    Ok(Some(Started {
        writer: AccessLog {
            shared: shared.clone(),
        },
        reopener: is_file.then(|| Reopener {
            shared: shared.clone(),
        }),
        guard: AccessLogGuard {
            shared,
            thread: Some(thread),
        },
    }))
}

/// The writer thread: take the buffer, write it, let the next batch gather, repeat.
fn run(shared: &Shared, mut sink: Sink) {
    let mut batch = Vec::new();
    let mut warned_at: Option<Instant> = None;
    let mut warned_count = 0u64;
    let mut write_error_logged = false;
    loop {
        let (shutdown, reopen) = {
            let mut st = shared.lock();
            while st.buf.is_empty() && !st.shutdown && !st.reopen {
                st.idle = true;
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.idle = false;
            std::mem::swap(&mut st.buf, &mut batch);
            (st.shutdown, std::mem::take(&mut st.reopen))
        };
        if reopen {
            sink.reopen();
        }
        if !batch.is_empty() {
            match sink.write_all(&batch) {
                Ok(()) => write_error_logged = false,
                Err(e) if !write_error_logged => {
                    write_error_logged = true;
                    tracing::warn!(error = %e, "cannot write the access log; lines are lost");
                }
                Err(_) => {}
            }
            batch.clear();
        }
        let n = dropped();
        if n > warned_count && warned_at.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                dropped = n,
                "access log destination too slow: {} lines dropped ({n} since start)",
                n - warned_count
            );
            warned_at = Some(Instant::now());
            warned_count = n;
        }
        if shutdown {
            let mut st = shared.lock();
            if st.buf.is_empty() {
                st.done = true;
                drop(st);
                shared.ended.notify_all();
                return;
            }
            continue;
        }
        // Let a batch gather, unless the buffer is filling up or something is asked.
        let st = shared.lock();
        if st.buf.len() < shared.limit / 4 && !st.shutdown && !st.reopen {
            let _ = shared.wake.wait_timeout(st, LINGER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(Destination::parse("stderr"), Ok(Destination::Stderr));
        assert_eq!(Destination::parse("-"), Ok(Destination::Stderr));
        assert_eq!(Destination::parse("off"), Ok(Destination::Off));
        assert_eq!(
            Destination::parse("/var/log/hoard/access.log"),
            Ok(Destination::File("/var/log/hoard/access.log".into()))
        );
        assert_eq!(
            Destination::parse("./off"),
            Ok(Destination::File("./off".into()))
        );
        assert!(Destination::parse(" ").is_err());
    }

    #[test]
    fn writes_lines_reopens_and_flushes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let started = start(&Destination::File(path.clone())).unwrap().unwrap();
        let mut w = started.writer.clone();
        use tracing_subscriber::fmt::MakeWriter;
        w.make_writer().write_all(b"one\n").unwrap();
        // Wait for the first line, move the file, reopen: later lines go to a new file.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap_or_default() != "one\n" {
            assert!(Instant::now() < deadline, "first line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        started.reopener.as_ref().unwrap().reopen();
        while !path.exists() {
            assert!(Instant::now() < deadline, "not reopened");
            std::thread::sleep(Duration::from_millis(5));
        }
        w.make_writer().write_all(b"two\n").unwrap();
        w = started.writer.clone();
        w.make_writer().write_all(b"three\n").unwrap();
        drop(started);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\nthree\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("access.log.1")).unwrap(),
            "one\n"
        );
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_and_counts_them() {
        let shared = Shared {
            state: Mutex::new(State {
                // No writer thread: the buffer only fills.
                ..State::default()
            }),
            wake: Condvar::new(),
            ended: Condvar::new(),
            limit: 10,
        };
        let before = dropped();
        shared.push(b"12345\n");
        shared.push(b"12345\n");
        shared.push(b"123\n");
        assert_eq!(shared.lock().buf, b"12345\n123\n");
        assert!(dropped() > before);
    }
}
