//! POST responses that are the GET response of their own URI (RFC 9110 9.3.3, RFC 9111 4): a
//! response to POST whose `Content-Location` is the request's effective URI and which has
//! explicit freshness is stored as the GET response for that URI and answers later GETs.
//!
//! Invariant: never with `store-post-responses = false`; only for the URI the POST targeted
//! (compared as normalised cache keys), only with explicit freshness, never where a
//! configuration rule applies, and under the same storability rules as a GET with the POST's
//! request fields (Authorization, `no-store`, `private`, Set-Cookie, Vary...); the plan is
//! made after the POST's own invalidation, so the fill it starts is the one that stays.

use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{Method, Uri, Version, header};

use super::service::State;
use crate::entries::FillPlan;
use crate::http_cache;

/// The fill plan storing `res` (the answer to the POST `req` to `target`) as the GET response
/// of `target`, or `None` when it may not be (or `store-post-responses` is off).
pub(super) fn plan(
    st: &State,
    req: &Parts,
    target: &Uri,
    res: &ResponseParts,
    (t_req, t_res, delta): (SystemTime, SystemTime, Duration),
) -> Option<FillPlan> {
    if !st.cfg.store_post_responses
        || req.method != Method::POST
        || !res.status.is_success()
        || http_cache::first_match(&st.cfg.rules, target).is_some()
        || !http_cache::has_explicit_freshness(&res.headers)
        || !st.entries.health.may_store()
    {
        return None;
    }
    let location = res.headers.get(header::CONTENT_LOCATION)?.to_str().ok()?;
    let named = http_cache::resolve_reference(target, location.trim())?;
    let key = http_cache::cache_key(&Method::GET, target).ok()?;
    if http_cache::cache_key(&Method::GET, &named).ok()? != key {
        return None;
    }
    let mut as_get = req.clone();
    as_get.method = Method::GET;
    as_get.uri = target.clone();
    as_get.version = Version::HTTP_11;
    for h in [header::CONTENT_LENGTH, header::CONTENT_TYPE] {
        as_get.headers.remove(h);
    }
    http_cache::storability(&as_get, res, &st.lookup_opts).ok()?;
    FillPlan::new(
        &st.entries,
        &key,
        &as_get,
        res,
        t_req,
        t_res,
        delta,
        st.cfg.max_object_size,
    )
}
