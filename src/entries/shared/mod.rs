//! The shared tier: a Redis (or Redis Cluster) copy of cache rows that several hoard machines
//! read and write, with a cross-machine fetch lease and invalidation messages.
//!
//! Invariants:
//! - Failure is never an outage: every call is bounded by [`SharedConfig::timeout`]; errors
//!   become misses ([`SharedTier::get`] `None`, [`SharedLease::Unavailable`], `false`), are
//!   counted in [`SharedStatus`], and feed a circuit breaker ([`breaker`]) that stops calling
//!   Redis after consecutive failures and probes once a second. Redis refusing writes for lack
//!   of memory (`OOM`) opens only the write breaker: reads continue.
//! - A row read back is served only when its version, full row key, body length and xxh3-64
//!   digest all check out; a damaged row is a miss and is deleted ([`codec`]).
//! - Every key written carries a TTL, so copies expire by themselves; bodies larger than
//!   [`SharedConfig::max_object_size`] are never written.
//! - A lease is deleted only by its holder (compare-and-delete script), so a holder whose
//!   lease expired and was taken by another never releases the new holder's lease.
//! - One log line per change of state (connection, subscription, breakers), never per call.
//!
//! Background tasks (spawned by [`SharedTier::start`], ended when the last handle drops): the
//! connector (`connection.rs`: connects, reconnects after a dropped connection, with backoff;
//! the proxy waits for its first attempt, bounded, before accepting: `connect.rs`) and the
//! subscriber (its own connection; `{prefix}invalidate` and `{prefix}filled`; reconnects).
//! Invalidations published while the subscriber is disconnected are not replayed: the rows'
//! TTLs bound how long another process may keep serving what it copied locally.
//!
//! This file: the handle ([`SharedTier`]: rows, leases, purges, status) and its state;
//! `connection.rs`: the command connection, the connector and `Inner::call` (breakers,
//! timeout); `subscriber.rs`: the subscription; `lease.rs`: [`SharedLeaseGuard`] and `filled`
//! waiters; `scripts.rs`: the Lua scripts; `connect.rs`: the bounded wait for the first
//! connection before the proxy accepts; `ranges.rs`: the breakers by cluster slot range.

pub mod admin;
pub mod breaker;
pub mod codec;
pub mod config;
pub mod connect;
mod connection;
mod lease;
pub mod ranges;
mod scripts;
pub mod seal;
mod subscriber;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use breaker::Breaker;
pub use breaker::BreakerState;
use codec::{Decoded, UrlKeys};
pub use config::{ClientIdentity, SharedConfig, SharedConfigError, SharedUrl};
pub use connect::{Startup, startup_wait};
use connection::{CONNECT_TIMEOUT, Conn, Kind, connector};
pub use lease::SharedLeaseGuard;
use lease::Waiter;
use scripts::{PURGE_SCRIPT, PUT_META_SCRIPT, PUT_SCRIPT, RELEASE_SCRIPT, Scripts};
use subscriber::subscriber;

/// [`SharedTier::wait_filled`] checks the lease this often when no message arrives.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Capacity of the invalidation broadcast channel (a slow receiver sees `Lagged`).
const INVALIDATION_CAPACITY: usize = 1024;

/// A row read from the shared tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    /// The row's meta (an encoded `HeadRecord` for the proxy).
    pub meta: Vec<u8>,
    /// The body, verified against its stored length and digest.
    pub body: Bytes,
}

/// Outcome of [`SharedTier::lease`].
#[derive(Debug)]
pub enum SharedLease {
    /// Ours until [`SharedLeaseGuard::finish`], drop, or expiry.
    Acquired(SharedLeaseGuard),
    /// Another process holds it: [`SharedTier::wait_filled`], then read again.
    HeldElsewhere,
    /// Redis is unreachable or refused: proceed without cross-machine coalescing.
    Unavailable,
}

/// Counters and state for `/metrics` and `hoard stats`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedStatus {
    /// A command connection is established.
    pub connected: bool,
    /// The invalidation/filled subscription is live.
    pub subscribed: bool,
    /// Breaker for every call: `open` when any breaker is (on a cluster, one per slot range).
    pub breaker: BreakerState,
    /// Cluster slot ranges whose breaker is open, of `breaker_ranges` (one range for a single
    /// server).
    pub breaker_open_ranges: usize,
    /// Number of breakers (slot ranges): 1 for a single server, 64 for a cluster.
    pub breaker_ranges: usize,
    /// Breaker for writes alone (opened by `OOM` replies).
    pub write_breaker: BreakerState,
    /// How many times either breaker opened.
    pub breaker_opened: u64,
    /// `get` calls that returned a row.
    pub hits: u64,
    /// `get` calls that returned nothing (absent, damaged, collision, or Redis unavailable).
    pub misses: u64,
    /// Damaged rows found (and deleted).
    pub damaged: u64,
    /// Sealed rows whose tags did not verify, and invalidations without a valid tag
    /// (`shared-secret-file`): written by someone without the fleet's secret; ignored.
    pub forged: u64,
    /// Calls that failed: Redis errors and timeouts.
    pub errors: u64,
    /// Of `errors`, timeouts.
    pub timeouts: u64,
    /// Calls not sent because a breaker was open or no connection was up (the latter also
    /// counts as a breaker failure).
    pub skipped: u64,
    /// Rows written (`put`, and `put_meta` that found its row).
    pub writes: u64,
    /// `put` calls refused for a body above `max_object_size`.
    pub oversize: u64,
    /// Invalidations received from other processes.
    pub invalidations_received: u64,
    /// Sum of the latencies of calls sent to Redis, in microseconds.
    pub latency_micros_sum: u64,
    /// Number of calls sent to Redis (the divisor of `latency_micros_sum`).
    pub latency_count: u64,
    /// Why the last attempt to connect failed (e.g. a TLS certificate not trusted), while
    /// no command connection is up.
    pub connect_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    damaged: AtomicU64,
    forged: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
    oversize: AtomicU64,
    invalidations: AtomicU64,
    latency_sum: AtomicU64,
    latency_count: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Inner {
    cfg: SharedConfig,
    url: SharedUrl,
    /// What `rediss://` connections trust.
    roots: tls::Roots,
    /// The fleet's key (`shared-secret-file`): rows and invalidations are sealed with it.
    seal: Option<seal::Seal>,
    /// Random id of this tier instance, to skip our own invalidation messages.
    id: String,
    /// Current command connection and its generation.
    conn: Mutex<Option<(u64, Conn)>>,
    conn_gen: AtomicU64,
    /// Wakes the connector after a connection was dropped.
    reconnect: Notify,
    /// Why the last connection attempt failed; cleared by a success.
    connect_error: Mutex<Option<String>>,
    subscribed: AtomicBool,
    all: ranges::Breakers,
    writes: Breaker,
    counters: Counters,
    invalidations: broadcast::Sender<String>,
    /// `filled` waiters by URL hash tag.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    scripts: Scripts,
    invalidate_channel: String,
    filled_channel: String,
    cancel: CancellationToken,
}

/// Cancels the background tasks when the last [`SharedTier`] handle drops.
struct Life(CancellationToken);

impl Drop for Life {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Handle to the shared tier; cheap to clone. Every method is bounded by the configured
/// timeout and never blocks a tokio worker thread.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
    _life: Arc<Life>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("url", &self.inner.url.redacted())
            .field("prefix", &self.inner.cfg.prefix)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// Validate `cfg` and start the tier: returns at once (no network I/O); the connection
    /// and the subscription are made in background tasks that retry until they succeed.
    /// Until then every call is a miss ([`SharedTier::connect_at_start`] waits, bounded, for
    /// the first attempt). Must be called inside a tokio runtime.
    pub fn start(cfg: SharedConfig) -> Result<SharedTier, SharedConfigError> {
        let url = cfg.validate()?;
        let roots = tls::Roots::load(
            cfg.ca_file.as_deref().filter(|_| url.tls),
            cfg.client_identity.as_ref().filter(|_| url.tls),
        )?;
        let seal = match &cfg.secret_file {
            Some(path) => Some(
                seal::Seal::from_file(path)
                    .map_err(|e| SharedConfigError::Secret(e.to_string()))?,
            ),
            None => None,
        };
        let cancel = CancellationToken::new();
        let all = ranges::Breakers::new(url.cluster);
        let (tx, _) = broadcast::channel(INVALIDATION_CAPACITY);
        let inner = Arc::new(Inner {
            invalidate_channel: codec::invalidate_channel(&cfg.prefix),
            filled_channel: codec::filled_channel(&cfg.prefix),
            cfg,
            url,
            roots,
            seal,
            id: format!("{:016x}", fastrand::u64(..)),
            conn: Mutex::new(None),
            conn_gen: AtomicU64::new(0),
            reconnect: Notify::new(),
            connect_error: Mutex::new(None),
            subscribed: AtomicBool::new(false),
            all,
            writes: Breaker::new("shared-writes"),
            counters: Counters::default(),
            invalidations: tx,
            waiters: Mutex::new(HashMap::new()),
            scripts: Scripts {
                put: redis::Script::new(PUT_SCRIPT),
                put_meta: redis::Script::new(PUT_META_SCRIPT),
                release: redis::Script::new(RELEASE_SCRIPT),
                purge: redis::Script::new(PURGE_SCRIPT),
            },
            cancel: cancel.clone(),
        });
        tokio::spawn(connector(inner.clone()));
        tokio::spawn(subscriber(inner.clone()));
        Ok(SharedTier {
            inner,
            _life: Arc::new(Life(cancel)),
        })
    }

    /// Wait (at most `max`) until the command connection and the subscription are up;
    /// `true` when both are. For startup logs and tests; requests never need it.
    pub async fn wait_ready(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let s = self.status();
            if s.connected && s.subscribed {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Read row `row_key` of the URL `url_key`. `None` when absent, damaged (then deleted),
    /// another row key's (hash collision), or when Redis is unavailable.
    pub async fn get(&self, url_key: &str, row_key: &[u8]) -> Option<SharedEntry> {
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let key = keys.row(row_key);
        let k = key.clone();
        let got = self
            .inner
            .call(Kind::Read, keys.slot(), move |mut c| async move {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await;
        let c = &self.inner.counters;
        let Ok(Some(blob)) = got else {
            inc(&c.misses);
            return None;
        };
        match codec::decode(Bytes::from(blob), row_key, self.inner.seal.as_ref()) {
            Decoded::Row(meta, body) => {
                inc(&c.hits);
                Some(SharedEntry { meta, body })
            }
            Decoded::OtherKey | Decoded::OtherVersion => {
                inc(&c.misses);
                None
            }
            Decoded::Forged(why) => {
                inc(&c.misses);
                inc(&c.forged);
                tracing::debug!(key = %key, why, "shared tier: row without a valid tag ignored");
                None
            }
            Decoded::Damaged(why) => {
                inc(&c.misses);
                inc(&c.damaged);
                tracing::debug!(key = %key, why, "shared tier: damaged row deleted");
                let inner = self.inner.clone();
                let id = UrlKeys::row_id(row_key);
                tokio::spawn(async move {
                    let _ = inner
                        .call(Kind::Free, keys.slot(), move |mut c| async move {
                            redis::pipe()
                                .atomic()
                                .del(&key)
                                .ignore()
                                .srem(&keys.rows, &id)
                                .ignore()
                                .query_async::<()>(&mut c)
                                .await
                        })
                        .await;
                });
                None
            }
        }
    }

    /// Write row `row_key` of `url_key` (meta and body) for `ttl`. Bodies above
    /// `max_object_size` and zero TTLs are not written. A Vary index row is a `put` with an
    /// empty body. `true` when written.
    pub async fn put(
        &self,
        url_key: &str,
        row_key: &[u8],
        meta: &[u8],
        body: &[u8],
        ttl: Duration,
    ) -> bool {
        if body.len() as u64 > self.inner.cfg.max_object_size {
            inc(&self.inner.counters.oversize);
            return false;
        }
        let Some(ms) = ttl_millis(ttl) else {
            return false;
        };
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let row = keys.row(row_key);
        let id = UrlKeys::row_id(row_key);
        let blob = codec::encode(row_key, meta, body, self.inner.seal.as_ref());
        let inner = self.inner.clone();
        let ok = self
            .inner
            .call(Kind::Write, keys.slot(), move |mut c| async move {
                inner
                    .scripts
                    .put
                    .key(&row)
                    .key(&keys.rows)
                    .arg(blob)
                    .arg(ms)
                    .arg(&id)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_ok();
        if ok {
            inc(&self.inner.counters.writes);
        }
        ok
    }

    /// Replace the meta of the existing row `row_key` (a 304 refreshing a head), keeping
    /// its stored body, and set its TTL to `ttl`. `true` when the row was there and was
    /// updated; nothing is written when it is absent (like `Cache::set_meta`).
    pub async fn put_meta(
        &self,
        url_key: &str,
        row_key: &[u8],
        meta: &[u8],
        ttl: Duration,
    ) -> bool {
        let Some(ms) = ttl_millis(ttl) else {
            return false;
        };
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let row = keys.row(row_key);
        let id = UrlKeys::row_id(row_key);
        let header = codec::encode_header(row_key, meta, self.inner.seal.as_ref());
        let rk = row_key.to_vec();
        let inner = self.inner.clone();
        let r = self
            .inner
            .call(Kind::Write, keys.slot(), move |mut c| async move {
                inner
                    .scripts
                    .put_meta
                    .key(&row)
                    .key(&keys.rows)
                    .arg(header)
                    .arg(ms)
                    .arg(&id)
                    .arg(rk)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        let ok = matches!(r, Ok(1));
        if ok {
            inc(&self.inner.counters.writes);
        }
        ok
    }

    /// Try to take the cross-machine fetch lease of `url_key` for `ttl`
    /// (`SET lease token NX PX ttl`).
    pub async fn lease(&self, url_key: &str, ttl: Duration) -> SharedLease {
        let Some(ms) = ttl_millis(ttl) else {
            return SharedLease::Unavailable;
        };
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let token = format!("{}-{:016x}", self.inner.id, fastrand::u64(..));
        let (k, t) = (keys.lease.clone(), token.clone());
        let r = self
            .inner
            .call(Kind::Write, keys.slot(), move |mut c| async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(&t)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match r {
            Ok(Some(_)) => SharedLease::Acquired(SharedLeaseGuard {
                tier: self.clone(),
                keys,
                token,
                done: false,
            }),
            Ok(None) => SharedLease::HeldElsewhere,
            Err(_) => SharedLease::Unavailable,
        }
    }

    /// Wait until nobody holds the lease of `url_key` (its holder finished or gave up), at
    /// most `max`. Woken at once by the holder's `filled` message; otherwise checks the lease
    /// every [`POLL_INTERVAL`]. `true` when the lease is gone (read again now); `false` on
    /// timeout or when Redis is unavailable (fetch yourself).
    pub async fn wait_filled(&self, url_key: &str, max: Duration) -> bool {
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let waiter = Waiter::new(&self.inner, &keys.tag);
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let k = keys.lease.clone();
            let held = self
                .inner
                .call(Kind::Read, keys.slot(), move |mut c| async move {
                    redis::cmd("EXISTS")
                        .arg(&k)
                        .query_async::<bool>(&mut c)
                        .await
                })
                .await;
            match held {
                Ok(false) => return true,
                Ok(true) => {}
                Err(_) => return false,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let pause = POLL_INTERVAL.min(deadline - now);
            // A message (or a lost subscription) sends us back to check the lease: a
            // `filled` arrives after the holder's delete, in the same script.
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Delete every row of `url_key` and publish its invalidation on `{prefix}invalidate`
    /// (other processes receive it from [`SharedTier::invalidations`]). `true` when Redis
    /// did it.
    pub async fn purge(&self, url_key: &str) -> bool {
        self.purge_rows(url_key).await.is_some()
    }

    /// [`SharedTier::purge`], saying how many rows it deleted (`None`: Redis did not).
    pub async fn purge_rows(&self, url_key: &str) -> Option<u64> {
        let keys = UrlKeys::new(&self.inner.cfg.prefix, url_key);
        let mut payload = format!("{} {url_key}", self.inner.id);
        if let Some(seal) = &self.inner.seal {
            payload = seal.sign_message(&payload);
        }
        let inner = self.inner.clone();
        self.inner
            .call(Kind::Free, keys.slot(), move |mut c| async move {
                inner
                    .scripts
                    .purge
                    .key(&keys.rows)
                    .arg(keys.row_prefix())
                    .arg(&inner.invalidate_channel)
                    .arg(payload)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .ok()
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// URL keys that other processes purged or invalidated, as they arrive.
    pub fn invalidations(&self) -> broadcast::Receiver<String> {
        self.inner.invalidations.subscribe()
    }

    /// Breaker states and counters.
    pub fn status(&self) -> SharedStatus {
        let i = &self.inner;
        let c = &i.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedStatus {
            connected: i.conn.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
            subscribed: i.subscribed.load(Ordering::Acquire),
            breaker: i.all.state(),
            breaker_open_ranges: i.all.open_ranges(),
            breaker_ranges: i.all.count(),
            write_breaker: i.writes.state(),
            breaker_opened: i.all.times_opened() + i.writes.times_opened(),
            hits: l(&c.hits),
            misses: l(&c.misses),
            damaged: l(&c.damaged),
            forged: l(&c.forged),
            errors: l(&c.errors),
            timeouts: l(&c.timeouts),
            skipped: l(&c.skipped),
            writes: l(&c.writes),
            oversize: l(&c.oversize),
            invalidations_received: l(&c.invalidations),
            latency_micros_sum: l(&c.latency_sum),
            latency_count: l(&c.latency_count),
            connect_error: i
                .connect_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The URL in use, password redacted.
    pub fn url(&self) -> String {
        self.inner.url.redacted()
    }
}

fn ttl_millis(ttl: Duration) -> Option<u64> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    (ms > 0).then_some(ms)
}
