//! The shared tier behind the local one: a local miss asks Redis before the origin and copies
//! what it finds into the local store; a committed fill, a 304 refresh, a removal and a purge
//! reach Redis too; purges other machines publish drop this machine's copies.
//!
//! Invariants: the shared tier only ever makes a request faster or changes nothing (every call
//! is bounded by `shared-timeout` and a failure is a miss, see [`SharedTier`]); a shared copy
//! is served only when its head decodes and its body matches the head's length and digest; its
//! Redis TTL is the time any client could still use it (see [`shared_ttl`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;

use super::shared::SharedTier;
use super::{Entries, Loaded, StoredBody, Tier};
use crate::http_cache::{self, CacheKey, Freshness5861, HeadRecord, LookupOptions, StoredHead};

/// Longest a shared copy with validators outlives its freshness (it can still be revalidated
/// with a 304 instead of fetched again).
const REVALIDATION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How long a shared copy of `head` is worth keeping, from `now`: its remaining freshness,
/// plus the longest stale window it may be served in (`stale-while-revalidate`,
/// `stale-if-error`, or the configured defaults), plus, when it has a validator, as long again
/// as its lifetime (at most a day) for revalidation. At least one second.
pub fn shared_ttl(head: &StoredHead, opts: &LookupOptions, now: SystemTime) -> Duration {
    let fresh = head.ttl(now, opts);
    let windows = Freshness5861::from_response(&head.response_headers);
    let stale = [
        windows.stale_while_revalidate,
        windows.stale_if_error,
        opts.default_stale_while_revalidate,
        opts.default_stale_if_error,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or_default();
    let revalidate = if head.etag().is_some() || head.last_modified().is_some() {
        head.freshness_lifetime(opts)
            .clamp(Duration::from_secs(60), REVALIDATION_GRACE)
    } else {
        Duration::ZERO
    };
    (fresh + stale + revalidate).max(Duration::from_secs(1))
}

/// The shared tier as the entries use it: the tier and the freshness options its TTLs need.
#[derive(Debug, Clone)]
pub struct Shared {
    pub(super) tier: SharedTier,
    pub(super) opts: LookupOptions,
    /// Bodies above this stay local.
    pub(super) max_object_size: u64,
}

impl Entries {
    /// Put `tier` behind the local tier; purges published by other machines drop this
    /// machine's copies from now on (a background task, for as long as the tier lives).
    pub fn with_shared(
        mut self,
        tier: SharedTier,
        opts: LookupOptions,
        max_object_size: u64,
    ) -> Self {
        let mut inv = tier.invalidations();
        let local = self.clone();
        tokio::spawn(async move {
            loop {
                match inv.recv().await {
                    Ok(url_key) => local.drop_local(&url_key).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "shared tier: invalidations dropped (lagging)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.shared = Some(Arc::new(Shared {
            tier,
            opts,
            max_object_size,
        }));
        self
    }

    /// The shared tier, when configured.
    pub fn shared_tier(&self) -> Option<&SharedTier> {
        self.shared.as_ref().map(|s| &s.tier)
    }

    /// Drop this machine's copies of the URL key `url_key` (a purge elsewhere).
    async fn drop_local(&self, url_key: &str) {
        self.inv.mark(url_key);
        self.hot.remove_prefix(url_key.as_bytes());
        let (store, tag) = (self.store.clone(), url_key.to_string());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.evict(&tag)).await {
            tracing::warn!(error = %e, "shared tier: dropping an invalidated local copy failed");
        }
    }

    /// The shared half of [`load`](Entries::load): the URL row (a full entry or a Vary index),
    /// then the request's variant; a copy that is found and verified is stored locally too.
    pub(super) async fn load_shared(&self, key: &CacheKey, headers: &HeaderMap) -> Loaded {
        let Some(shared) = &self.shared else {
            return Loaded::Miss;
        };
        let url = key.as_str();
        let Some(first) = shared.tier.get(url, key.as_bytes()).await else {
            return Loaded::Miss;
        };
        let (row_key, head, body, index) = match HeadRecord::decode(&first.meta) {
            Ok(HeadRecord::Variant(head)) => (key.as_bytes().to_vec(), head, first.body, None),
            Ok(HeadRecord::VaryIndex(vary)) => {
                let vkey = http_cache::variant_key(key, vary.names(), headers);
                let Some(v) = shared.tier.get(url, &vkey).await else {
                    return Loaded::VaryMiss;
                };
                match HeadRecord::decode(&v.meta) {
                    Ok(HeadRecord::Variant(head)) => (vkey, head, v.body, Some(first.meta)),
                    _ => return Loaded::VaryMiss,
                }
            }
            Err(_) => return Loaded::Miss,
        };
        if body.len() as u64 != head.body_len
            || xxhash_rust::xxh3::xxh3_64(&body) != head.body_digest
        {
            tracing::warn!(key = %key, "shared copy does not match its head: ignored");
            return Loaded::Miss;
        }
        let head = Arc::new(head);
        self.keep_locally(key, &row_key, &head, body.clone(), index)
            .await;
        Loaded::Found {
            row_key,
            head,
            body: StoredBody::Mem(body),
            tier: Tier::Shared,
        }
    }

    /// Copy a shared entry (and the URL's Vary index) into the local store, unless the store
    /// refuses writes or the URL was invalidated meanwhile.
    async fn keep_locally(
        &self,
        key: &CacheKey,
        row_key: &[u8],
        head: &StoredHead,
        body: Bytes,
        index: Option<Vec<u8>>,
    ) {
        if !self.health.may_store() {
            return;
        }
        let generation = self.inv.generation();
        let (store, hot, inv) = (self.store.clone(), self.hot.clone(), self.inv.clone());
        let (tag, row_key) = (key.as_str().to_string(), row_key.to_vec());
        let meta = HeadRecord::Variant(head.clone()).encode();
        let res = tokio::task::spawn_blocking(move || -> crate::store::Result<()> {
            use std::io::Write;
            if inv.since(&tag, generation) {
                return Ok(());
            }
            let mut w = store.writer(&row_key, None, Some(&tag))?;
            w.write_all(&body)?;
            w.set_meta(meta);
            w.commit()?;
            hot.remove(&row_key);
            if let Some(index) = index {
                let mut iw = store.writer(tag.as_bytes(), None, Some(&tag))?;
                iw.set_meta(index);
                iw.commit()?;
                hot.remove(tag.as_bytes());
            }
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => self.health.write_ok(),
            Ok(Err(e)) => self.health.write_failed(&e),
            Err(e) => tracing::warn!(error = %e, "copying a shared entry locally: task failed"),
        }
    }

    /// After a local commit: the same entry (and the URL's Vary index) to the shared tier.
    pub(super) async fn share(
        &self,
        url_key: &str,
        row_key: &[u8],
        head: &StoredHead,
        body: &[u8],
        index: Option<Vec<u8>>,
    ) {
        let Some(shared) = &self.shared else {
            return;
        };
        if body.len() as u64 > shared.max_object_size {
            return;
        }
        let ttl = shared_ttl(head, &shared.opts, SystemTime::now());
        let meta = HeadRecord::Variant(head.clone()).encode();
        shared.tier.put(url_key, row_key, &meta, body, ttl).await;
        if let Some(index) = index {
            shared
                .tier
                .put(url_key, url_key.as_bytes(), &index, &[], ttl)
                .await;
        }
    }

    /// After a local 304 refresh: the new head to the shared copy (its body stays).
    pub(super) async fn share_head(&self, url_key: &str, row_key: &[u8], head: &StoredHead) {
        let Some(shared) = &self.shared else {
            return;
        };
        let ttl = shared_ttl(head, &shared.opts, SystemTime::now());
        let meta = HeadRecord::Variant(head.clone()).encode();
        shared.tier.put_meta(url_key, row_key, &meta, ttl).await;
    }

    /// Remove every shared copy of `url_key` and tell the other machines.
    pub(super) async fn unshare(&self, url_key: &str) {
        if let Some(shared) = &self.shared {
            shared.tier.purge(url_key).await;
        }
    }
}
