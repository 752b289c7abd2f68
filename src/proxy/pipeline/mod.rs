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

mod exchange;
mod merge;
mod partial;
mod phase;
mod range;
mod refresh;
mod serve;
#[cfg(test)]
mod tests;
mod vary_etags;

use merge::{Merged304, merge_304};
use range::without_range;

use serve::served_headers;

use super::body::ProxyBody;
use super::fill;
use super::request_body::ClientBodyError;
use super::service::{RequestHead, State};
use super::upstream::Upstream;
use crate::coalesce::{Outcome, Permit, Role};
use crate::entries::{Entries, FillPlan, Holder, Lease, LeaseResult, Loaded, StoredBody, Tier};
use crate::http_cache::{
    self, BypassReason, CacheKey, CacheStatus, Conditional, Detail, Lookup, LookupOptions,
    NotStorable, Refreshed, Rule, StoredHead,
};
use crate::store::Value;

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
    /// The client's request head, as the GET (or rule-cached method) of the absolute target
    /// that the policy is evaluated on: the client's own method and version are `client`.
    lookup: Parts,
    /// The method and version the client sent.
    client: (Method, Version),
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

/// What the synchronous part of the pipeline made of a request.
pub enum Started<'a> {
    /// Answered without waiting: a fresh entry in the memory front, or a refusal.
    Answered(Response<ProxyBody>),
    /// The rest waits on the store, the origin or another request.
    Later(Later<'a>),
}

/// A request the pipeline could not answer without waiting, and where it goes next.
pub struct Later<'a> {
    ctx: Box<Ctx<'a>>,
    next: Next,
}

// Lives in the request's box beside its context: the size of the largest variant is paid once.
#[allow(clippy::large_enum_variant)]
enum Next {
    Offline,
    Bypass,
    Range,
    /// The state machine, from where [`Ctx::start_now`] stopped.
    Run(phase::Waiting, usize),
}

impl Later<'_> {
    /// Finish the request.
    pub async fn finish(self) -> Response<ProxyBody> {
        let ctx = &*self.ctx;
        match self.next {
            Next::Offline => ctx.offline().await,
            Next::Bypass => {
                ctx.forward_uncached(CacheStatus::bypass(BypassReason::Disabled))
                    .await
            }
            Next::Range => ctx.range().await,
            Next::Run(waiting, lookups) => ctx.run(waiting, lookups).await,
        }
    }
}

/// Entry point for GET and HEAD.
pub fn get_or_head(st: &State, req: Request<ProxyBody>, target: Uri) -> Started<'_> {
    let (parts, _body) = req.into_parts();
    let (kuri, rule) = key_uri(st, &target);
    start(st, parts, target, &kuri, rule, None)
}

/// Entry point for other methods a rule caches (`cache_methods`): the body is read (up to the
/// rule's `max_body`) and its digest joins the cache key.
pub async fn cached_method(
    st: &State,
    req: Request<ProxyBody>,
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
            let cs = CacheStatus::bypass(BypassReason::Method);
            if let Some(failed) = e.downcast_ref::<ClientBodyError>() {
                return st.client_body_error(failed.fault, cs);
            }
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
            return st.error(code, cs, &msg);
        }
    };
    let kuri = rule.key_uri(&target);
    match start(st, parts, target, &kuri, Some(rule), Some(body)) {
        Started::Answered(res) => res,
        Started::Later(later) => later.finish().await,
    }
}

/// The synchronous part of the pipeline: the key, then the state machine as far as it goes
/// without waiting ([`Ctx::start_now`]).
fn start<'a>(
    st: &'a State,
    parts: Parts,
    target: Uri,
    key_uri: &Uri,
    rule: Option<Rule>,
    body: Option<Bytes>,
) -> Started<'a> {
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
            return Started::Answered(st.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Key),
                &format!("cannot build a cache key: {e}\n"),
            ));
        }
    };
    let mut lookup = parts;
    let client = (
        std::mem::replace(&mut lookup.method, class),
        std::mem::replace(&mut lookup.version, Version::HTTP_11),
    );
    lookup.uri = target.clone();
    let is_head = client.0 == Method::HEAD;
    let ctx = Ctx {
        st,
        lookup,
        client,
        target,
        key,
        is_head,
        rule,
        body,
        arrived: SystemTime::now(),
    };
    let next = if st.cfg.offline {
        Next::Offline
    } else if ctx.rule.as_ref().is_some_and(|r| r.bypass) {
        Next::Bypass
    } else if ctx.lookup.headers.contains_key(header::RANGE) {
        Next::Range
    } else {
        match ctx.start_now() {
            Ok(res) => return Started::Answered(res),
            Err((waiting, lookups)) => Next::Run(waiting, lookups),
        }
    };
    Started::Later(Later {
        ctx: Box::new(ctx),
        next,
    })
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
    /// The request as the client sent it (its method and version), for forwarding it as is.
    fn client_head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.client.0,
            version: self.client.1,
            headers: &self.lookup.headers,
        }
    }

    /// `cs` naming the configuration rule that applied, unless it already has a detail.
    fn ruled(&self, cs: CacheStatus) -> CacheStatus {
        cs.ruled(self.rule.as_ref())
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
}

fn within(until: Option<SystemTime>, now: SystemTime) -> bool {
    until.is_some_and(|u| now <= u)
}
