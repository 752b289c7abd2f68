//! The one owner of "HTTP responses kept in a store": row keys and the Vary index, encoded
//! heads, bodies and their verification, the in-memory front, tags, invalidation generations,
//! purge and the cross-process fetch lease. The request pipeline asks it for entries and hands
//! it what to keep; it never sees a row, a meta blob or a value file.
//!
//! Layout of a URL in the store (the format this module alone reads and writes):
//! - the URL key `GET <normalised absolute URL>` holds either a full entry (meta = versioned
//!   [`HeadRecord::Variant`], value = body) or, for responses with `Vary`, a Vary index (meta =
//!   [`HeadRecord::VaryIndex`], no value) and one row per variant under
//!   [`http_cache::variant_key`];
//! - every row of one URL carries the URL key as its tag, so purge is one `evict(tag)`;
//! - leases live under `hoard-lease\0<URL key>` ([`lease`]);
//! - stored pieces of 206 responses live under `hoard-partial\0<URL key>` ([`partial`]).
//!
//! Invariants: a body is served only when its length matches its head and its xxh3-64 digest
//! matches (a damaged row is deleted and is a miss); blocking store work runs on blocking
//! threads; every write of this process also drops the row's copy in the in-memory front.

pub mod commits;
pub mod health;
pub mod hot;
pub mod lease;
pub mod listing;
mod load;
pub mod partial;
pub mod presence;
pub mod shared;
mod tiered;
pub mod variants;
mod write;

use std::sync::Arc;

use bytes::Bytes;

use crate::http_cache::{CacheKey, HeadRecord, StoredHead};
use crate::store::{Cache, Record};
use health::StoreHealth;
use hot::HotCache;
pub use lease::{Holder, Lease, LeaseResult};
pub use load::Verified;
pub use tiered::shared_ttl;
pub use write::{EntryWriter, FillPlan};

/// What the store holds for a request.
#[derive(Debug)]
pub enum Loaded {
    /// Nothing under the URL key.
    Miss,
    /// The URL is known to vary, and this request's variant is absent.
    VaryMiss,
    /// A stored variant: its row key, decoded head, and its body.
    Found {
        /// Key of the row (the URL key, or a variant key).
        row_key: Vec<u8>,
        /// The decoded head.
        head: Arc<StoredHead>,
        /// The body, verified (in memory) or verified once per process (file).
        body: StoredBody,
        /// Where it was found.
        tier: Tier,
    },
}

/// Where an entry was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// This process's in-memory front.
    Memory,
    /// The local disk store.
    Disk,
    /// The shared tier (Redis), copied into the local store on the way.
    Shared,
}

/// A stored body: in memory (small, or from the hot front) or an open store record.
#[derive(Debug)]
pub enum StoredBody {
    /// The whole body, checked against its digest.
    Mem(Bytes),
    /// An open record (a value file streams from it) and its row key, to drop the row if the
    /// body proves damaged while streaming.
    Rec(Record, Vec<u8>),
}

impl StoredBody {
    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            StoredBody::Mem(b) => b.len() as u64,
            StoredBody::Rec(r, _) => r.len(),
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Remembers when URL keys were last invalidated (RFC 9111 4.4, purge), so a fill that began
/// before an invalidation never commits after it: the client that sent the invalidating
/// request must not see the old response again.
#[derive(Debug, Default)]
pub struct Invalidations {
    inner: std::sync::Mutex<(u64, std::collections::HashMap<String, u64>)>,
}

impl Invalidations {
    /// The current generation (take it when a fetch starts).
    pub fn generation(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Record an invalidation of the URL key `tag`.
    pub fn mark(&self, tag: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let now = g.0;
        if g.1.len() >= 100_000 {
            // Fills last seconds, not thousands of invalidations: forget the oldest half.
            g.1.retain(|_, v| *v + 50_000 > now);
        }
        g.1.insert(tag.to_string(), now);
    }

    /// Was `tag` invalidated after generation `since`?
    pub fn since(&self, tag: &str, since: u64) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.get(tag).is_some_and(|v| *v > since)
    }
}

/// HTTP entries in the local tier: the in-memory front over the SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Entries {
    /// The disk store.
    pub store: Cache,
    /// The in-memory front.
    pub hot: Arc<HotCache>,
    /// When URLs were last invalidated.
    pub inv: Arc<Invalidations>,
    /// Whether the store accepts writes.
    pub health: Arc<StoreHealth>,
    /// Value files already checked against their digests.
    verified: Arc<Verified>,
    /// Fills waiting to commit (group commit).
    commits: Arc<commits::Commits<Option<write::Committed>>>,
    /// The shared tier behind the local one, when configured.
    shared: Option<Arc<tiered::Shared>>,
    /// Partial entries being read or combined in memory at once (each up to
    /// [`partial::MAX_PARTIAL_LEN`]); taken with `try_acquire`, never waited for.
    partial_budget: Arc<tokio::sync::Semaphore>,
    /// This process's membership of the directory's serving processes (`None`: unknown, so
    /// the directory lease is always taken).
    presence: Option<Arc<presence::Presence>>,
}

impl Entries {
    /// Entries over `store` with an in-memory front of `hot`.
    pub fn new(store: Cache, hot: HotCache) -> Self {
        Entries {
            store,
            hot: Arc::new(hot),
            inv: Arc::new(Invalidations::default()),
            health: Arc::new(StoreHealth::default()),
            verified: Arc::new(Verified::default()),
            commits: Arc::default(),
            partial_budget: Arc::new(tokio::sync::Semaphore::new(partial::AT_ONCE)),
            shared: None,
            presence: None,
        }
    }

    /// The entry for `key` and a request with `headers` (Vary): from the in-memory front when
    /// it holds the rows under their current change stamps, else from the store.
    pub async fn load(&self, key: &CacheKey, headers: &http::HeaderMap) -> Loaded {
        match self.load_hot(key, headers) {
            Some(l) => l,
            None => self.load_cold(key, headers).await,
        }
    }

    /// [`load`](Entries::load) past the memory front: the store, then the shared tier.
    pub async fn load_cold(&self, key: &CacheKey, headers: &http::HeaderMap) -> Loaded {
        match self.load_store(key, headers).await {
            l @ Loaded::Found { .. } => l,
            // Boxed: the shared tier's read is a large future that a local hit never needs.
            local if self.shared.is_some() => {
                match Box::pin(self.load_shared(key, headers)).await {
                    found @ Loaded::Found { .. } => found,
                    _ => local,
                }
            }
            local => local,
        }
    }

    /// The change stamp of `key`'s URL row ([`Cache::change_stamp`]): equal samples mean no
    /// process wrote that row in between (a fill, a refresh, a purge all do). `None` when
    /// the store cannot tell.
    pub fn change_stamp(&self, key: &CacheKey) -> Option<crate::store::ChangeStamp> {
        self.store.change_stamp(key.as_bytes())
    }

    /// Replace the head of the row `row_key` after a 304 (RFC 9111 4.3.4), leaving its body
    /// alone, and drop the row's copy in the in-memory front. `true` when the row was still
    /// there and was updated.
    pub async fn refresh_head(&self, key: &CacheKey, row_key: &[u8], head: StoredHead) -> bool {
        self.share_head(key.as_str(), row_key, &head).await;
        let meta = HeadRecord::Variant(head).encode();
        let (store, hot, key) = (self.store.clone(), self.hot.clone(), row_key.to_vec());
        let res = tokio::task::spawn_blocking(move || {
            let r = store.set_meta(&key, &meta, None);
            hot.remove(&key);
            r
        })
        .await;
        match res {
            Ok(Ok(updated)) => updated,
            Ok(Err(e)) => {
                self.health.write_failed(&e);
                false
            }
            Err(_) => false,
        }
    }

    /// Remove one row (a variant whose response may no longer be shared) and its copy in the
    /// in-memory front; the shared tier drops every copy of the URL (and tells the others).
    pub async fn remove_row(&self, key: &CacheKey, row_key: &[u8]) {
        self.unshare(key.as_str()).await;
        let (store, hot, key) = (self.store.clone(), self.hot.clone(), row_key.to_vec());
        let res = tokio::task::spawn_blocking(move || {
            let r = store.delete(&key);
            hot.remove(&key);
            r
        })
        .await;
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "removing a stored entry failed"),
            Err(e) => tracing::warn!(error = %e, "removing a stored entry: task failed"),
        }
    }

    /// Remove every stored variant of these URL keys (RFC 9111 4.4 invalidation, purge): fills
    /// that started earlier will not commit, the in-memory front forgets them. Returns how many
    /// rows were removed.
    pub async fn purge(&self, keys: Vec<CacheKey>) -> u64 {
        for k in &keys {
            self.inv.mark(k.as_str());
            self.hot.remove_prefix(k.as_bytes());
            self.unshare(k.as_str()).await;
        }
        let store = self.store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for k in &keys {
                n += store.evict(k.as_str())?;
            }
            Ok::<u64, crate::store::Error>(n)
        })
        .await;
        match res {
            Ok(Ok(n)) => {
                tracing::debug!(removed = n, "invalidated");
                n
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "invalidation failed");
                0
            }
            Err(e) => {
                tracing::warn!(error = %e, "invalidation task failed");
                0
            }
        }
    }

    /// Join the processes serving from the store's directory ([`presence`]): while no other
    /// process serves from it, [`lease`](Entries::lease) skips the directory lease.
    pub fn with_presence(mut self) -> Self {
        match presence::Presence::join(self.store.directory()) {
            Ok(p) => self.presence = Some(Arc::new(p)),
            Err(e) => tracing::debug!(error = %e, "presence file unavailable; leases always taken"),
        }
        self
    }

    /// Take the cross-process fetch lease of `key` for `ttl`: the directory lease, unless no
    /// other process serves from this directory (then nobody could wait on it).
    /// With a shared tier, the lease is also taken there (a third level after the in-process
    /// coalescer and this directory's lease): one machine fetches a URL at a time.
    pub async fn lease(&self, key: &CacheKey, ttl: std::time::Duration) -> LeaseResult {
        let local = if self.presence.as_ref().is_some_and(|p| p.alone()) {
            LeaseResult::Acquired(Lease {
                lock: None,
                shared: None,
            })
        } else {
            Lease::acquire(&self.store, key, ttl).await
        };
        let Some(shared) = &self.shared else {
            return local;
        };
        let mut lease = match local {
            LeaseResult::Acquired(l) => Some(l),
            LeaseResult::HeldElsewhere(h) => return LeaseResult::HeldElsewhere(h),
            LeaseResult::Failed => None,
        };
        match shared.tier.lease(key.as_str(), ttl).await {
            shared::SharedLease::Acquired(g) => match lease.as_mut() {
                Some(l) => l.shared = Some(Box::new(g)),
                None => {
                    return LeaseResult::Acquired(Lease {
                        lock: None,
                        shared: Some(Box::new(g)),
                    });
                }
            },
            shared::SharedLease::HeldElsewhere => {
                return LeaseResult::HeldElsewhere(Holder::Shared);
            }
            shared::SharedLease::Unavailable => {}
        }
        match lease {
            Some(l) => LeaseResult::Acquired(l),
            None => LeaseResult::Failed,
        }
    }

    /// Wait (at most `max`) until the machine holding the shared lease of `key` finished or
    /// gave up; then read again.
    pub async fn wait_shared_fill(&self, key: &CacheKey, max: std::time::Duration) {
        if let Some(shared) = &self.shared {
            shared.tier.wait_filled(key.as_str(), max).await;
        }
    }

    /// Does any process hold the fetch lease of `key`?
    pub async fn lease_held(&self, key: &CacheKey) -> bool {
        Lease::held(&self.store, key).await
    }
}
