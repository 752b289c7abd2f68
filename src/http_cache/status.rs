//! RFC 9211 `Cache-Status` values for hoard's responses and logs.
//! Invariant: every value renders as one valid sf-list item `hoard` with parameters.

use std::borrow::Cow;
use std::fmt;

use http::HeaderValue;

use super::decide::NotStorable;
use super::rules::Rule;

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
    /// The request was refused before reaching the cache (malformed, loop).
    Refused,
    /// The request carries forwarding fields the key does not cover (`forwarding-headers = pass`).
    Forwarding,
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
            BypassReason::Refused => "refused",
            BypassReason::Forwarding => "forwarding-header",
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

/// The forward part of `Cache-Status` (RFC 9211 section 2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored for the URL.
    UriMiss,
    /// Generic miss (used when the cache does not know more).
    Miss,
    /// Stored for the URL, not for this Vary variant.
    VaryMiss,
    /// Stored but stale.
    Stale,
    /// The request forced going forward.
    Request,
    /// The cache was not consulted.
    Bypass,
    /// The cache held part of the response and asked for the rest (RFC 9211 2.2).
    Partial,
}

impl Fwd {
    /// The RFC 9211 token.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::Miss => "miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
            Fwd::Partial => "partial",
        }
    }
}

/// Outcome of one request as seen by the cache (RFC 9211): `hoard; hit; ttl=59`,
/// `hoard; fwd=uri-miss; stored`, `hoard; fwd=stale; fwd-status=304; stored; ttl=60`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from cache without going forward.
    pub hit: bool,
    /// Why the request went forward, if it did.
    pub fwd: Option<Fwd>,
    /// Status the origin answered with, if known.
    pub fwd_status: Option<u16>,
    /// The response (or a refreshed head) was written to the store.
    pub stored: bool,
    /// Remaining freshness in seconds (negative when served stale).
    pub ttl: Option<i64>,
    /// Extra information.
    pub detail: Option<Detail>,
}

impl From<&'static str> for Detail {
    fn from(s: &'static str) -> Self {
        Detail::Other(Cow::Borrowed(s))
    }
}

impl From<NotStorable> for Detail {
    fn from(r: NotStorable) -> Self {
        Detail::NotStorable(r)
    }
}

impl CacheStatus {
    fn fwd(fwd: Fwd) -> Self {
        CacheStatus {
            hit: false,
            fwd: Some(fwd),
            fwd_status: None,
            stored: false,
            ttl: None,
            detail: None,
        }
    }

    /// `hoard; hit; ttl=N`.
    pub fn hit(ttl: Option<i64>) -> Self {
        CacheStatus {
            hit: true,
            fwd: None,
            ttl,
            ..Self::fwd(Fwd::Miss)
        }
    }

    /// `hoard; fwd=uri-miss`.
    pub fn uri_miss() -> Self {
        Self::fwd(Fwd::UriMiss)
    }

    /// `hoard; fwd=miss`.
    pub fn miss() -> Self {
        Self::fwd(Fwd::Miss)
    }

    /// `hoard; fwd=vary-miss`.
    pub fn vary_miss() -> Self {
        Self::fwd(Fwd::VaryMiss)
    }

    /// `hoard; fwd=partial`.
    pub fn partial() -> Self {
        Self::fwd(Fwd::Partial)
    }

    /// `hoard; fwd=stale`.
    pub fn stale() -> Self {
        Self::fwd(Fwd::Stale)
    }

    /// `hoard; fwd=request; detail=<reason>`.
    pub fn request(reason: RequestReason) -> Self {
        Self::fwd(Fwd::Request).with_detail(reason.as_str())
    }

    /// `hoard; fwd=bypass; detail=<reason>`.
    pub fn bypass(reason: BypassReason) -> Self {
        Self::fwd(Fwd::Bypass).with_detail(reason.as_str())
    }

    /// `hoard; detail=only-if-cached` (the proxy answers 504).
    pub fn only_if_cached() -> Self {
        CacheStatus {
            fwd: None,
            detail: Some(Detail::OnlyIfCached),
            ..Self::fwd(Fwd::Miss)
        }
    }

    /// Set the detail.
    pub fn with_detail(mut self, d: impl Into<Detail>) -> Self {
        self.detail = Some(d.into());
        self
    }

    /// Name the configuration rule that applied (`detail=rule=NAME`), unless a detail is set
    /// already: RFC 9211 allows one, and the most specific wins (`stale-if-error`,
    /// `not-storable` reasons, upstream errors over the rule).
    pub fn ruled(self, rule: Option<&Rule>) -> Self {
        match rule {
            Some(rule) if self.detail.is_none() => {
                self.with_detail(Detail::Other(rule.detail().into()))
            }
            _ => self,
        }
    }

    /// Set `fwd-status`.
    pub fn with_fwd_status(mut self, status: u16) -> Self {
        self.fwd_status = Some(status);
        self
    }

    /// Set `stored`.
    pub fn stored(mut self, stored: bool) -> Self {
        self.stored = stored;
        self
    }

    /// Set `ttl` in whole seconds.
    pub fn with_ttl(mut self, ttl: i64) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Short outcome name for logs and metrics: hit, uri-miss, miss, vary-miss, stale, request,
    /// bypass, or the detail (only-if-cached).
    pub fn as_str(&self) -> &str {
        match (self.hit, self.fwd) {
            (true, _) => "hit",
            (false, Some(f)) => f.as_str(),
            (false, None) => self.detail.as_ref().map_or("none", Detail::as_str),
        }
    }

    /// The `Cache-Status` field value.
    pub fn header_value(&self) -> HeaderValue {
        use std::fmt::Write;
        // One allocation, handed to the value without a copy (most values fit in 64 bytes).
        let mut s = String::with_capacity(64);
        let _ = write!(s, "{self}");
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
            .unwrap_or(HeaderValue::from_static(CACHE_NAME))
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

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CACHE_NAME)?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(s) = self.fwd_status {
            write!(f, "; fwd-status={s}")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if let Some(t) = self.ttl {
            write!(f, "; ttl={t}")?;
        }
        if let Some(d) = &self.detail {
            write_detail(f, d.as_str())?;
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
    cs!(hit, CacheStatus::hit(Some(59)), "hoard; hit; ttl=59");
    cs!(
        hit_sie,
        CacheStatus::hit(Some(-5)).with_detail(Detail::StaleIfError),
        "hoard; hit; ttl=-5; detail=stale-if-error"
    );
    cs!(
        miss_stored,
        CacheStatus::miss().stored(true),
        "hoard; fwd=miss; stored"
    );
    cs!(
        miss_private,
        CacheStatus::miss().with_detail(NotStorable::Private),
        "hoard; fwd=miss; detail=private"
    );
    cs!(uri_miss, CacheStatus::uri_miss(), "hoard; fwd=uri-miss");
    cs!(
        stale_304,
        CacheStatus::stale()
            .with_fwd_status(304)
            .stored(true)
            .with_ttl(60),
        "hoard; fwd=stale; fwd-status=304; stored; ttl=60"
    );
    cs!(
        stale_swr,
        CacheStatus::stale().with_detail(Detail::StaleWhileRevalidate),
        "hoard; fwd=stale; detail=stale-while-revalidate"
    );
    cs!(
        vary_miss,
        CacheStatus::vary_miss().stored(true),
        "hoard; fwd=vary-miss; stored"
    );
    cs!(
        request_no_cache,
        CacheStatus::request(RequestReason::NoCache),
        "hoard; fwd=request; detail=no-cache"
    );
    cs!(
        bypass_method,
        CacheStatus::bypass(BypassReason::Method),
        "hoard; fwd=bypass; detail=method"
    );
    cs!(
        only_if_cached,
        CacheStatus::only_if_cached(),
        "hoard; detail=only-if-cached"
    );
    cs!(
        detail_quoted,
        CacheStatus::hit(None).with_detail(Detail::Other("a \"b\" é".into())),
        "hoard; hit; detail=\"a \\\"b\\\" ?\""
    );
    cs!(
        detail_digit_start_quoted,
        CacheStatus::hit(None).with_detail(Detail::Other("5xx".into())),
        "hoard; hit; detail=\"5xx\""
    );

    fn rule() -> Rule {
        Rule::new("api", "*", "*").unwrap()
    }
    cs!(
        ruled_names_the_rule,
        CacheStatus::hit(Some(5)).ruled(Some(&rule())),
        "hoard; hit; ttl=5; detail=\"rule=api\""
    );
    cs!(
        ruled_keeps_a_more_specific_detail,
        CacheStatus::stale()
            .with_detail(Detail::StaleIfError)
            .ruled(Some(&rule())),
        "hoard; fwd=stale; detail=stale-if-error"
    );
    cs!(
        ruled_without_a_rule_is_unchanged,
        CacheStatus::miss().stored(true).ruled(None),
        "hoard; fwd=miss; stored"
    );

    #[test]
    fn log_names() {
        assert_eq!(CacheStatus::only_if_cached().as_str(), "only-if-cached");
        assert_eq!(CacheStatus::bypass(BypassReason::Tunnel).as_str(), "bypass");
        assert_eq!(RequestReason::MaxAge.as_str(), "max-age");
    }
}
