//! Cross-process fetch lease: one hoard process at a time fetches a given key when several
//! share a cache directory. The lease is a store row added only if absent (the store's atomic
//! `add`), with an expiry so a crashed holder never blocks the others for long.
//!
//! Invariant: a lease is released (its row deleted) when dropped, after the entry it guarded
//! was committed, so a process polling the store sees the entry before the lease disappears;
//! it is the store's token-checked [`Lock`], so only its holder ever releases it.

use std::time::Duration;

use crate::http_cache::CacheKey;
use crate::store::{Cache, Lock};

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
    /// Another process holds it: on this directory, or (shared tier) on another machine.
    HeldElsewhere(Holder),
    /// The store failed; proceed without cross-process coalescing.
    Failed,
}

/// Where the lease another process holds lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A process on this cache directory: its entry appears in the store.
    Local,
    /// A process on another machine: its entry appears in the shared tier.
    Shared,
}

/// A held lease: the store's token-checked [`Lock`]; dropping it releases the lock only while
/// this holder's token is still the one stored, so a fill that outlived `lock_timeout` never
/// deletes the lease another process took after it expired.
#[derive(Debug)]
pub struct Lease {
    pub(super) lock: Option<Lock>,
    /// The shared tier's lease (a third level, across machines), released on drop.
    pub(super) shared: Option<Box<super::shared::SharedLeaseGuard>>,
}

impl Lease {
    /// Try to take the lease for `key`, valid for `ttl`.
    pub async fn acquire(store: &Cache, key: &CacheKey, ttl: Duration) -> LeaseResult {
        let lock = Lock::new(store, &lease_key(key), ttl);
        let res = tokio::task::spawn_blocking(move || {
            let got = lock.try_acquire();
            (lock, got)
        })
        .await;
        match res {
            Ok((lock, Ok(true))) => LeaseResult::Acquired(Lease {
                lock: Some(lock),
                shared: None,
            }),
            Ok((_, Ok(false))) => LeaseResult::HeldElsewhere(Holder::Local),
            Ok((_, Err(e))) => {
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
        let Some(lock) = self.lock.take() else {
            return;
        };
        let release = move || {
            if let Err(e) = lock.release() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_cache::cache_key;

    /// Issue 13: the lease was deleted unconditionally, so a fill that outlived its lease
    /// deleted the lease another process had taken since.
    #[tokio::test]
    async fn an_expired_holder_never_releases_the_next_holders_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = Cache::open(dir.path()).unwrap();
        let key = cache_key(&http::Method::GET, &"http://a.test/x".parse().unwrap()).unwrap();
        let LeaseResult::Acquired(old) =
            Lease::acquire(&store, &key, Duration::from_millis(50)).await
        else {
            panic!("first lease");
        };
        tokio::time::sleep(Duration::from_millis(120)).await;
        let LeaseResult::Acquired(new) =
            Lease::acquire(&store, &key, Duration::from_secs(60)).await
        else {
            panic!("the expired lease was not free");
        };
        // The old holder finishes late; its release runs on a blocking thread.
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .unwrap();
        assert!(
            Lease::held(&store, &key).await,
            "the new holder lost its lease"
        );
        drop(new);
        for _ in 0..100 {
            if !Lease::held(&store, &key).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the holder's own release did not free the lease");
    }
}
