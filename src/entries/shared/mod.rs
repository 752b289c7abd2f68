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
//! connector ([`connect`]: connects, reconnects after a dropped connection, with backoff;
//! the proxy waits for its first attempt, bounded, before accepting) and the
//! subscriber (its own connection; `{prefix}invalidate` and `{prefix}filled`; reconnects).
//! Invalidations published while the subscriber is disconnected are not replayed: the rows'
//! TTLs bound how long another process may keep serving what it copied locally.

pub mod admin;
pub mod breaker;
pub mod codec;
pub mod config;
pub mod connect;
pub mod ranges;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisFuture, Value};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use breaker::Breaker;
pub use breaker::BreakerState;
use codec::{Decoded, UrlKeys};
pub use config::{ClientIdentity, SharedConfig, SharedConfigError, SharedUrl};
use connect::connector;
pub use connect::{Startup, startup_wait};

/// Bound on establishing a connection (requests never wait for it; start-up waits at most
/// [`startup_wait`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: first and largest pause between attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// How often the subscriber pings its connection to notice a silent loss.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);
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

/// A command connection: one server (multiplexed) or a cluster.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Which breakers a call answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads: the general breaker only.
    Read,
    /// Writes that need memory (SET): both breakers; `OOM` feeds the write breaker only.
    Write,
    /// Deletes and publishes (allowed at maxmemory): the general breaker only.
    Free,
}

/// Why a call produced no answer (already counted and logged as needed).
#[derive(Debug)]
enum Failed {
    Skipped,
    Error,
}

const PUT_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"#;

/// Replace the header of an existing row, keeping its body section byte for byte.
const PUT_META_SCRIPT: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local function u32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
if #old < 9 or string.byte(old, 1) ~= 1 then return 0 end
local klen = u32(old, 2)
if #old < 9 + klen then return 0 end
if string.sub(old, 6, 5 + klen) ~= ARGV[4] then return 0 end
local mlen = u32(old, 6 + klen)
local off = 10 + klen + mlen
if #old < off + 15 then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. string.sub(old, off), 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"#;

/// Compare-and-delete of a lease; publishes on `ARGV[2]` always (`ARGV[4]` = "1") or only
/// when the lease was ours and got deleted.
const RELEASE_SCRIPT: &str = r#"
local r = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then r = redis.call('DEL', KEYS[1]) end
if ARGV[4] == '1' or r == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return r
"#;

/// Delete every row of a URL and its rows set, then publish the invalidation.
const PURGE_SCRIPT: &str = r#"
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"#;

struct Scripts {
    put: redis::Script,
    put_meta: redis::Script,
    release: redis::Script,
    purge: redis::Script,
}

struct Inner {
    cfg: SharedConfig,
    url: SharedUrl,
    /// What `rediss://` connections trust.
    roots: tls::Roots,
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
        let cancel = CancellationToken::new();
        let all = ranges::Breakers::new(url.cluster);
        let (tx, _) = broadcast::channel(INVALIDATION_CAPACITY);
        let inner = Arc::new(Inner {
            invalidate_channel: codec::invalidate_channel(&cfg.prefix),
            filled_channel: codec::filled_channel(&cfg.prefix),
            cfg,
            url,
            roots,
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
        match codec::decode(Bytes::from(blob), row_key) {
            Decoded::Row(meta, body) => {
                inc(&c.hits);
                Some(SharedEntry { meta, body })
            }
            Decoded::OtherKey => {
                inc(&c.misses);
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
        let blob = codec::encode(row_key, meta, body);
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
        let header = codec::encode_header(row_key, meta);
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
        let payload = format!("{} {url_key}", self.inner.id);
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

/// A held lease. [`SharedLeaseGuard::finish`] releases it and wakes waiters everywhere;
/// dropping it releases it in a spawned task (waking waiters if it was still ours).
#[derive(Debug)]
pub struct SharedLeaseGuard {
    tier: SharedTier,
    keys: UrlKeys,
    token: String,
    done: bool,
}

impl SharedLeaseGuard {
    /// The fill is stored: release the lease (only if still ours) and publish `filled`, so
    /// waiters in other processes read the entry at once. `true` when the lease was still
    /// ours.
    pub async fn finish(mut self) -> bool {
        self.done = true;
        release(&self.tier.inner, &self.keys, &self.token, true).await
    }

    /// This holder's token (the lease key's value while it is ours).
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for SharedLeaseGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (inner, keys) = (self.tier.inner.clone(), self.keys.clone());
        let token = std::mem::take(&mut self.token);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                release(&inner, &keys, &token, false).await;
            });
        }
        // Without a runtime the lease expires by itself.
    }
}

async fn release(inner: &Arc<Inner>, keys: &UrlKeys, token: &str, always_publish: bool) -> bool {
    let (k, t, tag) = (keys.lease.clone(), token.to_string(), keys.tag.clone());
    let i = inner.clone();
    let r = inner
        .call(Kind::Free, keys.slot(), move |mut c| async move {
            i.scripts
                .release
                .key(&k)
                .arg(&t)
                .arg(&i.filled_channel)
                .arg(&tag)
                .arg(if always_publish { "1" } else { "0" })
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    matches!(r, Ok(1))
}

/// Registration of a `filled` waiter; removes the map entry when the last waiter goes.
struct Waiter<'a> {
    inner: &'a Inner,
    tag: String,
    notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    fn new(inner: &'a Inner, tag: &str) -> Self {
        let mut map = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let notify = map.entry(tag.to_string()).or_default().clone();
        Waiter {
            inner,
            tag: tag.to_string(),
            notify,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference plus ours: we are the last waiter.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.tag);
        }
    }
}

fn is_oom(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

impl Inner {
    fn current(&self) -> Option<(u64, Conn)> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget connection `generation` (if still current) and wake the connector.
    fn drop_conn(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_some_and(|(n, _)| *n == generation) {
            *g = None;
            drop(g);
            tracing::warn!(
                url = %self.url.redacted(),
                error = %why,
                "shared tier: connection to Redis lost; reconnecting (calls are misses meanwhile)"
            );
            self.reconnect.notify_one();
        }
    }

    /// Run one Redis call on keys in hash slot `slot` under the breakers and the timeout.
    async fn call<T, F, Fut>(&self, kind: Kind, slot: u16, f: F) -> Result<T, Failed>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let c = &self.counters;
        if !self.all.for_slot(slot).allow() || (kind == Kind::Write && !self.writes.allow()) {
            inc(&c.skipped);
            return Err(Failed::Skipped);
        }
        let Some((generation, conn)) = self.current() else {
            // Unreachable Redis is a failure too: the breaker (and `status`) shows it, and
            // after a reconnect the next call probes at once.
            inc(&c.skipped);
            self.all.outcome(slot, Some(&"not connected"));
            return Err(Failed::Skipped);
        };
        let start = Instant::now();
        let r = tokio::time::timeout(self.cfg.timeout, f(conn)).await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        c.latency_sum.fetch_add(micros, Ordering::Relaxed);
        inc(&c.latency_count);
        match r {
            Ok(Ok(v)) => {
                self.all.outcome(slot, None);
                if kind == Kind::Write {
                    self.writes.success();
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                inc(&c.errors);
                if kind == Kind::Write && is_oom(&e) {
                    // Redis is up but full: stop writing, keep reading.
                    self.writes.failure(&e);
                    self.all.outcome(slot, None);
                } else if e.is_timeout() {
                    inc(&c.timeouts);
                    self.all.outcome(slot, Some(&e));
                } else {
                    tracing::debug!(error = %e, "shared tier: Redis call failed");
                    self.all.outcome(slot, Some(&e));
                    if !self.url.cluster
                        && (e.is_connection_dropped()
                            || e.is_io_error()
                            || e.is_connection_refusal()
                            || e.is_unrecoverable_error())
                    {
                        self.drop_conn(generation, &e);
                    }
                }
                Err(Failed::Error)
            }
            Err(_) => {
                inc(&c.errors);
                inc(&c.timeouts);
                let why = format!("no answer within {:?}", self.cfg.timeout);
                self.all.outcome(slot, Some(&why));
                // A connection that keeps timing out while the breaker is open may be
                // half-dead (no RST ever came): replace it.
                if self.all.state() == BreakerState::Open && !self.url.cluster {
                    self.drop_conn(generation, &why);
                }
                Err(Failed::Error)
            }
        }
    }
}

/// Keeps the `invalidate`/`filled` subscription up on its own connection. On a cluster it
/// subscribes through one node (rotating through the listed nodes when one fails):
/// cluster PUBLISH reaches every node.
async fn subscriber(inner: Arc<Inner>) {
    let urls = inner.url.node_urls();
    let mut next = 0usize;
    let mut pause = RECONNECT_MIN;
    let mut lost_logged = false;
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        let url = &urls[next % urls.len()];
        next = next.wrapping_add(1);
        let attempt = async {
            let client = tls::client(url, &inner.roots)?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[&inner.invalidate_channel, &inner.filled_channel])
                .await?;
            Ok::<_, RedisError>(ps)
        };
        let ps = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => r,
        };
        if let Ok(Ok(ps)) = ps {
            inner.subscribed.store(true, Ordering::Release);
            if lost_logged {
                tracing::info!("shared tier: invalidation subscription restored");
                lost_logged = false;
            }
            pause = RECONNECT_MIN;
            let (mut sink, mut stream) = ps.split();
            let mut ping = tokio::time::interval(SUBSCRIBER_PING);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    m = stream.next() => match m {
                        Some(m) => on_message(&inner, &m),
                        None => break,
                    },
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(
                            CONNECT_TIMEOUT, sink.ping::<Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            inner.subscribed.store(false, Ordering::Release);
            // Waiters fall back to polling; wake them so they check the lease at once.
            for n in inner
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                n.notify_waiters();
            }
        }
        if !lost_logged {
            tracing::warn!(
                url = %inner.url.redacted(),
                "shared tier: no invalidation subscription (Redis unreachable); retrying"
            );
            lost_logged = true;
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

fn on_message(inner: &Inner, m: &redis::Msg) {
    let channel = m.get_channel_name();
    let Ok(payload) = m.get_payload::<String>() else {
        return;
    };
    if channel == inner.filled_channel {
        let map = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(&payload) {
            n.notify_waiters();
        }
    } else if channel == inner.invalidate_channel {
        let Some((id, url_key)) = payload.split_once(' ') else {
            return;
        };
        if id == inner.id {
            return;
        }
        inc(&inner.counters.invalidations);
        let _ = inner.invalidations.send(url_key.to_string());
    }
}
