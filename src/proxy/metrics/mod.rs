//! Prometheus metrics of one running proxy: requests by cache outcome, latency, bytes,
//! upstream exchanges and errors, store gauges (refreshed when scraped).
//!
//! Also the served counters of `hoard stats` ([`Served`], persisted in `<cache-dir>/served`
//! by [`Tally`]): requests answered from the cache (memory front included) and requests
//! that went to an origin, with their body bytes, summed over every process and restart.
//!
//! Invariant: recording is lock-free atomics on the request path; the registry is only
//! walked by the admin server's `/metrics` handler, and the served file is written by a
//! background task (debounced, on a blocking thread), never on the request path.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

tokio::task_local! {
    /// Microseconds spent waiting for origin response heads by the request being handled.
    pub static UPSTREAM_US: Cell<u64>;
}

/// Label set `cache_status="hit"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    cache_status: String,
}

/// Label set `kind="connect-error"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Label set `source="cache"|"origin"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Label set `reason="culled"|"expired"` of the store's evictions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Adds to `counter` what a total kept elsewhere (`now`) gained since `seen` (concurrent
/// scrapes add each gain once).
fn catch_up(counter: &Counter, seen: &AtomicU64, now: u64) {
    let before = seen.fetch_max(now, Ordering::Relaxed);
    if now > before {
        counter.inc_by(now - before);
    }
}

/// Label of a shared tier figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SharedLabel {
    figure: &'static str,
}

/// The metrics of one proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    upstream_requests: Counter,
    upstream_errors: Family<KindLabel, Counter>,
    bytes: Family<SourceLabel, Counter>,
    entries: Gauge,
    volume: Gauge,
    size_limit: Gauge,
    /// Shared tier figures by name (set when scraped; absent tier: all 0).
    shared: Family<SharedLabel, Gauge>,
    duration: Histogram,
    upstream_duration: Histogram,
    served_hits: Gauge,
    served_misses: Gauge,
    /// This process's served counts since start (the dashboard's live numbers).
    live: Arc<Pending>,
    /// Counts not yet added to the served file (`None`: not persisted).
    tally: Option<Arc<Tally>>,
    /// Requests handled by this process (all outcomes).
    requests_total: AtomicU64,
    /// The live request feed of the dashboard (see [`Metrics::publish`]).
    feed: tokio::sync::broadcast::Sender<Arc<AccessEvent>>,
    /// Subscribers of `feed` (checked without a lock on the request path).
    watchers: Arc<AtomicU64>,
    access_dropped: Counter,
    /// The value of [`crate::access_log::dropped`] `access_dropped` has caught up with.
    access_dropped_seen: AtomicU64,
    /// Rows the store removed on its own, by reason (its persisted counts, caught up
    /// when scraped).
    evictions: Family<ReasonLabel, Counter>,
    /// The store's (culled, expired) counts `evictions` has caught up with.
    evictions_seen: [AtomicU64; 2],
}

/// Events kept for a subscriber that is behind; beyond this it loses the oldest (a slow
/// dashboard drops events, it never slows the proxy).
pub const FEED_CAPACITY: usize = 1024;

/// One request as the dashboard shows it (the access line's fields).
#[derive(Debug, Clone, Serialize)]
pub struct AccessEvent {
    /// When the response head was ready (Unix milliseconds).
    pub time_ms: u64,
    /// Request method.
    pub method: String,
    /// Request target as received (absolute URL, or path in gateway mode / inside CONNECT).
    pub url: String,
    /// Response status.
    pub status: u16,
    /// Our `Cache-Status` value.
    pub cache_status: String,
    /// Its outcome token (`hit`, `uri-miss`, `bypass`, ...).
    pub outcome: String,
    /// Body bytes when known in advance.
    pub bytes: Option<u64>,
    /// Time to the response head in microseconds.
    pub elapsed_us: u64,
}

/// A subscription to the request feed; counts as a watcher until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The events.
    pub rx: tokio::sync::broadcast::Receiver<Arc<AccessEvent>>,
    watchers: Arc<AtomicU64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome token of our (the last) member of a `Cache-Status` value: `hit`, or the `fwd`
/// reason (`uri-miss`, `miss`, `vary-miss`, `stale`, `request`, `bypass`), or the detail, or
/// `none`. Members of caches upstream of us come first (RFC 9211) and are ignored.
pub fn outcome(cache_status: &str) -> &str {
    let ours = cache_status.rsplit(',').next().unwrap_or("");
    let mut detail = None;
    for p in ours.split(';').skip(1).map(str::trim) {
        if p == "hit" {
            return "hit";
        }
        if let Some(f) = p.strip_prefix("fwd=") {
            return f;
        }
        if let Some(d) = p.strip_prefix("detail=") {
            detail = Some(d.trim_matches('"'));
        }
    }
    detail.unwrap_or("none")
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hoard");
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by Cache-Status outcome (hit, uri-miss, miss, stale, bypass, ...)",
            requests.clone(),
        );
        // Common outcomes start at 0 so dashboards see them before the first request.
        for o in [
            "hit",
            "uri-miss",
            "miss",
            "vary-miss",
            "stale",
            "request",
            "bypass",
        ] {
            let _ = requests.get_or_create(&OutcomeLabel {
                cache_status: o.to_string(),
            });
        }
        let upstream_requests = Counter::default();
        registry.register(
            "upstream_requests",
            "Requests sent to origins",
            upstream_requests.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Origin exchanges that failed before a response head, by kind",
            upstream_errors.clone(),
        );
        let bytes = Family::<SourceLabel, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes of known length sent to clients, by source (cache or origin)",
            bytes.clone(),
        );
        let entries = Gauge::default();
        registry.register("store_entries", "Rows in the store", entries.clone());
        let volume = Gauge::default();
        registry.register("store_bytes", "Bytes used by the store", volume.clone());
        let size_limit = Gauge::default();
        registry.register(
            "store_size_limit_bytes",
            "Size limit of the store",
            size_limit.clone(),
        );
        let shared = Family::<SharedLabel, Gauge>::default();
        registry.register(
            "shared_tier",
            "Shared tier (Redis) counters and state by figure: hits, misses, damaged, errors, \
             timeouts, skipped, writes, oversize, invalidations_received, breaker_open (0/1), \
             write_breaker_open, breaker_opened, connected, latency_micros_sum, latency_count",
            shared.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0001, 2.5, 14));
        registry.register(
            "request_duration_seconds",
            "Time to response head for client requests",
            duration.clone(),
        );
        let upstream_duration = Histogram::new(exponential_buckets(0.0005, 2.5, 12));
        registry.register(
            "upstream_duration_seconds",
            "Time to response head from origins",
            upstream_duration.clone(),
        );
        let served_hits = Gauge::default();
        registry.register(
            "served_hits",
            "Requests answered from the cache (memory front included), all processes and \
             restarts on this cache directory (what `hoard stats` shows)",
            served_hits.clone(),
        );
        let served_misses = Gauge::default();
        registry.register(
            "served_misses",
            "Cacheable requests that went to an origin, all processes and restarts on this \
             cache directory (what `hoard stats` shows)",
            served_misses.clone(),
        );
        let access_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access lines dropped because the access log destination did not keep up",
            access_dropped.clone(),
        );
        let evictions = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "store_evictions",
            "Rows the store removed on its own, all processes on this cache directory: \
             culled (over the size limit) or expired",
            evictions.clone(),
        );
        Metrics {
            evictions,
            evictions_seen: [AtomicU64::new(0), AtomicU64::new(0)],
            registry,
            served_hits,
            served_misses,
            live: Arc::new(Pending::default()),
            tally: None,
            requests_total: AtomicU64::new(0),
            feed: tokio::sync::broadcast::channel(FEED_CAPACITY).0,
            watchers: Arc::new(AtomicU64::new(0)),
            requests,
            upstream_requests,
            upstream_errors,
            bytes,
            entries,
            volume,
            size_limit,
            shared,
            duration,
            upstream_duration,
            access_dropped,
            access_dropped_seen: AtomicU64::new(0),
        }
    }

    /// Metrics whose served counts are also added to `<dir>/served` (see [`Tally`]), when
    /// `enabled` (the `statistics` setting). Must be called inside a tokio runtime to
    /// persist (outside one the counts stay in memory).
    pub fn persisting(dir: &Path, enabled: bool) -> Self {
        let mut m = Self::new();
        if enabled {
            m.tally = Tally::start(dir);
        }
        m
    }

    /// This process's served counts since it started.
    pub fn live(&self) -> Served {
        self.live.peek()
    }

    /// Requests this process handled (every outcome) and origin exchanges it made.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests_total.load(Ordering::Relaxed),
            self.upstream_requests.get(),
        )
    }

    /// Whether anyone watches the request feed (one relaxed load).
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Send one request to the feed's subscribers. `make` runs only when someone watches,
    /// so an unwatched proxy builds no event; sending never blocks.
    pub fn publish(&self, make: impl FnOnce() -> AccessEvent) {
        if self.watched() {
            let _ = self.feed.send(Arc::new(make()));
        }
    }

    /// Watch the request feed.
    pub fn subscribe(&self) -> Subscription {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.feed.subscribe(),
            watchers: self.watchers.clone(),
        }
    }

    /// One client request finished its head: outcome, time, and body length if known.
    pub fn request(&self, cache_status: &str, elapsed: Duration, body_len: Option<u64>) {
        let outcome = outcome(cache_status);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = ServedKind::of(outcome) {
            self.live.add(kind, body_len.unwrap_or(0));
            if let Some(t) = &self.tally {
                t.add(kind, body_len.unwrap_or(0));
            }
        }
        self.requests
            .get_or_create(&OutcomeLabel {
                cache_status: outcome.to_string(),
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(n) = body_len {
            let source = if outcome == "hit" { "cache" } else { "origin" };
            self.bytes.get_or_create(&SourceLabel { source }).inc_by(n);
        }
    }

    /// One origin exchange ended (head received, or failed with `error`).
    pub fn upstream(&self, elapsed: Duration, error: Option<&str>) {
        self.upstream_requests.inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
        let _ = UPSTREAM_US.try_with(|c| c.set(c.get() + elapsed.as_micros() as u64));
        if let Some(kind) = error {
            self.upstream_errors
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

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

    /// Store gauges (set when scraped).
    pub fn set_store(&self, entries: u64, volume: u64, size_limit: u64) {
        self.entries.set(entries.min(i64::MAX as u64) as i64);
        self.volume.set(volume.min(i64::MAX as u64) as i64);
        self.size_limit.set(size_limit.min(i64::MAX as u64) as i64);
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
        let figures: [(&'static str, i64); 15] = [
            ("hits", s.hits as i64),
            ("misses", s.misses as i64),
            ("damaged", s.damaged as i64),
            ("errors", s.errors as i64),
            ("timeouts", s.timeouts as i64),
            ("skipped", s.skipped as i64),
            ("writes", s.writes as i64),
            ("oversize", s.oversize as i64),
            ("invalidations_received", s.invalidations_received as i64),
            ("breaker_open", open(&s.breaker)),
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        // The process-wide count of the access log, caught up when scraped.
        catch_up(
            &self.access_dropped,
            &self.access_dropped_seen,
            crate::access_log::dropped(),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
struct Pending {
    hits: AtomicU64,
    misses: AtomicU64,
    cache_bytes: AtomicU64,
    origin_bytes: AtomicU64,
}

impl Pending {
    fn add(&self, kind: ServedKind, bytes: u64) {
        let (n, b) = match kind {
            ServedKind::Hit => (&self.hits, &self.cache_bytes),
            ServedKind::Miss => (&self.misses, &self.origin_bytes),
        };
        n.fetch_add(1, Ordering::Relaxed);
        if bytes > 0 {
            b.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn peek(&self) -> Served {
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
/// write per interval.
const MIN_INTERVAL: Duration = Duration::from_millis(5);

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
    fn start(dir: &Path) -> Option<Arc<Tally>> {
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

    fn add(&self, kind: ServedKind, bytes: u64) {
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
    fn flush(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_cache_status_values() {
        let cases = [
            ("hoard; hit; ttl=59", "hit"),
            ("hoard; fwd=uri-miss; stored", "uri-miss"),
            ("hoard; fwd=stale; fwd-status=304; stored; ttl=60", "stale"),
            ("hoard; fwd=bypass; detail=method", "bypass"),
            ("hoard; detail=only-if-cached", "only-if-cached"),
            ("hoard", "none"),
            ("cdn; hit, hoard; fwd=stale; fwd-status=200", "stale"),
            ("cdn; fwd=uri-miss, hoard; hit; ttl=3", "hit"),
            ("", "none"),
        ];
        for (v, want) in cases {
            assert_eq!(outcome(v), want, "{v}");
        }
    }

    #[test]
    fn encodes_counters_by_outcome() {
        let m = Metrics::new();
        m.request(
            "hoard; fwd=uri-miss; stored",
            Duration::from_millis(3),
            Some(10),
        );
        m.request("hoard; hit; ttl=5", Duration::from_millis(1), Some(10));
        m.request("hoard; hit; ttl=5", Duration::from_millis(1), None);
        m.upstream(Duration::from_millis(2), Some("connect-error"));
        m.set_store(3, 4096, 1 << 30);
        m.set_evictions(5, 1);
        m.set_evictions(7, 1); // totals: counted once each
        let text = m.encode();
        for line in [
            "hoard_requests_total{cache_status=\"hit\"} 2",
            "hoard_requests_total{cache_status=\"uri-miss\"} 1",
            "hoard_upstream_requests_total 1",
            "hoard_upstream_errors_total{kind=\"connect-error\"} 1",
            "hoard_response_bytes_total{source=\"cache\"} 10",
            "hoard_store_entries 3",
            "hoard_store_evictions_total{reason=\"culled\"} 7",
            "hoard_store_evictions_total{reason=\"expired\"} 1",
            "hoard_request_duration_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("hoard_access_log_dropped_total ")),
            "{text}"
        );
    }

    #[test]
    fn the_feed_builds_events_only_when_watched() {
        let m = Metrics::new();
        m.publish(|| unreachable!("nobody watches"));
        let mut sub = m.subscribe();
        assert!(m.watched());
        let ev = || AccessEvent {
            time_ms: 1,
            method: "GET".into(),
            url: "http://a/".into(),
            status: 200,
            cache_status: "hoard; hit".into(),
            outcome: "hit".into(),
            bytes: Some(3),
            elapsed_us: 5,
        };
        m.publish(ev);
        assert_eq!(sub.rx.try_recv().unwrap().url, "http://a/");
        // A subscriber that falls behind loses the oldest events; sending never blocks.
        for _ in 0..FEED_CAPACITY + 10 {
            m.publish(ev);
        }
        assert!(matches!(
            sub.rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(10))
        ));
        drop(sub);
        assert!(!m.watched());
    }

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
