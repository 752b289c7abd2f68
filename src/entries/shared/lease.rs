//! The cross-machine fetch lease once held ([`SharedLeaseGuard`]: released by its holder
//! only, compare-and-delete) and the registrations of `filled` waiters.
//!
//! Invariant: a lease is released at most once, and only while its token is still the lease
//! key's value; a guard dropped without `finish` releases it in a spawned task (or lets it
//! expire when no runtime is left).

use std::sync::Arc;

use tokio::sync::Notify;

use super::codec::UrlKeys;
use super::connection::Kind;
use super::{Inner, SharedTier};

/// A held lease. [`SharedLeaseGuard::finish`] releases it and wakes waiters everywhere;
/// dropping it releases it in a spawned task (waking waiters if it was still ours).
#[derive(Debug)]
pub struct SharedLeaseGuard {
    pub(super) tier: SharedTier,
    pub(super) keys: UrlKeys,
    pub(super) token: String,
    pub(super) done: bool,
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
pub(super) struct Waiter<'a> {
    inner: &'a Inner,
    tag: String,
    pub(super) notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    pub(super) fn new(inner: &'a Inner, tag: &str) -> Self {
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
