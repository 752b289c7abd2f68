//! Prometheus metrics of one running proxy: requests by cache outcome, latency, bytes,
//! upstream exchanges and errors (this file: the registry and the request-path recording).
//!
//! Elsewhere in this module: the served counters of `hoard stats` and their file (`served`),
//! the scrape-time store and shared tier figures (`gauges`), the dashboard's request feed
//! (`feed`).
//!
//! Invariant: recording is lock-free atomics on the request path; the registry is only
//! walked by the admin server's `/metrics` handler, and the served file is written by a
//! background task (debounced, on a blocking thread), never on the request path.

mod feed;
mod gauges;
mod served;

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use feed::{AccessEvent, FEED_CAPACITY, Subscription, unix_ms};
use served::Pending;
pub use served::{SERVED_FILE, Served, ServedError, ServedKind, Tally, add_served, read_served};

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

/// Label of a listener (the per-core mode's thread index; 0 otherwise).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: u64,
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
    /// `requests{cache_status="hit"}` and `response_bytes` by source, looked up once: the
    /// family's lookup (a label string built, hashed, a lock) was per request.
    hit_requests: Counter,
    bytes_from: [Counter; 2],
    upstream_requests: Counter,
    upstream_errors: Family<KindLabel, Counter>,
    /// Connections accepted, by listener (how the kernel spreads them over per-core threads).
    accepted: Family<ListenerLabel, Counter>,
    entries: Gauge,
    volume: Gauge,
    size_limit: Gauge,
    /// The memory front's count of what it holds (`entries::hot::footprint`), and its entries.
    front_bytes: Gauge,
    front_entries: Gauge,
    sqlite_heap: Gauge,
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
        let hit_requests = requests
            .get_or_create(&OutcomeLabel {
                cache_status: "hit".to_string(),
            })
            .clone();
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
        let accepted = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_accepted",
            "Client connections accepted, by listener (per-core thread index; 0 with one)",
            accepted.clone(),
        );
        let bytes = Family::<SourceLabel, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes of known length sent to clients, by source (cache or origin)",
            bytes.clone(),
        );
        let bytes_from =
            ["cache", "origin"].map(|source| bytes.get_or_create(&SourceLabel { source }).clone());
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
        let front_bytes = Gauge::default();
        registry.register(
            "memory_front_bytes",
            "Bytes the memory front counts as held (memory-cache-size bounds it)",
            front_bytes.clone(),
        );
        let front_entries = Gauge::default();
        registry.register(
            "memory_front_entries",
            "Entries in the memory front",
            front_entries.clone(),
        );
        let sqlite_heap = Gauge::default();
        registry.register(
            "sqlite_heap_bytes",
            "Bytes SQLite holds on the heap in this process: every store connection's page \
             cache, statements and schema",
            sqlite_heap.clone(),
        );
        let shared = Family::<SharedLabel, Gauge>::default();
        registry.register(
            "shared_tier",
            "Shared tier (Redis) counters and state by figure: hits, misses, damaged, forged, errors, \
             timeouts, skipped, writes, oversize, invalidations_received, breaker_open (0/1), \
             breaker_open_ranges (cluster slot ranges skipped, of 64), write_breaker_open, breaker_opened, connected, latency_micros_sum, latency_count",
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
            hit_requests,
            bytes_from,
            upstream_requests,
            upstream_errors,
            accepted,
            entries,
            volume,
            size_limit,
            front_bytes,
            front_entries,
            sqlite_heap,
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
        let hit = outcome == "hit";
        if hit {
            self.hit_requests.inc();
        } else {
            self.requests
                .get_or_create(&OutcomeLabel {
                    cache_status: outcome.to_string(),
                })
                .inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(n) = body_len {
            self.bytes_from[usize::from(!hit)].inc_by(n);
        }
    }

    /// The counter of connections accepted on listener `index` (looked up once per accept
    /// loop, incremented per connection).
    pub fn accepted_counter(&self, index: usize) -> Counter {
        let listener = u64::try_from(index).unwrap_or(u64::MAX);
        self.accepted
            .get_or_create(&ListenerLabel { listener })
            .clone()
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
        m.set_front(8192, 2);
        m.set_sqlite_heap(4096);
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
            "hoard_memory_front_bytes 8192",
            "hoard_memory_front_entries 2",
            "hoard_sqlite_heap_bytes 4096",
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
}
