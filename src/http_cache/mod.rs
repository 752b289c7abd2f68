//! Pure HTTP caching logic (RFC 9111, RFC 5861, RFC 9211). Does no I/O; `now` is always a parameter.
//!
//! Code map: [`key`](cache_key) builds store keys, `vary` models `Vary`, `directives` parses
//! Cache-Control (+ RFC 5861), `freshness` computes lifetimes and reads `Age`, `entry` is the
//! versioned stored head, `range` parses ranges and combines partial content, `decide` holds
//! the lookup, storability and 304-merge decisions, `conditional` the client conditionals the
//! cache answers, `headers` rewrites header
//! maps, `status` renders `Cache-Status`.

mod conditional;
mod decide;
mod directives;
mod entry;
mod freshness;
mod headers;
mod key;
mod range;
mod rules;
mod status;
mod vary;

pub use conditional::{Conditional, Validator, not_modified};
pub use decide::{
    CONDITIONALS, DropReason, HeadUpdate, Lookup, LookupOptions, NotStorable, RefreshField,
    Refreshed, background_request, forced_by_request, freshen_with_head, invalidation_targets,
    lookup, only_if_cached, per_client_fields, refresh, refresh_field, request_no_cache,
    resolve_reference, revalidation_request, selects_for_another_request, storability,
    storability_forced, strip_unshared_cookies, strong_etag, withheld_fields, xfetch_due,
};
pub use directives::{
    CacheControl, Delta, Freshness5861, parse_cache_control, request_stale_if_error,
};
pub use entry::{
    DecodeError, HEAD_FORMAT_VERSION, HeadRecord, Memo, PARTIAL_FORMAT_VERSION, PartialRecord,
    StoredHead, stored_request_headers,
};
pub use freshness::{AgeValue, HEURISTIC_STATUSES, age_value, has_explicit_freshness};
pub use headers::{
    FORWARDING, FORWARDING_PREFIX, ForwardingHeaders, HOP_BY_HOP, Normalized, append_via, decimal,
    fmt_http_date, normalize_request, parse_http_date, seconds_value, set_age, strip_hop_by_hop,
    via_value,
};
pub use key::{
    CacheKey, KeyError, SECRET_DIGEST_PREFIX, absolute_uri, cache_key, is_secret_field,
    normalize_uri, normalized_header, variant_key, vary_value,
};
pub use range::{
    ByteRange, ContentRange, Piece, Pieces, Source, if_range_matches, parse_byte_range,
    parse_content_range, same_representation,
};
pub use rules::{IgnoreQuery, Pattern, Rule, RuleError, first_match, storability_under};
pub use status::{BypassReason, CACHE_NAME, CacheStatus, Detail, Fwd, RequestReason};
pub use vary::Vary;

/// The layer's error: everything in `http_cache` that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request target yields no cache key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored head does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Helpers for this layer's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map from name/value pairs, in order (repeated names append).
    pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }
}
