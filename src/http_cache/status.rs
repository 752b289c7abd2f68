//! RFC 9211 `Cache-Status` values for hoard's responses and logs.
//! Invariant: every value renders as one valid sf-list item `hoard` with parameters.

use std::borrow::Cow;
use std::fmt;

use http::HeaderValue;

use super::decide::NotStorable;

/// The cache identifier in `Cache-Status`.
pub const CACHE_NAME: &str = "hoard";

/// Why the request itself forced going forward although a fresh entry existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestReason {
    /// `Cache-Control: no-cache` or `Pragma: no-cache`.
    NoCache,
    /// Request `max-age` smaller than the entry's age (e.g. `max-age=0`).
    MaxAge,
    /// Request `min-fresh` larger than the remaining freshness.
    MinFresh,
}

impl RequestReason {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestReason::NoCache => "no-cache",
            RequestReason::MaxAge => "max-age",
            RequestReason::MinFresh => "min-fresh",
        }
    }
}

/// Why the cache was not consulted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Method other than GET/HEAD.
    Method,
    /// CONNECT tunnel without interception.
    Tunnel,
    /// Range request.
    Range,
    /// Upgrade (WebSocket, h2c).
    Upgrade,
    /// No cache key (unsupported scheme, no host).
    Key,
    /// Caching disabled by configuration.
    Disabled,
}

impl BypassReason {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::Tunnel => "tunnel",
            BypassReason::Range => "range",
            BypassReason::Upgrade => "upgrade",
            BypassReason::Key => "key",
            BypassReason::Disabled => "disabled",
        }
    }
}

/// Extra information for the `detail` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// Served stale during background revalidation (RFC 5861 3).
    StaleWhileRevalidate,
    /// Served stale because the origin failed (RFC 5861 4).
    StaleIfError,
    /// Client asked for only-if-cached and nothing usable was cached.
    OnlyIfCached,
    /// The response was not stored, and why.
    NotStorable(NotStorable),
    /// Free text (rendered as token or quoted string).
    Other(Cow<'static, str>),
}

impl Detail {
    /// Text of the detail.
    pub fn as_str(&self) -> &str {
        match self {
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleIfError => "stale-if-error",
            Detail::OnlyIfCached => "only-if-cached",
            Detail::NotStorable(r) => r.as_str(),
            Detail::Other(s) => s,
        }
    }
}

/// Outcome of one request as seen by the cache (RFC 9211).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache without going forward: `hoard; hit; ttl=59`.
    Hit {
        /// Remaining freshness in seconds (negative when served stale).
        ttl: Option<i64>,
        /// e.g. stale-if-error.
        detail: Option<Detail>,
    },
    /// No entry: `hoard; fwd=uri-miss` (hoard's plain miss, RFC 9211 "uri-miss").
    UriMiss {
        /// Response stored.
        stored: bool,
        /// TTL of the stored response.
        ttl: Option<i64>,
        /// Why not stored, etc.
        detail: Option<Detail>,
    },
    /// Generic miss: `hoard; fwd=miss; stored`.
    Miss {
        /// Response stored.
        stored: bool,
        /// TTL of the stored response.
        ttl: Option<i64>,
        /// Why not stored, etc.
        detail: Option<Detail>,
    },
    /// Entries exist for the URL but none for this Vary variant: `hoard; fwd=vary-miss; stored`.
    VaryMiss {
        /// Response stored.
        stored: bool,
        /// TTL of the stored response.
        ttl: Option<i64>,
    },
    /// Entry was stale: `hoard; fwd=stale; fwd-status=304; stored; ttl=60`, or served stale while
    /// revalidating: `hoard; fwd=stale; detail=stale-while-revalidate`.
    Stale {
        /// Status the origin answered with, if known.
        fwd_status: Option<u16>,
        /// Entry written (new or refreshed head).
        stored: bool,
        /// TTL after the exchange.
        ttl: Option<i64>,
        /// e.g. stale-while-revalidate.
        detail: Option<Detail>,
    },
    /// The request forced going forward: `hoard; fwd=request; detail=no-cache`.
    Request {
        /// Which request directive.
        reason: RequestReason,
        /// Status the origin answered with, if known.
        fwd_status: Option<u16>,
        /// Entry written.
        stored: bool,
        /// TTL after the exchange.
        ttl: Option<i64>,
    },
    /// Cache not consulted: `hoard; fwd=bypass; detail=method`.
    Bypass(BypassReason),
    /// only-if-cached and nothing usable (the proxy answers 504): `hoard; detail=only-if-cached`.
    OnlyIfCached,
}

impl CacheStatus {
    /// Short outcome name for logs: hit, uri-miss, miss, vary-miss, stale, request, bypass,
    /// only-if-cached.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "hit",
            CacheStatus::UriMiss { .. } => "uri-miss",
            CacheStatus::Miss { .. } => "miss",
            CacheStatus::VaryMiss { .. } => "vary-miss",
            CacheStatus::Stale { .. } => "stale",
            CacheStatus::Request { .. } => "request",
            CacheStatus::Bypass(_) => "bypass",
            CacheStatus::OnlyIfCached => "only-if-cached",
        }
    }

    /// The `Cache-Status` field value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.to_string()).unwrap_or(HeaderValue::from_static(CACHE_NAME))
    }
}

fn is_sf_token(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'*')
        && b.all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c))
}

fn write_detail(f: &mut fmt::Formatter<'_>, d: &str) -> fmt::Result {
    if is_sf_token(d) {
        return write!(f, "; detail={d}");
    }
    f.write_str("; detail=\"")?;
    for c in d.chars() {
        match c {
            '"' | '\\' => write!(f, "\\{c}")?,
            ' '..='~' => write!(f, "{c}")?,
            _ => f.write_str("?")?,
        }
    }
    f.write_str("\"")
}

/// hit, fwd, fwd-status, stored, ttl, detail.
type Params<'a> = (
    bool,
    Option<&'a str>,
    Option<u16>,
    bool,
    Option<i64>,
    Option<&'a str>,
);

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CACHE_NAME)?;
        let (hit, fwd, fwd_status, stored, ttl, detail): Params<'_> = match self {
            CacheStatus::Hit { ttl, detail } => (
                true,
                None,
                None,
                false,
                *ttl,
                detail.as_ref().map(Detail::as_str),
            ),
            CacheStatus::UriMiss {
                stored,
                ttl,
                detail,
            } => (
                false,
                Some("uri-miss"),
                None,
                *stored,
                *ttl,
                detail.as_ref().map(Detail::as_str),
            ),
            CacheStatus::Miss {
                stored,
                ttl,
                detail,
            } => (
                false,
                Some("miss"),
                None,
                *stored,
                *ttl,
                detail.as_ref().map(Detail::as_str),
            ),
            CacheStatus::VaryMiss { stored, ttl } => {
                (false, Some("vary-miss"), None, *stored, *ttl, None)
            }
            CacheStatus::Stale {
                fwd_status,
                stored,
                ttl,
                detail,
            } => (
                false,
                Some("stale"),
                *fwd_status,
                *stored,
                *ttl,
                detail.as_ref().map(Detail::as_str),
            ),
            CacheStatus::Request {
                reason,
                fwd_status,
                stored,
                ttl,
            } => (
                false,
                Some("request"),
                *fwd_status,
                *stored,
                *ttl,
                Some(reason.as_str()),
            ),
            CacheStatus::Bypass(r) => (false, Some("bypass"), None, false, None, Some(r.as_str())),
            CacheStatus::OnlyIfCached => (false, None, None, false, None, Some("only-if-cached")),
        };
        if hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = fwd {
            write!(f, "; fwd={fwd}")?;
        }
        if let Some(s) = fwd_status {
            write!(f, "; fwd-status={s}")?;
        }
        if stored {
            f.write_str("; stored")?;
        }
        if let Some(t) = ttl {
            write!(f, "; ttl={t}")?;
        }
        if let Some(d) = detail {
            write_detail(f, d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! cs {
        ($name:ident, $status:expr, $text:expr) => {
            #[test]
            fn $name() {
                let s = $status;
                assert_eq!(s.to_string(), $text);
                assert_eq!(s.header_value(), $text);
            }
        };
    }
    cs!(
        hit,
        CacheStatus::Hit {
            ttl: Some(59),
            detail: None
        },
        "hoard; hit; ttl=59"
    );
    cs!(
        hit_sie,
        CacheStatus::Hit {
            ttl: Some(-5),
            detail: Some(Detail::StaleIfError)
        },
        "hoard; hit; ttl=-5; detail=stale-if-error"
    );
    cs!(
        miss_stored,
        CacheStatus::Miss {
            stored: true,
            ttl: None,
            detail: None
        },
        "hoard; fwd=miss; stored"
    );
    cs!(
        miss_private,
        CacheStatus::Miss {
            stored: false,
            ttl: None,
            detail: Some(Detail::NotStorable(NotStorable::Private))
        },
        "hoard; fwd=miss; detail=private"
    );
    cs!(
        uri_miss,
        CacheStatus::UriMiss {
            stored: false,
            ttl: None,
            detail: None
        },
        "hoard; fwd=uri-miss"
    );
    cs!(
        stale_304,
        CacheStatus::Stale {
            fwd_status: Some(304),
            stored: true,
            ttl: Some(60),
            detail: None
        },
        "hoard; fwd=stale; fwd-status=304; stored; ttl=60"
    );
    cs!(
        stale_swr,
        CacheStatus::Stale {
            fwd_status: None,
            stored: false,
            ttl: None,
            detail: Some(Detail::StaleWhileRevalidate)
        },
        "hoard; fwd=stale; detail=stale-while-revalidate"
    );
    cs!(
        vary_miss,
        CacheStatus::VaryMiss {
            stored: true,
            ttl: None
        },
        "hoard; fwd=vary-miss; stored"
    );
    cs!(
        request_no_cache,
        CacheStatus::Request {
            reason: RequestReason::NoCache,
            fwd_status: None,
            stored: false,
            ttl: None
        },
        "hoard; fwd=request; detail=no-cache"
    );
    cs!(
        bypass_method,
        CacheStatus::Bypass(BypassReason::Method),
        "hoard; fwd=bypass; detail=method"
    );
    cs!(
        only_if_cached,
        CacheStatus::OnlyIfCached,
        "hoard; detail=only-if-cached"
    );
    cs!(
        detail_quoted,
        CacheStatus::Hit {
            ttl: None,
            detail: Some(Detail::Other("a \"b\" é".into()))
        },
        "hoard; hit; detail=\"a \\\"b\\\" ?\""
    );
    cs!(
        detail_digit_start_quoted,
        CacheStatus::Hit {
            ttl: None,
            detail: Some(Detail::Other("5xx".into()))
        },
        "hoard; hit; detail=\"5xx\""
    );

    #[test]
    fn log_names() {
        assert_eq!(CacheStatus::OnlyIfCached.as_str(), "only-if-cached");
        assert_eq!(CacheStatus::Bypass(BypassReason::Tunnel).as_str(), "bypass");
        assert_eq!(RequestReason::MaxAge.as_str(), "max-age");
    }
}
