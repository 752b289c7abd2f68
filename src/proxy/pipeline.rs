//! The cache pipeline for GET and HEAD: key -> lookup -> fresh (serve) | stale (revalidate,
//! serve stale) | miss (coalesced fetch, stored while streamed to the client).
//!
//! Invariants: store calls run on blocking threads; a stored entry is only served when its
//! head decodes and its body length matches the head; one fetch per key at a time in this
//! process (waiters re-read the store when the leader finishes, or fetch themselves after
//! `lock_timeout`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::fill;
use super::service::State;
use super::upstream::Upstream;
use crate::coalesce::{Outcome, Permit, Role};
use crate::entries::{Entries, FillPlan, Holder, Lease, LeaseResult, Loaded, StoredBody, Tier};
use crate::http_cache::{
    self, BypassReason, CacheKey, CacheStatus, Detail, Lookup, LookupOptions, NotStorable,
    Refreshed, Rule, StoredHead, if_range_matches, parse_byte_range,
};
use crate::store::Value;

mod partial;
mod vary_etags;

/// Conditional request headers a cache removes before filling (it answers them itself).
const CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// The body to send for a stored entry; a file body is verified against `digest` as it
/// streams, and its row is removed if it turns out damaged.
fn stored_body(body: StoredBody, digest: u64, entries: &Entries) -> ProxyBody {
    match body {
        StoredBody::Mem(b) => ProxyBody::full(b),
        StoredBody::Rec(r, row_key) => match r.value {
            Value::Inline(v) => ProxyBody::full(v),
            Value::File { .. } => {
                let len = r.len();
                let (store, hot) = (entries.store.clone(), entries.hot.clone());
                ProxyBody::from_reader(r.into_reader(), len, digest, move || {
                    tracing::warn!("stored body damaged: entry dropped");
                    let _ = store.delete(&row_key);
                    hot.remove(&row_key);
                })
            }
        },
    }
}

/// A stored response that may be served stale or refreshed by a 304.
struct StaleEntry {
    row_key: Vec<u8>,
    head: Arc<StoredHead>,
    rec: StoredBody,
    stale_if_error_until: Option<SystemTime>,
}

/// One request going through the pipeline.
struct Ctx<'a> {
    st: &'a State,
    /// The client's request head.
    parts: Parts,
    /// The same request as a GET to the absolute target (what the policy is evaluated on).
    lookup: Parts,
    target: Uri,
    key: CacheKey,
    is_head: bool,
    /// The configuration rule that applies to this URL, if any.
    rule: Option<Rule>,
    /// The request body, for methods cached by a rule (keyed by its digest).
    body: Option<Bytes>,
    /// When the request reached the pipeline: a response the origin gave after this moment
    /// may answer it even if already stale (collapsed forwarding).
    arrived: SystemTime,
}

/// The cache key URI for `target`: the first matching rule may drop query parameters.
fn key_uri(st: &State, target: &Uri) -> (Uri, Option<Rule>) {
    match http_cache::first_match(&st.cfg.rules, target) {
        Some(rule) => (rule.key_uri(target), Some(rule.clone())),
        None => (target.clone(), None),
    }
}

/// Entry point for GET and HEAD.
pub async fn get_or_head(st: &State, req: Request<Incoming>, target: Uri) -> Response<ProxyBody> {
    let (parts, _body) = req.into_parts();
    let (kuri, rule) = key_uri(st, &target);
    run_cached(st, parts, target, &kuri, rule, None).await
}

/// Entry point for other methods a rule caches (`cache_methods`): the body is read (up to the
/// rule's `max_body`) and its digest joins the cache key.
pub async fn cached_method(
    st: &State,
    req: Request<Incoming>,
    target: Uri,
    rule: Rule,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, rule.max_body)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let (code, msg) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body larger than the {} bytes rule {:?} caches\n",
                        rule.max_body, rule.name
                    ),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {e}\n"),
                )
            };
            return st.error(code, CacheStatus::bypass(BypassReason::Method), &msg);
        }
    };
    let kuri = rule.key_uri(&target);
    run_cached(st, parts, target, &kuri, Some(rule), Some(body)).await
}

async fn run_cached(
    st: &State,
    parts: Parts,
    target: Uri,
    key_uri: &Uri,
    rule: Option<Rule>,
    body: Option<Bytes>,
) -> Response<ProxyBody> {
    let class = if body.is_some() {
        parts.method.clone()
    } else {
        Method::GET
    };
    let key = match http_cache::cache_key(&class, key_uri) {
        Ok(k) => match &body {
            Some(b) => k.with_body_digest(xxhash_rust::xxh3::xxh3_128(b)),
            None => k,
        },
        Err(e) => {
            return st.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Key),
                &format!("cannot build a cache key: {e}\n"),
            );
        }
    };
    let mut lookup = parts.clone();
    lookup.method = class;
    lookup.uri = target.clone();
    lookup.version = Version::HTTP_11;
    let is_head = parts.method == Method::HEAD;
    let ctx = Ctx {
        st,
        parts,
        lookup,
        target,
        key,
        is_head,
        rule,
        body,
        arrived: SystemTime::now(),
    };
    if st.cfg.offline {
        ctx.offline().await
    } else if ctx.rule.as_ref().is_some_and(|r| r.bypass) {
        ctx.forward_uncached(CacheStatus::bypass(BypassReason::Disabled))
            .await
    } else if ctx.parts.headers.contains_key(header::RANGE) {
        ctx.range().await
    } else {
        ctx.run().await
    }
}

/// Remove every stored variant of these URLs (RFC 9111 section 4.4 invalidation, purge);
/// returns how many rows were removed.
pub async fn invalidate(st: &State, targets: Vec<Uri>) -> u64 {
    let keys: Vec<CacheKey> = targets
        .iter()
        .filter_map(|u| http_cache::cache_key(&Method::GET, &key_uri(st, u).0).ok())
        .collect();
    for k in &keys {
        st.coalescer.clear_pass(k.as_bytes());
    }
    st.entries.purge(keys).await
}

impl Ctx<'_> {
    async fn run(self) -> Response<ProxyBody> {
        let only_if_cached = http_cache::only_if_cached(&self.lookup);
        // Bounded: a waiter re-reads at most a few times before fetching by itself.
        for _attempt in 0..4 {
            let now = SystemTime::now();
            let mut fwd = CacheStatus::uri_miss();
            let mut stale = None;
            match self.load().await {
                Loaded::Found {
                    row_key,
                    head,
                    body: rec,
                    tier,
                } => match http_cache::lookup(&head, &self.lookup, now, &self.st.lookup_opts) {
                    Lookup::Fresh { headers, ttl } => {
                        let mut cs = CacheStatus::hit(Some(ttl.as_secs() as i64));
                        if tier == Tier::Shared {
                            cs = cs.with_detail("shared");
                        }
                        if self.xfetch_due(&head, now, ttl)
                            && let Role::Leader(permit) =
                                self.st.coalescer.join(self.key.as_bytes())
                        {
                            let reval = http_cache::revalidation_request(&head, &self.lookup);
                            self.spawn_refresh(row_key, head.clone(), reval, permit);
                            cs = cs.with_detail("early-refresh");
                        }
                        return self.serve_stored(&head, headers, rec, cs);
                    }
                    Lookup::Stale {
                        revalidate,
                        serve_stale_while_revalidate,
                        stale_if_error_until,
                        ..
                    } => {
                        let entry = StaleEntry {
                            row_key,
                            head,
                            rec,
                            stale_if_error_until,
                        };
                        if only_if_cached {
                            return self.only_if_cached_miss();
                        }
                        if let Some(cs) = self.collapsed(&entry.head) {
                            return self.serve_stale(entry, now, cs);
                        }
                        if serve_stale_while_revalidate {
                            if let Role::Leader(permit) =
                                self.st.coalescer.join(self.key.as_bytes())
                            {
                                self.spawn_refresh(
                                    entry.row_key.clone(),
                                    entry.head.clone(),
                                    revalidate,
                                    permit,
                                );
                            }
                            return self.serve_stale(
                                entry,
                                now,
                                CacheStatus::stale().with_detail(Detail::StaleWhileRevalidate),
                            );
                        }
                        fwd = match http_cache::forced_by_request(
                            &entry.head,
                            &self.lookup,
                            now,
                            &self.st.lookup_opts,
                        ) {
                            Some(reason) => CacheStatus::request(reason),
                            None => CacheStatus::stale(),
                        };
                        stale = Some((entry, revalidate));
                    }
                    Lookup::Mismatch => fwd = CacheStatus::miss(),
                },
                Loaded::VaryMiss => fwd = CacheStatus::vary_miss(),
                Loaded::Miss => {}
            }
            if only_if_cached {
                return self.only_if_cached_miss();
            }
            if self.uncoalesced() {
                return self.fetch(stale, None, fwd, None).await;
            }
            match self.st.coalescer.join(self.key.as_bytes()) {
                Role::Leader(permit) => {
                    // Another leader may have finished between our lookup and our `join`.
                    if let Some(res) = self.serve_if_fresh(self.load().await) {
                        permit.finish(Outcome::Stored);
                        return res;
                    }
                    let ttl = self.lease_ttl();
                    let lease = match self.st.entries.lease(&self.key, ttl).await {
                        LeaseResult::Acquired(l) => Some(l),
                        LeaseResult::Failed => None,
                        LeaseResult::HeldElsewhere(Holder::Shared) => {
                            // Another machine is fetching: wait for its entry in the shared
                            // tier rather than asking the origin again.
                            self.st
                                .entries
                                .wait_shared_fill(&self.key, self.st.cfg.lock_timeout)
                                .await;
                            if let Some(res) = self.serve_if_fresh(self.load().await) {
                                permit.finish(Outcome::Stored);
                                return res;
                            }
                            match self.st.entries.lease(&self.key, ttl).await {
                                LeaseResult::Acquired(l) => Some(l),
                                _ => None,
                            }
                        }
                        LeaseResult::HeldElsewhere(Holder::Local) => {
                            // Another hoard process on this directory is fetching: wait for
                            // its entry in the store rather than asking the origin again.
                            if let Some(res) = self.await_other_process().await {
                                permit.finish(Outcome::Stored);
                                return res;
                            }
                            match self.st.entries.lease(&self.key, ttl).await {
                                LeaseResult::Acquired(l) => Some(l),
                                _ => None,
                            }
                        }
                    };
                    // Across machines the window between our lookup and the lease is wide
                    // (another machine may have filled and released meanwhile): look again.
                    if lease.is_some()
                        && self.st.entries.shared_tier().is_some()
                        && let Some(res) = self.serve_if_fresh(self.load().await)
                    {
                        permit.finish(Outcome::Stored);
                        return res;
                    }
                    return self.fetch(stale, Some(permit), fwd, lease).await;
                }
                Role::Pass => {
                    return self
                        .fetch(stale, None, fwd.with_detail("hit-for-pass"), None)
                        .await;
                }
                Role::Waiter(w) => match w.wait(self.st.cfg.lock_timeout).await {
                    Some(Outcome::Stored) | Some(Outcome::Abandoned) => continue,
                    Some(Outcome::Failed) => {
                        let t = SystemTime::now();
                        match stale.filter(|(s, _)| within(s.stale_if_error_until, t)) {
                            Some((entry, _)) => {
                                let cs = fwd.with_detail(Detail::StaleIfError);
                                return self.serve_stale(entry, t, cs);
                            }
                            None => continue,
                        }
                    }
                    Some(Outcome::Uncacheable) | Some(Outcome::Pending) => {
                        return self.fetch(stale, None, fwd, None).await;
                    }
                    None => {
                        return self
                            .fetch(stale, None, fwd.with_detail("lock-timeout"), None)
                            .await;
                    }
                },
            }
        }
        self.fetch(None, None, CacheStatus::miss(), None).await
    }

    /// Offline mode: never contact an origin. Any stored variant is served whatever its age
    /// (with its true `Age`); a miss is a 504 that says why.
    async fn offline(&self) -> Response<ProxyBody> {
        match self.load().await {
            Loaded::Found {
                head, body: rec, ..
            } => {
                let now = SystemTime::now();
                let lifetime = head.freshness_lifetime(&self.st.lookup_opts);
                let age = head.current_age(now);
                let ttl = lifetime.as_secs() as i64 - age.as_secs() as i64;
                let cs = CacheStatus::hit(Some(ttl)).with_detail("offline");
                self.serve_stored(&head, served_headers(&head, now), rec, cs)
            }
            Loaded::Miss | Loaded::VaryMiss => self.st.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::uri_miss().with_detail("offline"),
                "hoard is offline and this URL is not in the cache\n",
            ),
        }
    }

    /// `cs` naming the configuration rule that applied, unless it already has a detail
    /// (RFC 9211 allows one).
    fn ruled(&self, cs: CacheStatus) -> CacheStatus {
        match &self.rule {
            Some(rule) if cs.detail.is_none() => {
                cs.with_detail(Detail::Other(rule.detail().into()))
            }
            _ => cs,
        }
    }

    /// The body to send upstream: the buffered one of a rule-cached method, else none.
    fn request_body(&self) -> ProxyBody {
        match &self.body {
            Some(b) => ProxyBody::full(b.clone()),
            None => ProxyBody::Empty,
        }
    }

    /// Requests that never wait on others' fetches, nor make others wait: their responses
    /// are not shareable anyway (credentials, `no-store`).
    fn uncoalesced(&self) -> bool {
        (self.lookup.headers.contains_key(header::AUTHORIZATION)
            && !self
                .rule
                .as_ref()
                .is_some_and(|r| r.share_auth && r.ttl.is_some()))
            || http_cache::parse_cache_control(&self.lookup.headers).has("no-store")
    }

    fn lease_ttl(&self) -> std::time::Duration {
        self.st.cfg.lock_timeout
    }

    /// XFetch: should this fresh hit start an early background refresh?
    fn xfetch_due(&self, head: &StoredHead, now: SystemTime, ttl: std::time::Duration) -> bool {
        let beta = self.st.cfg.xfetch_beta;
        if beta <= 0.0 || ttl.is_zero() || head.fetch_delta.is_zero() {
            return false;
        }
        let u = (self.st.cfg.random)();
        http_cache::xfetch_due(now, now + ttl, head.fetch_delta, beta, u)
    }

    /// A hit response if `loaded` is an entry fresh enough for this request.
    fn serve_if_fresh(&self, loaded: Loaded) -> Option<Response<ProxyBody>> {
        let Loaded::Found {
            head, body: rec, ..
        } = loaded
        else {
            return None;
        };
        let now = SystemTime::now();
        match http_cache::lookup(&head, &self.lookup, now, &self.st.lookup_opts) {
            Lookup::Fresh { headers, ttl } => {
                let cs = CacheStatus::hit(Some(ttl.as_secs() as i64));
                Some(self.serve_stored(&head, headers, rec, cs))
            }
            Lookup::Stale { .. } => {
                let cs = self.collapsed(&head)?;
                Some(self.serve_stored(&head, served_headers(&head, now), rec, cs))
            }
            _ => None,
        }
    }

    /// Collapsed forwarding: another request's fetch or revalidation got this entry from the
    /// origin after this request arrived, so it answers this one too even when it is stale
    /// already (`max-age=0`, an upstream `Age` past max-age). Without this, waiters woken by
    /// such a leader would each go to the origin.
    fn collapsed(&self, head: &StoredHead) -> Option<CacheStatus> {
        (head.response_time >= self.arrived).then(|| CacheStatus::stale().with_detail("collapsed"))
    }

    /// Poll the store (not the in-memory front) with backoff until another process's fetch
    /// of this key leaves a fresh entry, its lease goes away, or `lock_timeout` passes.
    async fn await_other_process(&self) -> Option<Response<ProxyBody>> {
        let deadline = Instant::now() + self.st.cfg.lock_timeout;
        let mut pause = std::time::Duration::from_millis(5);
        while Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
            if let Some(res) = self.serve_if_fresh(
                self.st
                    .entries
                    .load_store(&self.key, &self.lookup.headers)
                    .await,
            ) {
                return Some(res);
            }
            if !self.st.entries.lease_held(&self.key).await {
                // The holder may have committed between our read and its release.
                return self.serve_if_fresh(
                    self.st
                        .entries
                        .load_store(&self.key, &self.lookup.headers)
                        .await,
                );
            }
        }
        None
    }

    /// Read the URL key, follow a Vary index to this request's variant: from the hot cache
    /// when it has the rows, else from the store (filling the hot cache).
    async fn load(&self) -> Loaded {
        self.st.entries.load(&self.key, &self.lookup.headers).await
    }

    fn only_if_cached_miss(&self) -> Response<ProxyBody> {
        self.st.error(
            StatusCode::GATEWAY_TIMEOUT,
            CacheStatus::only_if_cached(),
            "only-if-cached: no suitable response is stored\n",
        )
    }

    /// Answer from a stored entry with the given response headers (Age already set).
    fn serve_stored(
        &self,
        head: &StoredHead,
        mut headers: HeaderMap,
        rec: StoredBody,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        let status = head.status;
        // Stored heads never hold hop-by-hop fields: `StoredHead::new` and `refresh` drop them.
        headers.remove(header::CONTENT_LENGTH);
        http_cache::append_via(&mut headers, Version::HTTP_11, &self.st.cfg.pseudonym);
        let len = rec.len();
        if status.is_success()
            && http_cache::not_modified(&self.parts.headers, &headers, head.response_time)
        {
            return self.not_modified_response(headers, cs);
        }
        if !(status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let body = if self.is_head || len == 0 {
            ProxyBody::Empty
        } else {
            stored_body(rec, head.body_digest, &self.st.entries)
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, self.ruled(cs));
        res
    }

    /// A Range request: one byte range is served from a fresh, complete stored 200 (206, or
    /// 416 when unsatisfiable); anything else (several ranges, a stale or absent entry, an
    /// `If-Range` that does not match) goes to the origin and is not stored.
    async fn range(&self) -> Response<ProxyBody> {
        let forward = || self.forward_uncached(CacheStatus::bypass(BypassReason::Range));
        let Some(spec) = parse_byte_range(&self.parts.headers) else {
            return forward().await;
        };
        let mut loaded = self.load().await;
        if !matches!(loaded, Loaded::Found { .. })
            && let Some(w) = self.st.coalescer.waiter(self.key.as_bytes())
        {
            // A fill of this URL is in flight: its complete body answers the range.
            w.wait(self.st.cfg.lock_timeout).await;
            loaded = self.load().await;
        }
        let Loaded::Found {
            head, body: rec, ..
        } = loaded
        else {
            // Partial content (RFC 9111 3.3, 3.4): pipeline/partial.rs.
            return self.range_from_parts(spec).await;
        };
        if head.status != StatusCode::OK || !if_range_matches(&self.parts.headers, &head) {
            return forward().await;
        }
        let now = SystemTime::now();
        let (mut headers, ttl) =
            match http_cache::lookup(&head, &self.lookup, now, &self.st.lookup_opts) {
                Lookup::Fresh { headers, ttl } => (headers, ttl),
                _ => return forward().await,
            };
        let cs = CacheStatus::hit(Some(ttl.as_secs() as i64));
        let len = rec.len();
        http_cache::append_via(&mut headers, Version::HTTP_11, &self.st.cfg.pseudonym);
        let Some((start, end)) = spec.resolve(len) else {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            let mut res = self.st.error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                self.ruled(cs),
                "requested range not satisfiable\n",
            );
            res.headers_mut().extend(h);
            return res;
        };
        let n = end - start + 1;
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        let body = if self.is_head {
            ProxyBody::Empty
        } else {
            match rec {
                StoredBody::Mem(b) => ProxyBody::full(b.slice(start as usize..=end as usize)),
                StoredBody::Rec(r, _) => match r.value {
                    Value::File { mut file, .. } => {
                        use std::io::{Read, Seek, SeekFrom};
                        match file.seek(SeekFrom::Start(start)) {
                            // Verified in full when this process first served it.
                            Ok(_) => ProxyBody::from_verified_reader(file.take(n), n),
                            Err(_) => return forward().await,
                        }
                    }
                    Value::Inline(v) => {
                        ProxyBody::full(Bytes::from(v).slice(start as usize..=end as usize))
                    }
                },
            }
        };
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, self.ruled(cs));
        res
    }

    fn not_modified_response(
        &self,
        mut headers: HeaderMap,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        let mut res = Response::new(ProxyBody::Empty);
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, self.ruled(cs));
        res
    }

    /// Serve a stale entry as it is (stale-while-revalidate, stale-if-error, max-stale).
    fn serve_stale(&self, e: StaleEntry, now: SystemTime, cs: CacheStatus) -> Response<ProxyBody> {
        let headers = served_headers(&e.head, now);
        self.serve_stored(&e.head, headers, e.rec, cs)
    }

    /// Start one background revalidation of a stored entry (stale-while-revalidate, XFetch),
    /// under this process's permit and, across processes, the store lease.
    fn spawn_refresh(
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

    /// Go to the origin: revalidate `stale` if given, otherwise fetch; store what may be stored.
    async fn fetch(
        &self,
        stale: Option<(StaleEntry, Parts)>,
        permit: Option<Permit>,
        fwd: CacheStatus,
        lease: Option<Lease>,
    ) -> Response<ProxyBody> {
        let mut variants = vary_etags::Offered::default();
        let (stale, req) = match stale {
            Some((entry, reval)) => {
                let req = self
                    .st
                    .upstream_request(&reval, &self.target, self.request_body());
                (Some(entry), req)
            }
            None => {
                let mut p = self.lookup.clone();
                for h in &CONDITIONALS {
                    p.headers.remove(h);
                }
                // RFC 9111 4.3.1: a Vary miss asks with the stored variants' ETags
                // (pipeline/vary_etags.rs).
                variants = self.offer_variants(&fwd, &mut p.headers).await;
                (
                    None,
                    self.st
                        .upstream_request(&p, &self.target, self.request_body()),
                )
            }
        };
        let t_req = SystemTime::now();
        let started = Instant::now();
        let sent = self.st.upstream.send(req).await;
        let t_res = SystemTime::now();
        let delta = started.elapsed();
        let res = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(entry) = stale.filter(|s| within(s.stale_if_error_until, t_res)) {
                    if let Some(p) = permit {
                        p.finish(Outcome::Failed);
                    }
                    let cs = fwd.with_detail(Detail::StaleIfError);
                    return self.serve_stale(entry, t_res, cs);
                }
                return self.st.upstream_error(&e, self.ruled(fwd));
            }
        };
        let (mut rparts, rbody) = res.into_parts();
        if rparts.status.is_server_error()
            && let Some(entry) = stale
                .as_ref()
                .filter(|s| within(s.stale_if_error_until, t_res))
        {
            let _ = entry;
            let entry = stale.expect("checked above");
            if let Some(p) = permit {
                p.finish(Outcome::Failed);
            }
            let cs = fwd
                .with_fwd_status(rparts.status.as_u16())
                .with_detail(Detail::StaleIfError);
            return self.serve_stale(entry, t_res, cs);
        }
        if rparts.status == StatusCode::NOT_MODIFIED && !variants.is_empty() {
            let times = (t_req, t_res, delta);
            return self
                .select_variant(variants, &rparts, times, permit, fwd, lease)
                .await;
        }
        if rparts.status == StatusCode::NOT_MODIFIED
            && let Some(entry) = stale
        {
            let merged = merge_304(
                self.rule.as_ref(),
                &self.lookup,
                &entry.head,
                &rparts,
                (t_req, t_res, delta),
                &self.st.lookup_opts,
            );
            let entries = &self.st.entries;
            let (refreshed, outcome, fwd) = match merged {
                Merged304::NoMatch => {
                    // The 304 does not match what we hold: fetch the full response.
                    return Box::pin(self.fetch(None, permit, fwd, lease)).await;
                }
                Merged304::Store(r) => {
                    let stored = entries
                        .refresh_head(&self.key, &entry.row_key, r.head.clone())
                        .await;
                    // RFC 9111 4.3.4: the other variants with this strong validator too
                    // (pipeline/vary_etags.rs).
                    let times = (t_req, t_res, delta);
                    self.refresh_siblings(&entry.row_key, &entry.head, &rparts, times)
                        .await;
                    let outcome = if stored {
                        Outcome::Stored
                    } else {
                        Outcome::Abandoned
                    };
                    (r, outcome, fwd.with_fwd_status(304).stored(stored))
                }
                Merged304::ClientOnly(r, reason) => (
                    r,
                    Outcome::Abandoned,
                    fwd.with_fwd_status(304)
                        .with_detail(Detail::NotStorable(reason)),
                ),
                Merged304::Remove(r, reason) => {
                    entries.remove_row(&self.key, &entry.row_key).await;
                    (
                        r,
                        Outcome::Uncacheable,
                        fwd.with_fwd_status(304)
                            .with_detail(Detail::NotStorable(reason)),
                    )
                }
            };
            if let Some(p) = permit {
                p.finish(outcome);
            }
            let mut headers = served_headers(&refreshed.head, t_res);
            for (name, value) in &refreshed.client_only {
                headers.append(name, value.clone());
            }
            return self.serve_stored(&refreshed.head, headers, entry.rec, fwd);
        }
        // A new response.
        let storable = storability(
            self.rule.as_ref(),
            &self.lookup,
            &rparts,
            &self.st.lookup_opts,
        );
        // Disk full or read-only: pass through, except one probe fill now and then.
        let store_down = storable.is_ok() && !self.st.entries.health.may_store();
        let plan = match &storable {
            Ok(()) if store_down => None,
            Ok(()) => FillPlan::new(
                &self.st.entries,
                &self.key,
                &self.lookup,
                &rparts,
                t_req,
                t_res,
                delta,
                self.st.cfg.max_object_size,
            )
            .map(|p| p.with_rule(self.rule.as_ref())),
            Err(_) => None,
        };
        let fwd = fwd.with_fwd_status(rparts.status.as_u16());
        let client_headers = {
            let mut h = rparts.headers.clone();
            self.st.prepare_response_headers(&mut h, rparts.version);
            h
        };
        let Some(plan) = plan else {
            if let Some(p) = permit {
                // Failures and per-request refusals: one waiter tries again. Responses nobody
                // may share: remember the key as pass for a while.
                let retry = store_down
                    || rparts.status.is_server_error()
                    || matches!(
                        storable,
                        Err(NotStorable::Status | NotStorable::Authorization)
                    );
                p.finish(if retry {
                    Outcome::Abandoned
                } else {
                    Outcome::Uncacheable
                });
            }
            drop(lease);
            let detail = match storable {
                Err(reason) => Detail::NotStorable(reason),
                Ok(()) if store_down => Detail::from("store-unavailable"),
                Ok(()) => Detail::from("too-large"),
            };
            rparts.headers = client_headers;
            rparts.version = Version::HTTP_11;
            let mut res = Response::from_parts(rparts, self.st.origin_body(rbody));
            if self.is_head {
                *res.body_mut() = ProxyBody::Empty;
            }
            self.st.stamp(&mut res, self.ruled(fwd.with_detail(detail)));
            return res;
        };
        let expected = content_length(&rparts.headers);
        let status = rparts.status;
        let client_wants_304 = status.is_success()
            && http_cache::not_modified(&self.parts.headers, &client_headers, t_res);
        let (to_client, body) = if self.is_head || client_wants_304 {
            (None, ProxyBody::Empty)
        } else {
            let (tx, body) = ProxyBody::channel(8, expected);
            let stall = self.st.cfg.idle_timeout;
            (Some(fill::ToClient { body: tx, stall }), body)
        };
        let timeout = self.st.upstream.response_timeout();
        let total = self.st.cfg.body_timeout;
        self.st.background.spawn(fill::run(
            plan, rbody, to_client, permit, lease, timeout, total,
        ));
        if client_wants_304 {
            return self.not_modified_response(client_headers, fwd.stored(true));
        }
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = client_headers;
        self.st.stamp(&mut res, self.ruled(fwd.stored(true)));
        res
    }

    /// RFC 9111 4.3.5: a 200 to a HEAD this cache forwarded updates the stored GET response
    /// when the validators match (if it may still be shared), and removes it when not.
    async fn freshen_with_head(&self, res: &http::response::Parts, t_req: SystemTime) {
        if self.rule.is_some() || res.status != StatusCode::OK {
            return;
        }
        let Loaded::Found { row_key, head, .. } = self.load().await else {
            return;
        };
        let entries = &self.st.entries;
        let t_res = SystemTime::now();
        match http_cache::freshen_with_head(&head, &self.lookup, res, t_req, t_res) {
            http_cache::HeadUpdate::Freshened(r) => {
                match Merged304::classify(None, &self.lookup, r, &self.st.lookup_opts) {
                    Merged304::Remove(..) => entries.remove_row(&self.key, &row_key).await,
                    Merged304::Store(r) => {
                        entries.refresh_head(&self.key, &row_key, r.head).await;
                    }
                    Merged304::ClientOnly(..) | Merged304::NoMatch => {}
                }
            }
            http_cache::HeadUpdate::Invalidate => entries.remove_row(&self.key, &row_key).await,
            http_cache::HeadUpdate::Ignore => {}
        }
    }

    /// Forward without touching the cache (Range requests and similar).
    async fn forward_uncached(&self, cs: CacheStatus) -> Response<ProxyBody> {
        let req = self
            .st
            .upstream_request(&self.parts, &self.target, self.request_body());
        let t_req = SystemTime::now();
        match self.st.upstream.send(req).await {
            Err(e) => self.st.upstream_error(&e, self.ruled(cs)),
            Ok(res) => {
                let (mut rparts, rbody) = res.into_parts();
                if self.is_head {
                    self.freshen_with_head(&rparts, t_req).await;
                }
                self.st
                    .prepare_response_headers(&mut rparts.headers, rparts.version);
                rparts.version = Version::HTTP_11;
                let mut res = Response::from_parts(rparts, self.st.origin_body(rbody));
                self.st.stamp(&mut res, self.ruled(cs));
                res
            }
        }
    }
}

/// `req` without its `Range`: a range request updates the whole stored response.
fn without_range(req: &Parts) -> Parts {
    let mut sent = req.clone();
    sent.headers.remove(header::RANGE);
    sent
}

/// Stored response headers with `Age` for `now` (RFC 9111 4.2.3).
fn served_headers(head: &StoredHead, now: SystemTime) -> HeaderMap {
    let mut h = head.response_headers.clone();
    http_cache::set_age(&mut h, head.current_age(now));
    h
}

fn within(until: Option<SystemTime>, now: SystemTime) -> bool {
    until.is_some_and(|u| now <= u)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A background revalidation (stale-while-revalidate, XFetch), detached from the request
/// that started it: the client has already been answered from the cache.
struct Refresher {
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
        let req = super::service::build_upstream_request(
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
        if storability(self.rule.as_ref(), &self.lookup, &rparts, &self.opts).is_ok()
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

/// What a 304 does to the stored entry it revalidated.
enum Merged304 {
    /// The merge may be shared: store it (the client also gets `client_only`).
    Store(Refreshed),
    /// The merged response may be shared, but not as the answer to this request (it carried
    /// Authorization, `no-store`...): answer this client from the merge, leave the entry.
    ClientOnly(Refreshed, NotStorable),
    /// The merged response may no longer be shared (`private`, `no-store`, `Vary: *`...):
    /// remove the entry; this client is still answered from the merge.
    Remove(Refreshed, NotStorable),
    /// The 304's validators do not select the entry.
    NoMatch,
}

/// Merge a 304 into `head` and ask storability again, on the response alone (may anyone
/// share it?) and then with the request that was sent (may this exchange update it?).
fn merge_304(
    rule: Option<&Rule>,
    req: &Parts,
    head: &StoredHead,
    res: &http::response::Parts,
    (t_req, t_res, delta): (SystemTime, SystemTime, std::time::Duration),
    opts: &LookupOptions,
) -> Merged304 {
    let Some(mut r) = http_cache::refresh(head, req, res, t_req, t_res) else {
        return Merged304::NoMatch;
    };
    r.head.fetch_delta = delta;
    Merged304::classify(rule, req, r, opts)
}

impl Merged304 {
    /// Ask storability again about a merged head (a 304, or a HEAD's 200): on the response
    /// alone (may anyone share it?), then with the request that was sent (may this exchange
    /// update it?).
    fn classify(rule: Option<&Rule>, req: &Parts, r: Refreshed, opts: &LookupOptions) -> Self {
        let merged = r.head.response_parts();
        let mut anonymous = req.clone();
        anonymous.headers = HeaderMap::new();
        if let Err(reason) = storability(rule, &anonymous, &merged, opts) {
            return Merged304::Remove(r, reason);
        }
        // A Range request revalidates the whole stored response; the range is not the
        // exchange's.
        if let Err(reason) = storability(rule, &without_range(req), &merged, opts) {
            return Merged304::ClientOnly(r, reason);
        }
        Merged304::Store(r)
    }
}

/// Storability under the rule that applies, if any (a forced TTL overrides the origin).
fn storability(
    rule: Option<&Rule>,
    req: &Parts,
    res: &http::response::Parts,
    opts: &LookupOptions,
) -> Result<(), NotStorable> {
    match rule {
        Some(r) if r.ttl.is_some() => http_cache::storability_forced(req, res, r.share_auth),
        _ => http_cache::storability(req, res, opts),
    }
}
