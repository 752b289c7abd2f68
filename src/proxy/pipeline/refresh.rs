//! Background revalidation (stale-while-revalidate, XFetch), detached from the request that
//! started it: the client has already been answered from the cache.
//!
//! Invariants: one refresh per key at a time across processes (this process's permit, then
//! the directory lease; a lease held elsewhere means that refresh is already running); a
//! refresh is the cache's request, not the triggering client's: it asks with
//! [`http_cache::background_request`] (what selected the stored entry, no other client
//! secret), and storability, the 304 merge and the new entry are judged on that request.

use super::exchange::{Exchange, Exchanged};
use super::*;

impl Ctx<'_> {
    /// Start one background revalidation of a stored entry (stale-while-revalidate, XFetch),
    /// under this process's permit and, across processes, the store lease.
    pub(super) fn spawn_refresh(&self, row_key: Vec<u8>, head: Arc<StoredHead>, permit: Permit) {
        let r = Refresher::new(self, &head);
        let revalidate = http_cache::revalidation_request(&head, &r.lookup);
        self.st
            .background
            .spawn(r.run(row_key, head, revalidate, permit));
    }
}

/// A background revalidation (stale-while-revalidate, XFetch), detached from the request
/// that started it: the client has already been answered from the cache.
pub(super) struct Refresher {
    entries: Entries,
    upstream: Upstream,
    opts: LookupOptions,
    key: CacheKey,
    /// The refresh's own request ([`http_cache::background_request`]), without validators.
    lookup: Parts,
    target: Uri,
    pseudonym: String,
    max_object_size: u64,
    lease_ttl: std::time::Duration,
    body_timeout: Option<std::time::Duration>,
    rule: Option<Rule>,
    body: Option<Bytes>,
}

impl Refresher {
    fn new(ctx: &Ctx<'_>, head: &StoredHead) -> Self {
        if tracing::enabled!(tracing::Level::DEBUG) {
            for name in ctx.lookup.headers.keys() {
                let field = http_cache::refresh_field(head, name);
                if !field.is_sent() {
                    tracing::debug!(target: "hoard::refresh", key = %ctx.key, field = %name, why = field.as_str(), "background refresh leaves out a field of the triggering request");
                }
            }
        }
        Refresher {
            entries: ctx.st.entries.clone(),
            upstream: ctx.st.upstream.clone(),
            opts: ctx.st.lookup_opts.clone(),
            key: ctx.key.clone(),
            lookup: http_cache::background_request(head, &ctx.lookup),
            target: ctx.target.clone(),
            pseudonym: ctx.st.cfg.pseudonym.clone(),
            max_object_size: ctx.st.cfg.max_object_size,
            lease_ttl: ctx.st.cfg.lock_timeout,
            body_timeout: ctx.st.cfg.body_timeout,
            rule: ctx.rule.clone(),
            body: ctx.body.clone(),
        }
    }

    /// This refresh's side of an [`Exchange`].
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            entries: &self.entries,
            upstream: &self.upstream,
            opts: &self.opts,
            key: &self.key,
            lookup: &self.lookup,
            target: &self.target,
            pseudonym: &self.pseudonym,
            rule: self.rule.as_ref(),
            body: self.body.as_ref(),
            max_object_size: self.max_object_size,
            body_timeout: self.body_timeout,
        }
    }

    async fn run(self, row_key: Vec<u8>, head: Arc<StoredHead>, revalidate: Parts, permit: Permit) {
        // Across processes: one refresh per key; if another process holds the lease it is
        // already refreshing, and its result reaches us through the store.
        let lease = match self.entries.lease(&self.key, self.lease_ttl).await {
            LeaseResult::Acquired(l) => l,
            LeaseResult::HeldElsewhere(_) | LeaseResult::Failed => return,
        };
        let x = self.exchange();
        // Nobody is answered here: a 304's per-client fields go nowhere, a 5xx keeps what we
        // have (stale-if-error decides for later requests), a failure is only logged.
        match x.run(&revalidate, Some((&row_key, &head))).await {
            Exchanged::Revalidated(r) => permit.finish(r.outcome),
            Exchanged::Response(answer) => {
                if let Some(plan) = x.admit(&answer.parts, answer.times).plan {
                    // Nobody is answered: no client waits for the commit.
                    let waiters = fill::Waiters {
                        client: None,
                        lease: Some(lease),
                        permit: Some(permit),
                    };
                    x.fill(plan, answer.body, None, waiters).await;
                }
            }
            Exchanged::Unreachable(err, _) => {
                tracing::debug!(key = %self.key, error = %err, "background revalidation failed");
            }
            Exchanged::ServerError(_) | Exchanged::NotMatched => {}
        }
    }
}
