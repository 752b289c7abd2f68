//! Vary misses with stored variants (RFC 9111 4.3.1, 4.3.4): the request to the origin
//! carries the stored variants' strong entity tags in `If-None-Match`, and a 304 naming one of
//! them (strongly) selects that variant: it is refreshed, stored under this request's variant
//! key as well, and answers this request (200, or 304 when the client's own conditional
//! matches it).
//!
//! Invariant: only a strong validator selects a variant for a request it was not stored for.
//! A weak tag says "equivalent", and origins give the br and the gzip variant of one file the
//! same weak tag: selecting by it would serve a coding the request did not accept, and store
//! it for every later request like it. Weak tags are therefore not offered at all (the
//! origin's 304 to them could not be used, and a second, unconditional request would cost a
//! round trip more than the full response asked for at once).
//!
//! The client's own conditionals are never forwarded on a miss (the cache answers them from
//! the response it gets), so the origin sees only the stored variants' tags.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::response::Parts as ResponseParts;
use http::{Response, StatusCode};

use super::exchange::{Exchange, Times};
use super::{Ctx, Merged304, merge_304, served_headers};
use crate::coalesce::{Outcome, Permit};
use crate::entries::variants::StoredVariant;
use crate::entries::{Lease, Loaded};
use crate::http_cache::{self, CacheStatus, Fwd, StoredHead, Vary};
use crate::proxy::body::ProxyBody;

/// The variants offered to the origin, and the invalidation generation when they were.
#[derive(Debug, Default)]
pub(super) struct Offered {
    variants: Vec<StoredVariant>,
    generation: u64,
}

impl Offered {
    pub(super) fn is_empty(&self) -> bool {
        self.variants.is_empty()
    }
}

impl Ctx<'_> {
    /// On a Vary miss (`fwd`), put the stored variants' strong ETags in `headers`'
    /// `If-None-Match` (weak ones are never offered: see the module invariant).
    pub(super) async fn offer_variants(
        &self,
        fwd: &CacheStatus,
        headers: &mut HeaderMap,
    ) -> Offered {
        if fwd.fwd != Some(Fwd::VaryMiss) || self.rule.is_some() || self.uncoalesced() {
            return Offered::default();
        }
        let generation = self.st.entries.inv.generation();
        let mut variants = self.st.entries.variants_with_etags(&self.key).await;
        variants.retain(|v| http_cache::strong_etag(&v.head.response_headers).is_some());
        let mut tags: Vec<&str> = Vec::new();
        for t in variants.iter().filter_map(|v| v.head.etag()?.to_str().ok()) {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        match HeaderValue::from_str(&tags.join(", ")) {
            Ok(v) if !tags.is_empty() => {
                headers.insert(header::IF_NONE_MATCH, v);
                Offered {
                    variants,
                    generation,
                }
            }
            _ => Offered::default(),
        }
    }

    /// The origin answered 304 to the offered tags: serve and store the variant it selects,
    /// or (none selected, or the merge may not be stored for this request) fetch again
    /// without tags.
    pub(super) async fn select_variant(
        &self,
        offered: Offered,
        res: &ResponseParts,
        times: Times,
        permit: Option<Permit>,
        fwd: CacheStatus,
        lease: Option<Lease>,
    ) -> Response<ProxyBody> {
        let opts = &self.st.lookup_opts;
        let times = (times.sent, times.received, times.delta);
        for v in &offered.variants {
            // A weak, Last-Modified or missing validator in the 304 selects nothing here.
            if !http_cache::selects_for_another_request(&v.head, &res.headers) {
                continue;
            }
            let merged = merge_304(self.rule.as_ref(), &self.lookup, &v.head, res, times, opts);
            let r = match merged {
                Merged304::NoMatch => continue,
                Merged304::Store(r) if r.head.vary == v.head.vary => r,
                _ => break,
            };
            let to = http_cache::variant_key(&self.key, r.head.vary.names(), &self.lookup.headers);
            // The selected row keeps its own request fields; the rest of the merge is its too.
            let own = StoredHead {
                request_headers: v.head.request_headers.clone(),
                ..r.head.clone()
            };
            let entries = &self.st.entries;
            let stored = entries
                .add_variant(
                    &self.key,
                    &v.row_key,
                    Some(own),
                    to,
                    r.head.clone(),
                    offered.generation,
                )
                .await;
            if let (true, Loaded::Found { head, body, .. }) = (stored, self.load().await) {
                if let Some(p) = permit {
                    p.finish(Outcome::Stored);
                }
                let mut headers = served_headers(&head, times.1);
                for (name, value) in &r.client_only {
                    headers.append(name, value.clone());
                }
                let cs = fwd.with_fwd_status(304).stored(true);
                return self.serve_stored(&head, headers, body, cs);
            }
            break;
        }
        // Fetch the full response (a plain miss now: no tags are offered again). It joins
        // the URL's stored variants, under their Vary index: a replacing fill.
        let again = CacheStatus::miss().with_detail("vary-304-unselected");
        debug_assert_eq!(res.status, StatusCode::NOT_MODIFIED);
        let before = super::phase::Before::STORED;
        Box::pin(self.fetch(None, permit, again, lease, before)).await
    }
}

impl Exchange<'_> {
    /// RFC 9111 4.3.4: a 304 with a strong validator updates every stored variant of the URL
    /// with that validator, not only the one revalidated (`row_key`, already updated). Each
    /// keeps its own request fields.
    pub(super) async fn refresh_siblings(
        &self,
        row_key: &[u8],
        head: &StoredHead,
        res: &ResponseParts,
        times: (SystemTime, SystemTime, Duration),
    ) {
        let strong = http_cache::strong_etag(&res.headers);
        let (Some(strong), Vary::Headers(_)) = (strong, &head.vary) else {
            return;
        };
        for v in self.entries.variants_with_etags(self.key).await {
            if v.row_key == row_key || v.head.etag() != Some(strong) {
                continue;
            }
            let merged = merge_304(self.rule, self.lookup, &v.head, res, times, self.opts);
            if let Merged304::Store(r) = merged
                && r.head.vary == v.head.vary
            {
                let own = StoredHead {
                    request_headers: v.head.request_headers.clone(),
                    ..r.head
                };
                self.entries.refresh_head(self.key, &v.row_key, own).await;
            }
        }
    }
}
