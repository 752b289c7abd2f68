//! Cross-process fetch lease: one hoard process at a time fetches a given key when several
//! share a cache directory. The lease is a store row added only if absent (the store's atomic
//! `add`), with an expiry so a crashed holder never blocks the others for long.
//!
//! Invariant: a lease is released (its row deleted) when dropped, after the entry it guarded
//! was committed, so a process polling the store sees the entry before the lease disappears.

use std::time::Duration;

use crate::http_cache::CacheKey;
use crate::store::Cache;

const PREFIX: &[u8] = b"hoard-lease\0";

fn lease_key(key: &CacheKey) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// Outcome of trying to take a lease.
#[derive(Debug)]
pub enum LeaseResult {
    /// Ours until dropped (or until it expires).
    Acquired(Lease),
    /// Another process holds it.
    HeldElsewhere,
    /// The store failed; proceed without cross-process coalescing.
    Failed,
}

/// A held lease; dropping it deletes the row.
#[derive(Debug)]
pub struct Lease {
    store: Cache,
    key: Vec<u8>,
}

impl Lease {
    /// Try to take the lease for `key`, valid for `ttl`.
    pub async fn acquire(store: &Cache, key: &CacheKey, ttl: Duration) -> LeaseResult {
        let store = store.clone();
        let k = lease_key(key);
        let pid = std::process::id().to_le_bytes();
        let res = tokio::task::spawn_blocking(move || {
            let got = store.add(&k, &pid, Some(ttl), None);
            (store, k, got)
        })
        .await;
        match res {
            Ok((store, key, Ok(true))) => LeaseResult::Acquired(Lease { store, key }),
            Ok((_, _, Ok(false))) => LeaseResult::HeldElsewhere,
            Ok((_, _, Err(e))) => {
                tracing::debug!(error = %e, "lease: store error");
                LeaseResult::Failed
            }
            Err(_) => LeaseResult::Failed,
        }
    }

    /// Is a live lease for `key` held (by anyone)?
    pub async fn held(store: &Cache, key: &CacheKey) -> bool {
        let store = store.clone();
        let k = lease_key(key);
        tokio::task::spawn_blocking(move || store.contains(&k).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let release = move || {
            if let Err(e) = store.delete(&key) {
                tracing::debug!(error = %e, "lease: release failed (it will expire)");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(release);
            }
            Err(_) => release(),
        }
    }
}
