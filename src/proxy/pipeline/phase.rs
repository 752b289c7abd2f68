//! The request state machine of a cached GET/HEAD (after pingora-cache's `CachePhase`):
//! `Lookup -> Fresh | Stale | Miss`, `Stale -> Miss` (to revalidate), `Miss -> Lead |
//! AwaitFill | Lookup | Fetch | Revalidate`, `Lead -> Fetch | Revalidate`, `AwaitFill ->
//! Lookup | Fetch | Revalidate`, and every phase may end in `Done`.
//!
//! Invariant: each transition is a value returned by one small function; the only ways back
//! are `AwaitFill -> Lookup` and `Miss -> Lookup` (a lookup outdated by a commit), together
//! taken at most [`MAX_LOOKUPS`] times, so a request always ends.

use std::time::Duration;

use super::*;
use crate::coalesce::Waiter;
use crate::http_cache::Fwd;
use crate::store::ChangeStamp;

/// Reads of the store one request makes before it goes to the origin by itself. A waiter
/// woken by a leader that stored its entry (or gave up) reads again; a key whose leaders keep
/// abandoning (a flapping origin, a store refusing writes) must not hold this request in a
/// loop: after this many reads it fetches without waiting on anyone.
const MAX_LOOKUPS: usize = 4;

/// A fresh stored entry found by the lookup.
struct Hit {
    row_key: Vec<u8>,
    head: Arc<StoredHead>,
    rec: StoredBody,
    tier: Tier,
    /// The response headers to serve (with `Age`).
    headers: HeaderMap,
    /// Freshness left.
    ttl: Duration,
    now: SystemTime,
}

/// A stale stored entry found by the lookup, with what RFC 9111/5861 allow for it.
struct Stale {
    entry: StaleEntry,
    /// The conditional request that revalidates it.
    revalidate: Parts,
    serve_stale_while_revalidate: bool,
    now: SystemTime,
    /// The key's change stamp sampled before the lookup read the store.
    seen: Option<ChangeStamp>,
}

/// A request going forward: the stale entry to revalidate (with its conditional request),
/// if any, and the `Cache-Status` saying why it went forward.
pub(super) struct Forward {
    /// Boxed: a phase that carries it stays a few words (a miss has none).
    stale: Option<Box<(StaleEntry, Parts)>>,
    fwd: CacheStatus,
    /// What the lookup found stored for the key: while its change stamp is unchanged, nobody
    /// (in any process on this directory) has written the key since, and the leader need not
    /// read it again.
    before: Before,
}

impl Forward {
    /// A second read found rows the lookup did not (a fill committed in between): a
    /// `uri-miss` is no longer true. The other variant stored makes this request a
    /// `vary-miss`; an entry it may not be served a plain `miss`.
    fn found(&mut self, loaded: &Loaded) {
        if self.fwd.fwd != Some(Fwd::UriMiss) {
            return;
        }
        self.fwd.fwd = match loaded {
            Loaded::Miss => return,
            Loaded::VaryMiss => Some(Fwd::VaryMiss),
            Loaded::Found { .. } => Some(Fwd::Miss),
        };
        self.before.stored = true;
    }
}

/// What a lookup knew of the key's stored rows: whether a response fetched now replaces one
/// ([`Before::replaced`]), so that its client gets the end of it only after its commit
/// (`fill::after_commit`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Before {
    /// A row was found: the key's response or variant, or its Vary index.
    stored: bool,
    /// The key's change stamp sampled before the lookup read the store.
    seen: Option<ChangeStamp>,
}

impl Before {
    /// The key held a stored row (or this request cannot tell what it holds).
    pub(super) const STORED: Before = Before {
        stored: true,
        seen: None,
    };

    /// Whether a response fetched now replaces a stored one: the lookup found one, or the key
    /// was written since (another process's fill: its change stamp moved). A first miss with
    /// the stamp unchanged replaces nothing: nobody can be served older content meanwhile.
    pub(super) fn replaced(&self, entries: &Entries, key: &CacheKey) -> bool {
        self.stored || self.written_since(entries, key)
    }

    /// Whether some process wrote the key after the lookup sampled its stamp (`false` when
    /// the store cannot tell).
    fn written_since(&self, entries: &Entries, key: &CacheKey) -> bool {
        self.seen
            .is_some_and(|s| entries.change_stamp(key) != Some(s))
    }
}

/// Where a request is in the cache; [`Phase::name`] feeds the trace log.
enum Phase {
    /// Read the store and ask RFC 9111 what the stored entry (if any) may do.
    Lookup,
    /// A fresh entry: serve it (an XFetch early refresh may start in the background).
    Fresh(Box<Hit>),
    /// A stale entry: serve it (collapsed forwarding, stale-while-revalidate) or revalidate.
    Stale(Box<Stale>),
    /// Nothing to serve: join the key's flight (or not, for uncoalesced requests).
    Miss(Forward),
    /// This request leads the flight: look again, take the leases, then go forward.
    Lead(Permit, Forward),
    /// Another request of this process is going forward: wait for its outcome.
    AwaitFill(Waiter, Forward),
    /// Go to the origin for a full response.
    Fetch(Going),
    /// Go to the origin with a conditional request for the stale entry.
    Revalidate(Going),
    /// The response is ready.
    Done(Response<ProxyBody>),
}

/// A request about to go to the origin, with its permit and lease (if it leads the flight).
pub(super) struct Going {
    forward: Forward,
    permit: Option<Permit>,
    lease: Option<Lease>,
}

impl Phase {
    /// Stable name for logs and traces.
    fn name(&self) -> &'static str {
        match self {
            Phase::Lookup => "lookup",
            Phase::Fresh(_) => "fresh",
            Phase::Stale(_) => "stale",
            Phase::Miss(_) => "miss",
            Phase::Lead(..) => "lead",
            Phase::AwaitFill(..) => "await-fill",
            Phase::Fetch(_) => "fetch",
            Phase::Revalidate(_) => "revalidate",
            Phase::Done(_) => "done",
        }
    }

    /// Go to the origin: `Revalidate` when there is a stale entry, else `Fetch`.
    fn going(forward: Forward, permit: Option<Permit>, lease: Option<Lease>) -> Phase {
        let going = Going {
            forward,
            permit,
            lease,
        };
        if going.forward.stale.is_some() {
            Phase::Revalidate(going)
        } else {
            Phase::Fetch(going)
        }
    }
}

/// Where [`Ctx::run_now`] stopped: the next step waits on the store, the origin or another
/// request.
pub(super) enum Waiting {
    /// The entry is not in the memory front: read the store (and the shared tier).
    Load,
    /// `Lead`: look again, take the leases.
    Lead(Permit, Forward),
    /// `AwaitFill`: wait for this key's leader.
    AwaitFill(Waiter, Forward),
    /// `Fetch` or `Revalidate`: go to the origin.
    Go(Going),
}

impl Ctx<'_> {
    /// Run the state machine from `Lookup` as far as it goes without waiting. A fresh entry
    /// in the memory front is answered here, inside the caller's call: no future is built,
    /// boxed or polled for the most common request of all.
    // The waiting state is moved once, into the request's box: no allocation of its own.
    #[allow(clippy::result_large_err)]
    pub(super) fn start_now(&self) -> Result<Response<ProxyBody>, (Waiting, usize)> {
        let mut lookups = 0;
        self.run_now(Phase::Lookup, &mut lookups)
            .map_err(|w| (w, lookups))
    }

    /// Run the synchronous phases (a lookup in the memory front, `Fresh`, `Stale`, `Miss`)
    /// from `phase` until `Done` or a phase that waits.
    #[allow(clippy::result_large_err)]
    fn run_now(
        &self,
        mut phase: Phase,
        lookups: &mut usize,
    ) -> Result<Response<ProxyBody>, Waiting> {
        loop {
            tracing::trace!(key = %self.key, phase = phase.name(), "cache phase");
            phase = match phase {
                Phase::Lookup if *lookups == MAX_LOOKUPS => Phase::Fetch(Going {
                    forward: Forward {
                        stale: None,
                        fwd: CacheStatus::miss(),
                        // Earlier lookups may have found rows: replacing, to be safe.
                        before: Before::STORED,
                    },
                    permit: None,
                    lease: None,
                }),
                Phase::Lookup => {
                    // Sampled before the read, as `lookup_stored` does.
                    let now = SystemTime::now();
                    let seen = self.st.entries.change_stamp(&self.key);
                    match self.st.entries.load_hot(&self.key, &self.lookup.headers) {
                        Some(loaded) => {
                            *lookups += 1;
                            self.judge(loaded, now, seen)
                        }
                        None => return Err(Waiting::Load),
                    }
                }
                Phase::Fresh(hit) => self.fresh(*hit),
                Phase::Stale(stale) => self.stale(*stale),
                Phase::Miss(forward) => self.miss(forward),
                Phase::Lead(permit, forward) => return Err(Waiting::Lead(permit, forward)),
                Phase::AwaitFill(waiter, forward) => {
                    return Err(Waiting::AwaitFill(waiter, forward));
                }
                Phase::Fetch(g) | Phase::Revalidate(g) => return Err(Waiting::Go(g)),
                Phase::Done(res) => return Ok(res),
            };
        }
    }

    /// Run the state machine from where [`start_now`](Self::start_now) stopped to `Done`.
    pub(super) async fn run(
        &self,
        mut waiting: Waiting,
        mut lookups: usize,
    ) -> Response<ProxyBody> {
        loop {
            // The phases after a miss are boxed: their futures (leases, the origin exchange,
            // the fill) are kilobytes, and most requests that wait only read the store.
            let phase = match waiting {
                Waiting::Load => {
                    lookups += 1;
                    self.lookup_stored().await
                }
                Waiting::Lead(permit, forward) => Box::pin(self.lead(permit, forward)).await,
                Waiting::AwaitFill(waiter, forward) => {
                    Box::pin(self.await_fill(waiter, forward)).await
                }
                Waiting::Go(g) => {
                    let Forward { stale, fwd, before } = g.forward;
                    let stale = stale.map(|s| *s);
                    return Box::pin(self.fetch(stale, g.permit, fwd, g.lease, before)).await;
                }
            };
            waiting = match self.run_now(phase, &mut lookups) {
                Ok(res) => return res,
                Err(w) => w,
            };
        }
    }

    /// `Lookup` of an entry not in the memory front: the store, then the shared tier.
    async fn lookup_stored(&self) -> Phase {
        let now = SystemTime::now();
        let seen = self.st.entries.change_stamp(&self.key);
        let loaded = self
            .st
            .entries
            .load_cold(&self.key, &self.lookup.headers)
            .await;
        self.judge(loaded, now, seen)
    }

    /// RFC 9111's verdict on what the lookup found (`now` and `seen` sampled before it read).
    fn judge(&self, loaded: Loaded, now: SystemTime, seen: Option<ChangeStamp>) -> Phase {
        let (row_key, head, rec, tier) = match loaded {
            Loaded::Found {
                row_key,
                head,
                body,
                tier,
            } => (row_key, head, body, tier),
            Loaded::VaryMiss => {
                let before = Before { stored: true, seen };
                return self.missed(CacheStatus::vary_miss(), before);
            }
            Loaded::Miss => {
                let before = Before {
                    stored: false,
                    seen,
                };
                return self.missed(CacheStatus::uri_miss(), before);
            }
        };
        match http_cache::lookup(&head, &self.lookup, now, &self.st.lookup_opts) {
            Lookup::Fresh { headers, ttl } => Phase::Fresh(Box::new(Hit {
                row_key,
                head,
                rec,
                tier,
                headers,
                ttl,
                now,
            })),
            Lookup::Stale {
                revalidate,
                serve_stale_while_revalidate,
                stale_if_error_until,
                ..
            } => Phase::Stale(Box::new(Stale {
                entry: StaleEntry {
                    row_key,
                    head,
                    rec,
                    stale_if_error_until,
                },
                revalidate,
                serve_stale_while_revalidate,
                now,
                seen,
            })),
            Lookup::Mismatch => self.missed(CacheStatus::miss(), Before { stored: true, seen }),
        }
    }

    /// `Miss` with nothing stale to revalidate.
    fn missed(&self, fwd: CacheStatus, before: Before) -> Phase {
        Phase::Miss(Forward {
            stale: None,
            fwd,
            before,
        })
    }

    /// `Fresh`: serve the hit; XFetch may start one early background refresh.
    fn fresh(&self, hit: Hit) -> Phase {
        let mut cs = super::serve::hit_status(hit.ttl, hit.tier);
        if self.xfetch_due(&hit.head, hit.now, hit.ttl)
            && let Role::Leader(permit) = self.st.coalescer.join(self.key.as_bytes())
        {
            self.spawn_refresh(hit.row_key, hit.head.clone(), permit);
            cs = cs.with_detail("early-refresh");
        }
        Phase::Done(self.serve_stored(&hit.head, hit.headers, hit.rec, cs))
    }

    /// `Stale`: `only-if-cached` ends here; an entry fetched after this request arrived is
    /// served (collapsed forwarding); inside stale-while-revalidate it is served and one
    /// background refresh starts; otherwise it goes forward to be revalidated. A request
    /// that finds the key's flight still open starts no refresh (one flight per key): that
    /// flight may be the very fill that stored this entry (its client has the whole body before
    /// the flight ends; a first miss's even before the commit), so the next stale request
    /// starts the refresh.
    fn stale(&self, s: Stale) -> Phase {
        let Stale {
            entry,
            revalidate,
            now,
            seen,
            ..
        } = s;
        if http_cache::only_if_cached(&self.lookup) {
            return Phase::Done(self.only_if_cached_miss());
        }
        if let Some(cs) = self.collapsed(&entry.head) {
            return Phase::Done(self.serve_stale(entry, now, cs));
        }
        if s.serve_stale_while_revalidate {
            if let Role::Leader(permit) = self.st.coalescer.join(self.key.as_bytes()) {
                self.spawn_refresh(entry.row_key.clone(), entry.head.clone(), permit);
            }
            let cs = CacheStatus::stale().with_detail(Detail::StaleWhileRevalidate);
            return Phase::Done(self.serve_stale(entry, now, cs));
        }
        let fwd = match http_cache::forced_by_request(
            &entry.head,
            &self.lookup,
            now,
            &self.st.lookup_opts,
        ) {
            Some(reason) => CacheStatus::request(reason),
            None => CacheStatus::stale(),
        };
        Phase::Miss(Forward {
            stale: Some(Box::new((entry, revalidate))),
            fwd,
            before: Before { stored: true, seen },
        })
    }

    /// `Miss`: `only-if-cached` ends here; requests whose responses nobody may share go
    /// forward alone; the others join the key's flight (leader, waiter, or hit-for-pass).
    /// A would-be waiter whose lookup is already out of date (the key was written since:
    /// the fill it missed has committed) looks again instead: the flight it found may be a
    /// background refresh of that very entry, which no client waits for.
    fn miss(&self, forward: Forward) -> Phase {
        if http_cache::only_if_cached(&self.lookup) {
            return Phase::Done(self.only_if_cached_miss());
        }
        if self.uncoalesced() {
            return Phase::going(forward, None, None);
        }
        match self.st.coalescer.join(self.key.as_bytes()) {
            Role::Leader(permit) => Phase::Lead(permit, forward),
            Role::Pass => {
                let fwd = forward.fwd.with_detail("hit-for-pass");
                Phase::going(Forward { fwd, ..forward }, None, None)
            }
            Role::Waiter(_) if forward.before.written_since(&self.st.entries, &self.key) => {
                Phase::Lookup
            }
            Role::Waiter(w) => Phase::AwaitFill(w, forward),
        }
    }

    /// `Lead`: another leader may have finished between the lookup and the join; then the
    /// directory lease (and the Redis one with `--shared`): a fill held elsewhere is waited
    /// for and read, not fetched again.
    async fn lead(&self, permit: Permit, mut forward: Forward) -> Phase {
        // Nobody wrote the key since the lookup read it: reading it again would find the same.
        let stamp = self.st.entries.change_stamp(&self.key);
        let unchanged = forward.before.seen.is_some() && stamp == forward.before.seen;
        if !unchanged {
            let loaded = self.load().await;
            forward.found(&loaded);
            if let Some(res) = self.serve_if_fresh(loaded) {
                permit.finish(Outcome::Stored);
                return Phase::Done(res);
            }
        }
        let ttl = self.lease_ttl();
        let lease = match self.st.entries.lease(&self.key, ttl).await {
            LeaseResult::Acquired(l) => Some(l),
            LeaseResult::Failed => None,
            LeaseResult::HeldElsewhere(Holder::Shared) => {
                // Another machine is fetching: wait for its entry in the shared tier rather
                // than asking the origin again.
                self.st
                    .entries
                    .wait_shared_fill(&self.key, self.st.cfg.lock_timeout)
                    .await;
                if let Some(res) = self.serve_if_fresh(self.load().await) {
                    permit.finish(Outcome::Stored);
                    return Phase::Done(res);
                }
                self.lease_again(ttl).await
            }
            LeaseResult::HeldElsewhere(Holder::Local) => {
                // Another hoard process on this directory is fetching: wait for its entry in
                // the store rather than asking the origin again.
                if let Some(res) = self.await_other_process().await {
                    permit.finish(Outcome::Stored);
                    return Phase::Done(res);
                }
                self.lease_again(ttl).await
            }
        };
        // Another process may have filled the key and released its lease between the read
        // above and our lease: look again when the key's stamp moved since. Across machines
        // that window is wide (and Redis has no stamp): look again always.
        let moved = stamp.is_some() && self.st.entries.change_stamp(&self.key) != stamp;
        if lease.is_some()
            && (moved || self.st.entries.shared_tier().is_some())
            && let Some(res) = self.serve_if_fresh(self.load().await)
        {
            permit.finish(Outcome::Stored);
            return Phase::Done(res);
        }
        Phase::going(forward, Some(permit), lease)
    }

    /// The lease after waiting for its holder: ours if it is free now, else none (we go
    /// forward anyway; the wait was bounded).
    async fn lease_again(&self, ttl: Duration) -> Option<Lease> {
        match self.st.entries.lease(&self.key, ttl).await {
            LeaseResult::Acquired(l) => Some(l),
            _ => None,
        }
    }

    /// `AwaitFill`: a leader that stored (or gave up) sends us back to `Lookup`; one that
    /// failed and served stale lets us do the same inside our stale-if-error window; one whose
    /// response may not be shared, or a wait past `lock_timeout`, sends us forward alone.
    async fn await_fill(&self, waiter: Waiter, forward: Forward) -> Phase {
        match waiter.wait(self.st.cfg.lock_timeout).await {
            Some(Outcome::Stored) | Some(Outcome::Abandoned) => Phase::Lookup,
            Some(Outcome::Failed) => {
                let t = SystemTime::now();
                match forward
                    .stale
                    .filter(|s| within(s.0.stale_if_error_until, t))
                {
                    Some(stale) => {
                        let (entry, _) = *stale;
                        let cs = forward.fwd.with_detail(Detail::StaleIfError);
                        Phase::Done(self.serve_stale(entry, t, cs))
                    }
                    None => Phase::Lookup,
                }
            }
            Some(Outcome::Uncacheable) | Some(Outcome::Pending) => {
                Phase::going(forward, None, None)
            }
            None => {
                let fwd = forward.fwd.with_detail("lock-timeout");
                Phase::going(Forward { fwd, ..forward }, None, None)
            }
        }
    }
}
