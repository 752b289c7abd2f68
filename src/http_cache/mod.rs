//! Pure HTTP caching logic (RFC 9111, RFC 5861, RFC 9211). Does no I/O; `now` is always a parameter.

mod directives;
mod headers;
mod key;
mod vary;

pub use directives::{CacheControl, Freshness5861, parse_cache_control, request_stale_if_error};
pub use headers::{
    HOP_BY_HOP, append_via, fmt_http_date, parse_http_date, set_age, strip_hop_by_hop,
};
pub use key::{
    CacheKey, KeyError, absolute_uri, cache_key, normalize_uri, normalized_header, variant_key,
};
pub use vary::Vary;
