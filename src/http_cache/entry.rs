//! The stored head of a cached response and its versioned binary codec.
//! Invariant: every encoded head starts with a format version byte and a record tag, and
//! [`HeadRecord::decode`] is the one decoder; it checks every length and never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, request, response};

use super::decide::LookupOptions;
use super::directives::{CacheControl, parse_cache_control};
use super::freshness;
use super::headers::{parse_http_date, strip_hop_by_hop};
use super::key::{is_secret_field, vary_value};
use super::vary::Vary;

mod detach;
mod partial;
pub use partial::{PARTIAL_FORMAT_VERSION, PartialRecord};

/// Current format version, the first byte of every encoded [`HeadRecord`]. Version 3 is the
/// partial-content record ([`PartialRecord`], its own decoder in `entry/partial.rs`); heads and
/// Vary indexes are still written as 2, so builds that know 1 and 2 read them.
pub const HEAD_FORMAT_VERSION: u8 = 2;
const TAG_VARIANT: u8 = b'V';
const TAG_VARY_INDEX: u8 = b'I';
/// Stands in for the Authorization value: we keep its presence, never the credentials.
const AUTHORIZATION_PRESENT: &str = "present";

/// Why bytes from the store are not a head record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty head record")]
    Empty,
    /// A format version this build does not know.
    #[error("unknown head format version {0}")]
    UnknownVersion(u8),
    /// A record tag this build does not know, or not the one expected.
    #[error("unexpected head record tag {0}")]
    UnexpectedTag(u8),
    /// A length points past the end.
    #[error("truncated head record")]
    Truncated,
    /// Bytes left after the last field.
    #[error("trailing bytes after head record")]
    TrailingBytes,
    /// A field does not hold a valid value.
    #[error("invalid {0} in head record")]
    Invalid(&'static str),
}

/// Everything stored per response variant beside the body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHead {
    /// Request method (GET for everything cached today).
    pub method: Method,
    /// Absolute request URI.
    pub uri: Uri,
    /// The request headers caching needs: Cache-Control, Authorization presence (value
    /// redacted) and the Vary'd fields. Cookie only if Vary names it.
    pub request_headers: HeaderMap,
    /// Response status.
    pub status: StatusCode,
    /// Response headers, hop-by-hop fields removed.
    pub response_headers: HeaderMap,
    /// When the request went upstream.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
    /// Body length in bytes.
    pub body_len: u64,
    /// xxh3-64 of the body, computed by the proxy.
    pub body_digest: u64,
    /// Duration of the upstream fetch (XFetch's delta).
    pub fetch_delta: Duration,
    /// What the response varies on.
    pub vary: Vary,
    /// Freshness lifetime forced by a configuration rule, replacing what the origin said
    /// (format version 2; `None` when read from version 1).
    pub forced_ttl: Option<Duration>,
    /// Name of the rule that applied when the response was stored, if any (version 2).
    pub rule: Option<String>,
    /// Memo of values derived from the fields above (not stored). Heads are shared between
    /// requests by the proxy's in-memory front, so a hit computes them once, not per request.
    /// Code that changes the fields of an existing head must reset it (`Memo::default()`).
    pub memo: Memo,
}

/// Values derived from a [`StoredHead`], computed on first use.
#[derive(Debug, Clone, Default)]
pub struct Memo {
    lifetime: std::sync::OnceLock<(LookupKey, Duration)>,
    initial_age: std::sync::OnceLock<Duration>,
    cache_control: std::sync::OnceLock<CacheControl>,
}

/// The part of [`LookupOptions`] a freshness lifetime depends on.
type LookupKey = (u32, Option<Duration>);

impl PartialEq for Memo {
    /// Memos never make two heads differ.
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

/// What the store holds under a URL key: a full entry, or (when the response varies) an index
/// naming the Vary headers from which variant keys are built.
// Not boxed: a record is decoded once and moved out at once; a Box would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum HeadRecord {
    /// A full head (response without Vary, or one variant under a variant key).
    Variant(StoredHead),
    /// The response varies: look up `variant_key(url_key, vary.names(), req)`.
    VaryIndex(Vary),
}

/// Keeps only the request fields caching needs (see [`StoredHead::request_headers`]).
pub fn stored_request_headers(req: &HeaderMap, vary: &Vary) -> HeaderMap {
    let mut out = HeaderMap::new();
    for v in req.get_all(header::CACHE_CONTROL) {
        out.append(header::CACHE_CONTROL, v.clone());
    }
    if req.contains_key(header::AUTHORIZATION) {
        out.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(AUTHORIZATION_PRESENT),
        );
    }
    for name in vary.names() {
        if is_secret_field(name) {
            // Only the digest is kept (see `vary_value`): a Cookie never reaches the store.
            if let Some(d) = vary_value(req, name).and_then(|d| HeaderValue::from_bytes(&d).ok()) {
                out.insert(name.clone(), d);
            }
            continue;
        }
        for v in req.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    strip_hop_by_hop(&mut out);
    out
}

impl StoredHead {
    /// Builds the head of a fresh upstream exchange; the request URI must be absolute. The
    /// fields a qualified `private="..."` / `no-cache="..."` names are not kept.
    pub fn new(
        req: &request::Parts,
        res: &response::Parts,
        request_time: SystemTime,
        response_time: SystemTime,
        body_len: u64,
        body_digest: u64,
        fetch_delta: Duration,
    ) -> StoredHead {
        let vary = Vary::from_headers(&res.headers);
        let mut response_headers = res.headers.clone();
        strip_hop_by_hop(&mut response_headers);
        for name in super::decide::withheld_fields(&res.headers) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                response_headers.remove(name);
            }
        }
        StoredHead {
            method: req.method.clone(),
            uri: req.uri.clone(),
            request_headers: stored_request_headers(&req.headers, &vary),
            status: res.status,
            response_headers,
            request_time,
            response_time,
            body_len,
            body_digest,
            fetch_delta,
            vary,
            forced_ttl: None,
            rule: None,
            memo: Memo::default(),
        }
    }

    fn parts(&self, res_headers: HeaderMap) -> (request::Parts, response::Parts) {
        let (mut req, ()) = Request::new(()).into_parts();
        req.method = self.method.clone();
        req.uri = self.uri.clone();
        req.headers = self.request_headers.clone();
        let (mut res, ()) = Response::new(()).into_parts();
        res.status = self.status;
        res.headers = res_headers;
        (req, res)
    }

    /// The stored response as `response::Parts` (status and headers, no body), e.g. to ask
    /// [`storability`](super::storability) about it again after a 304 merge.
    pub fn response_parts(&self) -> response::Parts {
        self.parts(self.response_headers.clone()).1
    }

    /// Freshness lifetime (RFC 9111 4.2.1), see [`freshness::lifetime`]: a forced TTL wins;
    /// otherwise `s-maxage`, `max-age`, `Expires`, then the heuristic (capped by
    /// `opts.max_heuristic_ttl`). `proxy-revalidate` does not shorten it (it is applied as
    /// must-revalidate when stale).
    pub fn freshness_lifetime(&self, opts: &LookupOptions) -> Duration {
        if let Some(forced) = self.forced_ttl {
            return forced;
        }
        let key = (opts.heuristic_fraction.to_bits(), opts.max_heuristic_ttl);
        if let Some((k, v)) = self.memo.lifetime.get()
            && *k == key
        {
            return *v;
        }
        let v = freshness::lifetime(
            self.status,
            &self.response_headers,
            self.response_time,
            opts,
        );
        let _ = self.memo.lifetime.set((key, v));
        v
    }

    /// The response's `Cache-Control` directives, parsed once per head.
    pub fn cache_control(&self) -> &CacheControl {
        self.memo
            .cache_control
            .get_or_init(|| parse_cache_control(&self.response_headers))
    }

    /// `corrected_initial_age` of RFC 9111 4.2.3: the age when the response arrived.
    pub fn initial_age(&self) -> Duration {
        *self
            .memo
            .initial_age
            .get_or_init(|| self.compute_initial_age())
    }

    fn compute_initial_age(&self) -> Duration {
        // An invalid Age is ignored (RFC 9111 5.1): it counts as absent.
        let age_value = match freshness::age_value(&self.response_headers) {
            freshness::AgeValue::Valid(d) => d,
            _ => Duration::ZERO,
        };
        let apparent_age = self
            .response_headers
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .and_then(|date| self.response_time.duration_since(date).ok())
            .unwrap_or_default();
        let response_delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or_default();
        apparent_age.max(age_value + response_delay)
    }

    /// `current_age` of RFC 9111 4.2.3 at `now`.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        self.initial_age() + now.duration_since(self.response_time).unwrap_or_default()
    }

    /// When the entry stops being fresh (XFetch's `expire`, the store TTL base).
    pub fn fresh_until(&self, opts: &LookupOptions) -> SystemTime {
        let lifetime = self.freshness_lifetime(opts);
        let initial = self.initial_age();
        if lifetime >= initial {
            self.response_time
                .checked_add(lifetime - initial)
                .unwrap_or(self.response_time)
        } else {
            self.response_time
                .checked_sub(initial - lifetime)
                .unwrap_or(UNIX_EPOCH)
        }
    }

    /// Remaining freshness at `now` (zero when stale).
    pub fn ttl(&self, now: SystemTime, opts: &LookupOptions) -> Duration {
        self.freshness_lifetime(opts)
            .saturating_sub(self.current_age(now))
    }

    /// Encodes as a [`HeadRecord::Variant`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(HEAD_FORMAT_VERSION);
        out.push(TAG_VARIANT);
        self.encode_body(&mut out);
        out
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_bytes16(out, self.method.as_str().as_bytes());
        put_bytes32(out, self.uri.to_string().as_bytes());
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        put_time(out, self.request_time);
        put_time(out, self.response_time);
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.body_digest.to_le_bytes());
        put_duration(out, self.fetch_delta);
        put_bytes16(out, self.vary.encode().as_bytes());
        put_headers(out, &self.request_headers);
        put_headers(out, &self.response_headers);
        // Version 2 fields.
        match self.forced_ttl {
            Some(d) => {
                out.push(1);
                put_duration(out, d);
            }
            None => out.push(0),
        }
        put_bytes16(out, self.rule.as_deref().unwrap_or("").as_bytes());
    }

    /// Decodes bytes written by [`StoredHead::encode`]; a vary index is `UnexpectedTag`.
    pub fn decode(bytes: &[u8]) -> Result<StoredHead, DecodeError> {
        match HeadRecord::decode(bytes)? {
            HeadRecord::Variant(h) => Ok(h),
            HeadRecord::VaryIndex(_) => Err(DecodeError::UnexpectedTag(TAG_VARY_INDEX)),
        }
    }

    /// The stored strong or weak entity tag.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.response_headers.get(header::ETAG)
    }

    /// The stored Last-Modified.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.response_headers.get(header::LAST_MODIFIED)
    }
}

impl HeadRecord {
    /// Encodes with the version byte and the record's tag.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HeadRecord::Variant(h) => h.encode(),
            HeadRecord::VaryIndex(v) => {
                let mut out = vec![HEAD_FORMAT_VERSION, TAG_VARY_INDEX];
                put_bytes16(&mut out, v.encode().as_bytes());
                out
            }
        }
    }

    /// The one decoder of stored heads: matches on the version byte, then the tag.
    pub fn decode(bytes: &[u8]) -> Result<HeadRecord, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match version {
            1 | 2 => {
                let mut r = Reader { buf: rest };
                let rec = match r.u8()? {
                    TAG_VARIANT => HeadRecord::Variant(decode_head(&mut r, version)?),
                    TAG_VARY_INDEX => HeadRecord::VaryIndex(r.vary()?),
                    t => return Err(DecodeError::UnexpectedTag(t)),
                };
                if !r.buf.is_empty() {
                    return Err(DecodeError::TrailingBytes);
                }
                Ok(rec)
            }
            v => Err(DecodeError::UnknownVersion(v)),
        }
    }
}

/// A head as [`StoredHead::encode_body`] writes it in format `version` (1 lacks the rule fields).
fn decode_head(r: &mut Reader<'_>, version: u8) -> Result<StoredHead, DecodeError> {
    let mut head = decode_v1_head(r)?;
    if version >= 2 {
        head.forced_ttl = match r.u8()? {
            0 => None,
            1 => Some(r.duration()?),
            _ => return Err(DecodeError::Invalid("forced ttl flag")),
        };
        let rule = std::str::from_utf8(r.bytes16()?).map_err(|_| DecodeError::Invalid("rule"))?;
        head.rule = (!rule.is_empty()).then(|| rule.to_string());
    }
    Ok(head)
}

fn decode_v1_head(r: &mut Reader<'_>) -> Result<StoredHead, DecodeError> {
    let method = Method::from_bytes(r.bytes16()?).map_err(|_| DecodeError::Invalid("method"))?;
    let uri = Uri::try_from(r.bytes32()?).map_err(|_| DecodeError::Invalid("uri"))?;
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Invalid("status"))?;
    let request_time = r.time()?;
    let response_time = r.time()?;
    let body_len = r.u64()?;
    let body_digest = r.u64()?;
    let fetch_delta = r.duration()?;
    let vary = r.vary()?;
    let request_headers = r.headers()?;
    let response_headers = r.headers()?;
    Ok(StoredHead {
        method,
        uri,
        request_headers,
        status,
        response_headers,
        request_time,
        response_time,
        body_len,
        body_digest,
        fetch_delta,
        vary,
        forced_ttl: None,
        rule: None,
        memo: Memo::default(),
    })
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}
fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}
fn put_duration(out: &mut Vec<u8>, d: Duration) {
    out.extend_from_slice(&d.as_secs().to_le_bytes());
    out.extend_from_slice(&d.subsec_nanos().to_le_bytes());
}
fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    put_duration(out, t.duration_since(UNIX_EPOCH).unwrap_or_default());
}
fn put_headers(out: &mut Vec<u8>, h: &HeaderMap) {
    let count = h.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_le_bytes());
    for (name, value) in h.iter().take(count) {
        put_bytes16(out, name.as_str().as_bytes());
        put_bytes32(out, value.as_bytes());
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        self.take(n)
    }
    fn duration(&mut self) -> Result<Duration, DecodeError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid("duration"));
        }
        Ok(Duration::new(secs, nanos))
    }
    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let d = self.duration()?;
        UNIX_EPOCH
            .checked_add(d)
            .ok_or(DecodeError::Invalid("time"))
    }
    fn vary(&mut self) -> Result<Vary, DecodeError> {
        let s = std::str::from_utf8(self.bytes16()?).map_err(|_| DecodeError::Invalid("vary"))?;
        Ok(Vary::parse(s))
    }
    fn headers(&mut self) -> Result<HeaderMap, DecodeError> {
        let count = self.u16()? as usize;
        // Each field needs at least 6 bytes; never trust `count` for the allocation.
        let mut h = HeaderMap::with_capacity(count.min(self.buf.len() / 6).min(256));
        for _ in 0..count {
            let name = HeaderName::from_bytes(self.bytes16()?)
                .map_err(|_| DecodeError::Invalid("header name"))?;
            let value = HeaderValue::from_bytes(self.bytes32()?)
                .map_err(|_| DecodeError::Invalid("header value"))?;
            h.append(name, value);
        }
        Ok(h)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sample() -> StoredHead {
        let req = Request::get("https://example.org/a?b=1")
            .header("accept-encoding", "gzip")
            .header("cookie", "secret=1")
            .header("authorization", "Bearer xyz")
            .header("cache-control", "max-stale")
            .header("connection", "close")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let res = Response::builder()
            .status(200)
            .header("cache-control", "public, max-age=60")
            .header("vary", "Accept-Encoding")
            .header("etag", "\"v1\"")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        StoredHead::new(
            &req,
            &res,
            t,
            t + Duration::from_millis(250),
            1234,
            0xdead_beef,
            Duration::from_millis(250),
        )
    }

    #[test]
    fn new_filters_request_and_response_headers() {
        let h = sample();
        let names: Vec<_> = h.request_headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["cache-control", "authorization", "accept-encoding"]);
        assert_eq!(h.request_headers["authorization"], AUTHORIZATION_PRESENT);
        assert!(!h.response_headers.contains_key("transfer-encoding"));
        assert_eq!(h.response_headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.vary, Vary::parse("accept-encoding"));
    }

    #[test]
    fn round_trip_variant_and_index() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(&bytes[..2], &[HEAD_FORMAT_VERSION, TAG_VARIANT]);
        assert_eq!(StoredHead::decode(&bytes).unwrap(), h);
        for rec in [
            HeadRecord::VaryIndex(Vary::Any),
            HeadRecord::VaryIndex(h.vary.clone()),
            HeadRecord::VaryIndex(Vary::None),
            HeadRecord::Variant(h.clone()),
        ] {
            assert_eq!(HeadRecord::decode(&rec.encode()).unwrap(), rec);
        }
        let idx = HeadRecord::VaryIndex(Vary::Any).encode();
        assert_eq!(
            StoredHead::decode(&idx),
            Err(DecodeError::UnexpectedTag(TAG_VARY_INDEX))
        );
    }

    #[test]
    fn every_truncation_errors_without_panic() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(HeadRecord::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(HeadRecord::decode(&extra), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let good = sample().encode();
        for _ in 0..20_000 {
            let len = rng.usize(0..300);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() && !buf.is_empty() {
                buf[0] = HEAD_FORMAT_VERSION;
            }
            let _ = HeadRecord::decode(&buf);
            let mut m = good.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..m.len());
                m[i] = rng.u8(..);
            }
            let _ = HeadRecord::decode(&m);
        }
    }

    #[test]
    fn long_names_and_repeated_fields_survive() {
        let mut h = sample();
        let long = HeaderName::from_bytes("x".repeat(300).as_bytes()).unwrap();
        h.response_headers
            .append(long.clone(), HeaderValue::from_static("v"));
        h.response_headers
            .append("link", HeaderValue::from_static("<a>"));
        h.response_headers
            .append("link", HeaderValue::from_static("<b>"));
        let back = StoredHead::decode(&h.encode()).unwrap();
        assert_eq!(back.response_headers[&long], "v");
        let links: Vec<_> = back.response_headers.get_all("link").iter().collect();
        assert_eq!(links, ["<a>", "<b>"]);
        assert_eq!(back, h);
    }

    macro_rules! bad {
        ($name:ident, $bytes:expr, $err:expr) => {
            #[test]
            fn $name() {
                assert_eq!(HeadRecord::decode($bytes), Err($err));
            }
        };
    }
    bad!(bad_empty, &[], DecodeError::Empty);
    bad!(
        bad_version,
        &[3, TAG_VARIANT],
        DecodeError::UnknownVersion(3)
    );
    bad!(bad_tag, &[1, b'X'], DecodeError::UnexpectedTag(b'X'));
    bad!(
        bad_huge_length,
        &[1, TAG_VARY_INDEX, 0xff, 0xff, b'a'],
        DecodeError::Truncated
    );

    #[test]
    fn freshness_of_a_sample() {
        let h = sample();
        let opts = LookupOptions::default();
        assert_eq!(h.freshness_lifetime(&opts), Duration::from_secs(60));
        // response_delay 250ms counts into the age
        assert_eq!(h.initial_age(), Duration::from_millis(250));
        assert_eq!(h.ttl(h.response_time, &opts), Duration::from_millis(59_750));
    }
}
