//! The cache decisions: may a response be stored, may a stored head answer a request, how a 304
//! refreshes a head, and which URIs an unsafe request invalidates (RFC 9111, RFC 5861).
//! Invariant: pure functions of their arguments; `now` is always a parameter.
//!
//! This file: lookups (fresh, stale, forced by the request), XFetch, the revalidation request,
//! and storability; `refresh.rs`: a head updated by a 304 or a HEAD; `invalidate.rs`: the
//! URIs an unsafe method invalidates; `background.rs`: the request a background refresh sends.

mod background;
mod invalidate;
mod refresh;

pub use background::{DropReason, RefreshField, background_request, refresh_field};

pub use invalidate::{invalidation_targets, resolve_reference};
pub use refresh::{
    HeadUpdate, Refreshed, freshen_with_head, per_client_fields, refresh,
    selects_for_another_request, strong_etag, withheld_fields,
};

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, request, response};

use super::directives::{CacheControl, Freshness5861, parse_cache_control};
use super::entry::{StoredHead, stored_request_headers};
use super::freshness::{HEURISTIC_STATUSES, has_explicit_freshness, response_no_cache};
use super::headers::{set_age, strip_hop_by_hop};
use super::key::{stored_vary_value, vary_value};
use super::status::RequestReason;
use super::vary::Vary;

/// Tunables of freshness computation.
#[derive(Debug, Clone)]
pub struct LookupOptions {
    /// Fraction of `Date - Last-Modified` used as heuristic lifetime (RFC 9111 4.2.2); 0.1.
    pub heuristic_fraction: f32,
    /// Upper bound for heuristic lifetimes; `None` = no bound.
    pub max_heuristic_ttl: Option<Duration>,
    /// Stale-if-error window used when neither response nor request names one; `None` = off.
    pub default_stale_if_error: Option<Duration>,
    /// Stale-while-revalidate window used when the response names none; `None` = off.
    pub default_stale_while_revalidate: Option<Duration>,
}

impl Default for LookupOptions {
    fn default() -> Self {
        Self {
            heuristic_fraction: 0.1,
            max_heuristic_ttl: None,
            default_stale_if_error: None,
            default_stale_while_revalidate: None,
        }
    }
}

/// Outcome of matching a request against one stored head.
#[derive(Debug)]
pub enum Lookup {
    /// Serve from cache. Also used when the client's `max-stale` accepts a stale entry (`ttl` 0).
    Fresh {
        /// Response headers to send: stored headers with `Age` set. The proxy adds `Via`.
        headers: HeaderMap,
        /// Remaining freshness.
        ttl: Duration,
    },
    /// Go to the origin first (stale entry, or the request demands validation).
    Stale {
        /// The request to send upstream: the client's end-to-end headers without its own
        /// conditionals and Range, plus `If-None-Match` / `If-Modified-Since` from the stored
        /// validators (none stored: a plain GET). Method is the stored one (GET), URI absolute.
        revalidate: request::Parts,
        /// RFC 5861: the stale entry may be served now while revalidating in the background.
        serve_stale_while_revalidate: bool,
        /// RFC 5861: on origin error (5xx or no answer) serve the entry until this time.
        stale_if_error_until: Option<SystemTime>,
        /// Current age of the entry.
        age: Duration,
    },
    /// Method or Vary does not match: treat as a miss.
    Mismatch,
}

fn pragma_no_cache(h: &HeaderMap) -> bool {
    h.get_all(header::PRAGMA).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
    })
}

/// Request `no-cache`, or `Pragma: no-cache` when the request has no Cache-Control (RFC 9111 5.4).
pub fn request_no_cache(req: &HeaderMap) -> bool {
    if req.contains_key(header::CACHE_CONTROL) {
        parse_cache_control(req).has("no-cache")
    } else {
        pragma_no_cache(req)
    }
}

/// Whether the client asked for `only-if-cached`: answer from cache or 504, never forward.
pub fn only_if_cached(req: &request::Parts) -> bool {
    parse_cache_control(&req.headers).has("only-if-cached")
}

/// Response directives that forbid serving stale in any case (RFC 9111 4.2.4): must-revalidate,
/// proxy-revalidate (we are shared), unqualified no-cache (also `Pragma: no-cache` without
/// Cache-Control; `no-cache="field"` only concerns the fields it names).
fn forbids_stale(res_cc: &CacheControl, res: &HeaderMap) -> bool {
    res_cc.has("must-revalidate")
        || res_cc.has("proxy-revalidate")
        || response_no_cache(res_cc, res)
}

/// Decides whether `head` may answer `req` at `now`.
///
/// GET and HEAD requests match a GET entry (the proxy drops the body for HEAD). Request
/// `no-cache`, `max-age`, `min-fresh` force revalidation; `max-stale` accepts staleness unless
/// the response has must-revalidate, proxy-revalidate, no-cache or s-maxage (which implies
/// proxy-revalidate, RFC 9111 5.2.2.10). Stale-while-revalidate and the response's
/// stale-if-error also apply despite s-maxage (the origin granted them explicitly), never
/// despite the other three.
pub fn lookup(
    head: &StoredHead,
    req: &request::Parts,
    now: SystemTime,
    opts: &LookupOptions,
) -> Lookup {
    let forced = head.forced_ttl.is_some();
    let method_ok = if head.method == Method::GET {
        req.method == Method::GET || req.method == Method::HEAD
    } else {
        // Entries of other methods exist only under a rule's forced TTL, keyed by body digest.
        forced && req.method == head.method
    };
    if !method_ok {
        return Lookup::Mismatch;
    }
    match &head.vary {
        Vary::Any => return Lookup::Mismatch,
        Vary::Headers(names) => {
            if names
                .iter()
                .any(|n| vary_value(&req.headers, n) != stored_vary_value(&head.request_headers, n))
            {
                return Lookup::Mismatch;
            }
        }
        Vary::None => {}
    }
    let req_cc = parse_cache_control(&req.headers);
    // A forced TTL replaces everything the origin said about freshness and reuse.
    let none = CacheControl::default();
    let res_cc = if forced { &none } else { head.cache_control() };
    let no_cache = request_no_cache(&req.headers);
    let lifetime = head.freshness_lifetime(opts);
    let age = head.current_age(now);
    let fresh = lifetime > age;
    let ttl = lifetime.saturating_sub(age);
    let staleness = age.saturating_sub(lifetime);
    let no_stale = !forced && forbids_stale(res_cc, &head.response_headers);

    // RFC 8246 2: a fresh `immutable` response is reused when a browser reloads (request
    // `max-age=0`); once stale it is revalidated like any other.
    let immutable = !forced && res_cc.has("immutable");
    let max_age_ok = (immutable && fresh) || req_cc.seconds("max-age").is_none_or(|m| age <= m);
    let min_fresh_ok = req_cc.seconds("min-fresh").is_none_or(|m| ttl >= m);
    let max_stale_ok = match req_cc.get("max-stale") {
        None => false,
        Some(_) if no_stale || res_cc.has("s-maxage") => false,
        Some(None) => true,
        Some(Some(_)) => req_cc.seconds("max-stale").is_some_and(|m| staleness <= m),
    };
    if !no_cache && max_age_ok && min_fresh_ok && (fresh || max_stale_ok) {
        let mut headers = head.response_headers.clone();
        set_age(&mut headers, age);
        return Lookup::Fresh { headers, ttl };
    }

    let windows = Freshness5861::from_response(&head.response_headers);
    let client_constrained = no_cache || req_cc.has("max-age") || req_cc.has("min-fresh");
    let serve_stale_while_revalidate = !fresh
        && !no_stale
        && !client_constrained
        && windows
            .stale_while_revalidate
            .or(opts.default_stale_while_revalidate)
            .is_some_and(|w| staleness <= w);
    let sie_window = match req_cc.seconds("stale-if-error") {
        Some(w) if !no_stale && !res_cc.has("s-maxage") => Some(w),
        Some(_) => None,
        None if !no_stale && !no_cache => windows.stale_if_error.or(opts.default_stale_if_error),
        None => None,
    };
    let stale_if_error_until = sie_window
        .and_then(|w| now.checked_add(lifetime + w)?.checked_sub(age))
        .filter(|until| *until > now);
    Lookup::Stale {
        revalidate: revalidation_request(head, req),
        serve_stale_while_revalidate,
        stale_if_error_until,
        age,
    }
}

/// When `lookup` said `Stale` for an entry that is still fresh, the request directive that forced
/// going forward (Cache-Status `fwd=request; detail=...`); `None` when the entry is stale anyway.
pub fn forced_by_request(
    head: &StoredHead,
    req: &request::Parts,
    now: SystemTime,
    opts: &LookupOptions,
) -> Option<RequestReason> {
    let lifetime = head.freshness_lifetime(opts);
    let age = head.current_age(now);
    let ttl = lifetime.checked_sub(age).filter(|t| !t.is_zero())?;
    if request_no_cache(&req.headers) {
        return Some(RequestReason::NoCache);
    }
    let cc = parse_cache_control(&req.headers);
    if cc.seconds("max-age").is_some_and(|m| age > m) {
        return Some(RequestReason::MaxAge);
    }
    if cc.seconds("min-fresh").is_some_and(|m| ttl < m) {
        return Some(RequestReason::MinFresh);
    }
    None
}

/// XFetch (probabilistic early expiration): refresh a fresh entry in the background when
/// `now - delta * beta * ln(u) >= fresh_until`, with `u` uniform in (0, 1] drawn by the caller
/// and `delta` the last fetch duration. The formula is the store's
/// ([`xfetch_should_recompute`](crate::store::xfetch_should_recompute), which `memoize_stampede`
/// uses), on seconds relative to `now`; out-of-range `u` counts as the smallest positive value,
/// a negative `beta` as 0, and an entry already expired is due.
pub fn xfetch_due(
    now: SystemTime,
    fresh_until: SystemTime,
    delta: Duration,
    beta: f64,
    u: f64,
) -> bool {
    let u = if u > 0.0 && u <= 1.0 {
        u
    } else {
        f64::MIN_POSITIVE
    };
    let Ok(left) = fresh_until.duration_since(now) else {
        return true;
    };
    crate::store::xfetch_should_recompute(
        0.0,
        delta.as_secs_f64(),
        beta.max(0.0),
        left.as_secs_f64(),
        u,
    )
}

/// A client's conditional fields (RFC 9110 13.1): about the answer that client wants; a fetch
/// for the cache leaves them out, a revalidation replaces them with the stored validators
/// ([`revalidation_request`]).
pub const CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// A client's conditional or range field ([`CONDITIONALS`] and `Range`): what a revalidation
/// or a background refresh never sends on the client's behalf.
pub(crate) fn is_client_conditional(name: &header::HeaderName) -> bool {
    CONDITIONALS.contains(name) || name == header::RANGE
}

/// Conditional request for revalidating `head` on behalf of `req`.
pub fn revalidation_request(head: &StoredHead, req: &request::Parts) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.uri = head.uri.clone();
    parts.version = req.version;
    let mut h = req.headers.clone();
    strip_hop_by_hop(&mut h);
    for name in CONDITIONALS {
        h.remove(name);
    }
    h.remove(header::RANGE);
    if let Some(etag) = head.etag() {
        h.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = head.last_modified() {
        h.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
    parts.headers = h;
    parts
}

/// Why a response is not stored; `as_str()` feeds Cache-Status `detail=` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// Only GET responses are stored.
    Method,
    /// `no-store` in request or response.
    NoStore,
    /// Unqualified `private` in a shared cache (`private="field"` only withholds the field).
    Private,
    /// Request had Authorization and the response lacks public / s-maxage / must-revalidate.
    Authorization,
    /// Not a final status a cache stores (1xx, 304; 206 is `Range`), or, under a rule's
    /// forced TTL, a status the cache does not understand.
    Status,
    /// `Vary: *` never matches later requests.
    VaryAny,
    /// 206 response or request with `Range`: partial content is not cached.
    Range,
    /// `Set-Cookie` (or `Set-Cookie2`) without explicit `public`, not withheld by a qualified
    /// `private="..."`/`no-cache="..."`: we do not share one client's cookies.
    SetCookie,
    /// No explicit freshness, not `public`, and the status is not heuristically cacheable
    /// (e.g. a plain 302 or 500).
    NoFreshness,
}

impl NotStorable {
    /// Stable name for Cache-Status `detail` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::Status => "status",
            NotStorable::VaryAny => "vary-star",
            NotStorable::Range => "range",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::NoFreshness => "no-freshness",
        }
    }
}

impl std::fmt::Display for NotStorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses whose semantics the cache understands (RFC 9111 3; 206 excluded): what a
/// configuration rule may force into the cache, and what a `must-understand` response may
/// have to be stored; other origin responses are storable with any final status that has
/// explicit freshness (see [`storability`]).
const UNDERSTOOD: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Whether a shared cache may store `res` for `req` (RFC 9111 3, 3.5): a GET, a final status
/// other than 206 and 304, no `no-store` (unless `must-understand` with a status the cache
/// understands, 5.2.2.3; `must-understand` with any other status is never stored), no
/// unqualified `private` (`private="field"` only
/// keeps the named fields out of the stored response, see [`StoredHead::new`]),
/// `Authorization` only with public / s-maxage / must-revalidate, and either explicit
/// freshness (any status: 299, 400, 500...), a heuristically cacheable status, or `public`.
pub fn storability(
    req: &request::Parts,
    res: &response::Parts,
    _opts: &LookupOptions,
) -> Result<(), NotStorable> {
    if req.method != Method::GET {
        return Err(NotStorable::Method);
    }
    if res.status == StatusCode::PARTIAL_CONTENT || req.headers.contains_key(header::RANGE) {
        return Err(NotStorable::Range);
    }
    let req_cc = parse_cache_control(&req.headers);
    let res_cc = parse_cache_control(&res.headers);
    // RFC 9111 5.2.2.3: `must-understand` limits storing to statuses the cache understands,
    // and for those the response's `no-store` is ignored.
    let must_understand = res_cc.has("must-understand");
    if must_understand && !UNDERSTOOD.contains(&res.status.as_u16()) {
        return Err(NotStorable::Status);
    }
    if req_cc.has("no-store") || (res_cc.has("no-store") && !must_understand) {
        return Err(NotStorable::NoStore);
    }
    if res_cc.has_bare("private") {
        return Err(NotStorable::Private);
    }
    if req.headers.contains_key(header::AUTHORIZATION)
        && !(res_cc.has("public") || res_cc.has("s-maxage") || res_cc.has("must-revalidate"))
    {
        return Err(NotStorable::Authorization);
    }
    if res.status.is_informational() || res.status == StatusCode::NOT_MODIFIED {
        return Err(NotStorable::Status);
    }
    if Vary::from_headers(&res.headers) == Vary::Any {
        return Err(NotStorable::VaryAny);
    }
    if !res_cc.has("public") && sets_shared_cookie(&res.headers) {
        return Err(NotStorable::SetCookie);
    }
    if !(has_explicit_freshness(&res.headers)
        || HEURISTIC_STATUSES.contains(&res.status.as_u16())
        || res_cc.has("public"))
    {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// Whether the response sets a cookie (`Set-Cookie`, or the obsolete `Set-Cookie2` some
/// clients still honour) that a stored copy would hand to other clients: one not withheld by
/// a qualified `private="..."`/`no-cache="..."` (RFC 9111 5.2.2.4, 5.2.2.7), which keeps the
/// field out of the stored response anyway.
fn sets_shared_cookie(res: &HeaderMap) -> bool {
    let withheld = withheld_fields(res);
    ["set-cookie", "set-cookie2"]
        .into_iter()
        .any(|name| res.contains_key(name) && !withheld.iter().any(|w| w == name))
}

/// Removes from a response about to be stored under a rule (which overrides `private` and the
/// cookie policy of [`storability`]) the cookies it sets, unless it is `public`: the rule
/// shares the response, never one client's `Set-Cookie`/`Set-Cookie2`.
pub fn strip_unshared_cookies(res: &mut HeaderMap) {
    if !parse_cache_control(res).has("public") {
        res.remove(header::SET_COOKIE);
        res.remove("set-cookie2");
    }
}

/// Whether a response may be stored under a rule that forces a TTL: the origin's no-store,
/// private, no-cache, Set-Cookie (the cookie itself is not stored: [`strip_unshared_cookies`])
/// and missing freshness are overridden; a request with
/// `Authorization` still is not shared unless `share_auth`, and partial content, `Vary: *` and
/// statuses a cache does not understand are still refused.
pub fn storability_forced(
    req: &request::Parts,
    res: &response::Parts,
    share_auth: bool,
) -> Result<(), NotStorable> {
    if res.status == StatusCode::PARTIAL_CONTENT || req.headers.contains_key(header::RANGE) {
        return Err(NotStorable::Range);
    }
    if parse_cache_control(&req.headers).has("no-store") {
        return Err(NotStorable::NoStore);
    }
    if req.headers.contains_key(header::AUTHORIZATION) && !share_auth {
        return Err(NotStorable::Authorization);
    }
    if !UNDERSTOOD.contains(&res.status.as_u16()) {
        return Err(NotStorable::Status);
    }
    if Vary::from_headers(&res.headers) == Vary::Any {
        return Err(NotStorable::VaryAny);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
