//! The served counters of `hoard stats` ([`Served`]), persisted in `<cache-dir>/served` by
//! [`Tally`]: requests answered from the cache (memory front included) and requests that
//! went to an origin, with their body bytes, summed over every process and restart.
//!
//! Invariant: the request path only adds to atomics; the served file is written under an
//! exclusive lock by a background task (debounced, on a blocking thread), never on the
//! request path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;

use super::Metrics;

/// How a request counts for the hit ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedKind {
    /// Answered from the cache (`Cache-Status: hit`), store or memory front.
    Hit,
    /// A cacheable request that went to an origin (`uri-miss`, `miss`, `vary-miss`,
    /// `stale`, `request`).
    Miss,
}

impl ServedKind {
    /// The kind of a request by its outcome token; `None` for what the cache did not try
    /// to answer (bypass, refusals, errors, tunnels).
    pub fn of(outcome: &str) -> Option<ServedKind> {
        match outcome {
            "hit" => Some(ServedKind::Hit),
            "uri-miss" | "miss" | "vary-miss" | "stale" | "request" => Some(ServedKind::Miss),
            _ => None,
        }
    }
}

/// Requests served, as `hoard stats` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Served {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Cacheable requests that went to an origin.
    pub misses: u64,
    /// Body bytes (of known length) sent from the cache.
    pub cache_bytes: u64,
    /// Body bytes (of known length) of those requests sent from origins.
    pub origin_bytes: u64,
}

impl Served {
    /// hits / (hits + misses), when there were any.
    pub fn ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0).then(|| self.hits as f64 / n as f64)
    }
}

/// Counts added since the last flush.
#[derive(Debug, Default)]
pub(super) struct Pending {
    hits: AtomicU64,
    misses: AtomicU64,
    cache_bytes: AtomicU64,
    origin_bytes: AtomicU64,
}

impl Pending {
    pub(super) fn add(&self, kind: ServedKind, bytes: u64) {
        let (n, b) = match kind {
            ServedKind::Hit => (&self.hits, &self.cache_bytes),
            ServedKind::Miss => (&self.misses, &self.origin_bytes),
        };
        n.fetch_add(1, Ordering::Relaxed);
        if bytes > 0 {
            b.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(super) fn peek(&self) -> Served {
        Served {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            cache_bytes: self.cache_bytes.load(Ordering::Relaxed),
            origin_bytes: self.origin_bytes.load(Ordering::Relaxed),
        }
    }

    fn take(&self) -> Served {
        Served {
            hits: self.hits.swap(0, Ordering::Relaxed),
            misses: self.misses.swap(0, Ordering::Relaxed),
            cache_bytes: self.cache_bytes.swap(0, Ordering::Relaxed),
            origin_bytes: self.origin_bytes.swap(0, Ordering::Relaxed),
        }
    }

    fn put_back(&self, s: Served) {
        self.hits.fetch_add(s.hits, Ordering::Relaxed);
        self.misses.fetch_add(s.misses, Ordering::Relaxed);
        self.cache_bytes.fetch_add(s.cache_bytes, Ordering::Relaxed);
        self.origin_bytes
            .fetch_add(s.origin_bytes, Ordering::Relaxed);
    }
}

/// The served file's name in the cache directory.
pub const SERVED_FILE: &str = "served";
const MAGIC: &[u8; 8] = b"hoardsv1";
const FILE_LEN: usize = 8 + 4 * 8;
/// Least time between two writes of the served file: the first count after a quiet spell
/// is written at once (so `hoard stats` right after a request sees it), a burst costs one
/// write per interval. Each write is a blocking-pool hop and six system calls under a file
/// lock: at 5 ms, a loaded proxy made 100 of them a second (strace of a 1 KiB hit run).
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Why the served file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The served file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a served-counts file (it is then started again from zero).
    #[error("{0}: not a hoard served-counts file")]
    Malformed(PathBuf),
}

fn decode(buf: &[u8]) -> Option<Served> {
    if buf.len() < FILE_LEN || &buf[..8] != MAGIC {
        return None;
    }
    let n = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(b)
    };
    Some(Served {
        hits: n(0),
        misses: n(1),
        cache_bytes: n(2),
        origin_bytes: n(3),
    })
}

fn encode(s: &Served) -> [u8; FILE_LEN] {
    let mut out = [0u8; FILE_LEN];
    out[..8].copy_from_slice(MAGIC);
    for (i, v) in [s.hits, s.misses, s.cache_bytes, s.origin_bytes]
        .into_iter()
        .enumerate()
    {
        out[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// The served counts of the cache directory `dir` (zero when none were written yet).
pub fn read_served(dir: &Path) -> Result<Served, ServedError> {
    let path = dir.join(SERVED_FILE);
    let io = |source| ServedError::Io {
        path: path.clone(),
        source,
    };
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Served::default()),
        Err(e) => return Err(io(e)),
    };
    f.lock_shared().map_err(io)?;
    let mut buf = Vec::with_capacity(FILE_LEN);
    f.read_to_end(&mut buf).map_err(io)?;
    if buf.is_empty() {
        return Ok(Served::default());
    }
    decode(&buf).ok_or_else(|| ServedError::Malformed(path.clone()))
}

/// Add `delta` to the served counts of `dir` (created 0600 if absent), under an exclusive
/// lock so processes sharing the directory add up.
pub fn add_served(dir: &Path, delta: &Served) -> Result<Served, ServedError> {
    let path = dir.join(SERVED_FILE);
    let io = |source| ServedError::Io {
        path: path.clone(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.lock().map_err(io)?;
    let mut buf = Vec::with_capacity(FILE_LEN);
    f.read_to_end(&mut buf).map_err(io)?;
    let old = match decode(&buf) {
        Some(s) => s,
        None if buf.is_empty() => Served::default(),
        None => {
            tracing::warn!(path = %path.display(), "served counts unreadable: starting from zero");
            Served::default()
        }
    };
    let new = Served {
        hits: old.hits.saturating_add(delta.hits),
        misses: old.misses.saturating_add(delta.misses),
        cache_bytes: old.cache_bytes.saturating_add(delta.cache_bytes),
        origin_bytes: old.origin_bytes.saturating_add(delta.origin_bytes),
    };
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&encode(&new)).map_err(io)?;
    f.set_len(FILE_LEN as u64).map_err(io)?;
    Ok(new)
}

/// Served counts on their way to the served file: the request path adds to atomics and
/// wakes a background task, which writes them on a blocking thread, at most once per
/// [`MIN_INTERVAL`]. What is pending when the proxy stops is written on drop.
#[derive(Debug)]
pub struct Tally {
    dir: PathBuf,
    pending: Pending,
    scheduled: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Tally {
    /// A tally for `dir` with its writer task, or `None` outside a tokio runtime.
    pub(super) fn start(dir: &Path) -> Option<Arc<Tally>> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let t = Arc::new(Tally {
            dir: dir.to_path_buf(),
            pending: Pending::default(),
            scheduled: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        rt.spawn(Self::writer(Arc::downgrade(&t)));
        Some(t)
    }

    pub(super) fn add(&self, kind: ServedKind, bytes: u64) {
        self.pending.add(kind, bytes);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    async fn writer(t: Weak<Tally>) {
        loop {
            let notified = {
                let Some(t) = t.upgrade() else { return };
                // `notify_one` stores a permit, so a wake between upgrade and await is kept.
                let fut = async move { t.wake.notified().await };
                tokio::time::timeout(Duration::from_secs(1), fut).await
            };
            if notified.is_err() {
                continue; // re-check that the tally still exists
            }
            let Some(strong) = t.upgrade() else { return };
            strong.scheduled.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(move || strong.flush()).await;
            // At most one write per interval: under load, one write carries many requests.
            tokio::time::sleep(MIN_INTERVAL).await;
        }
    }

    /// Write what is pending now (blocking).
    pub(super) fn flush(&self) {
        let d = self.pending.take();
        if d == Served::default() {
            return;
        }
        if let Err(e) = add_served(&self.dir, &d) {
            tracing::debug!(error = %e, "served counts not written: kept for the next try");
            self.pending.put_back(d);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Metrics {
    /// The served counters of the cache directory (set when scraped).
    pub fn set_served(&self, s: &Served) {
        self.served_hits.set(s.hits.min(i64::MAX as u64) as i64);
        self.served_misses.set(s.misses.min(i64::MAX as u64) as i64);
    }

    /// Add what is pending to the served file now (tests, shutdown); blocking.
    pub fn flush_served(&self) {
        if let Some(t) = &self.tally {
            t.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_kinds() {
        let cases = [
            ("hit", Some(ServedKind::Hit)),
            ("uri-miss", Some(ServedKind::Miss)),
            ("stale", Some(ServedKind::Miss)),
            ("bypass", None),
            ("only-if-cached", None),
            ("none", None),
        ];
        for (o, want) in cases {
            assert_eq!(ServedKind::of(o), want, "{o}");
        }
    }

    #[test]
    fn served_file_adds_up_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_served(dir.path()).unwrap(), Served::default());
        let d = Served {
            hits: 2,
            misses: 1,
            cache_bytes: 10,
            origin_bytes: 5,
        };
        add_served(dir.path(), &d).unwrap();
        let s = add_served(dir.path(), &d).unwrap();
        assert_eq!((s.hits, s.misses, s.cache_bytes), (4, 2, 20));
        assert_eq!(read_served(dir.path()).unwrap(), s);
        std::fs::write(dir.path().join(SERVED_FILE), b"junk").unwrap();
        assert!(matches!(
            read_served(dir.path()),
            Err(ServedError::Malformed(_))
        ));
        assert_eq!(add_served(dir.path(), &d).unwrap(), d);
    }
}
