//! Background revalidation (stale-while-revalidate, XFetch), detached from the request that
//! started it: the client has already been answered from the cache.
//!
//! Invariant: one refresh per key at a time across processes (this process's permit, then
//! the directory lease; a lease held elsewhere means that refresh is already running).

use super::*;

impl Ctx<'_> {
    /// Start one background revalidation of a stored entry (stale-while-revalidate, XFetch),
    /// under this process's permit and, across processes, the store lease.
    pub(super) fn spawn_refresh(
        &self,
        row_key: Vec<u8>,
        head: Arc<StoredHead>,
        revalidate: Parts,
        permit: Permit,
    ) {
        let r = Refresher::new(self);
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
    fn new(ctx: &Ctx<'_>) -> Self {
        Refresher {
            entries: ctx.st.entries.clone(),
            upstream: ctx.st.upstream.clone(),
            opts: ctx.st.lookup_opts.clone(),
            key: ctx.key.clone(),
            lookup: ctx.lookup.clone(),
            target: ctx.target.clone(),
            pseudonym: ctx.st.cfg.pseudonym.clone(),
            max_object_size: ctx.st.cfg.max_object_size,
            lease_ttl: ctx.st.cfg.lock_timeout,
            body_timeout: ctx.st.cfg.body_timeout,
            rule: ctx.rule.clone(),
            body: ctx.body.clone(),
        }
    }

    async fn run(self, row_key: Vec<u8>, head: Arc<StoredHead>, revalidate: Parts, permit: Permit) {
        // Across processes: one refresh per key; if another process holds the lease it is
        // already refreshing, and its result reaches us through the store.
        let lease = match self.entries.lease(&self.key, self.lease_ttl).await {
            LeaseResult::Acquired(l) => l,
            LeaseResult::HeldElsewhere(_) | LeaseResult::Failed => return,
        };
        let req = crate::proxy::service::build_upstream_request(
            &revalidate,
            &self.target,
            &self.pseudonym,
            match &self.body {
                Some(b) => ProxyBody::full(b.clone()),
                None => ProxyBody::Empty,
            },
        );
        let t_req = SystemTime::now();
        let started = Instant::now();
        let res = match self.upstream.send(req).await {
            Ok(r) => r,
            Err(err) => {
                tracing::debug!(key = %self.key, error = %err, "background revalidation failed");
                return;
            }
        };
        let t_res = SystemTime::now();
        let delta = started.elapsed();
        let (rparts, rbody) = res.into_parts();
        if rparts.status == StatusCode::NOT_MODIFIED {
            // Nobody is answered here: the 304's per-client fields go nowhere.
            match merge_304(
                self.rule.as_ref(),
                &self.lookup,
                &head,
                &rparts,
                (t_req, t_res, delta),
                &self.opts,
            ) {
                Merged304::Store(r) => {
                    if self.entries.refresh_head(&self.key, &row_key, r.head).await {
                        permit.finish(Outcome::Stored);
                    }
                }
                Merged304::Remove(..) => {
                    self.entries.remove_row(&self.key, &row_key).await;
                    permit.finish(Outcome::Uncacheable);
                }
                Merged304::ClientOnly(..) | Merged304::NoMatch => {}
            }
            drop(lease);
            return;
        }
        if rparts.status.is_server_error() {
            // Keep what we have; stale-if-error decides for later requests.
            return;
        }
        if http_cache::storability_under(self.rule.as_ref(), &self.lookup, &rparts, &self.opts)
            .is_ok()
            && self.entries.health.may_store()
            && let Some(plan) = FillPlan::new(
                &self.entries,
                &self.key,
                &self.lookup,
                &rparts,
                t_req,
                t_res,
                delta,
                self.max_object_size,
            )
            .map(|p| p.with_rule(self.rule.as_ref()))
        {
            let timeout = self.upstream.response_timeout();
            let total = self.body_timeout;
            fill::run(plan, rbody, None, Some(permit), Some(lease), timeout, total).await;
        }
    }
}
