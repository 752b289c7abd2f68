//! Range requests answered from a fresh, complete stored 200 (206, or 416 when
//! unsatisfiable); everything else goes to the origin uncached.
//!
//! Invariant: only one satisfiable byte range of a matching (`If-Range`) entry is served.

use super::*;

impl Ctx<'_> {
    /// A Range request: one byte range is served from a fresh, complete stored 200 (206, or
    /// 416 when unsatisfiable); anything else (several ranges, a stale or absent entry, an
    /// `If-Range` that does not match) goes to the origin and is not stored.
    pub(super) async fn range(&self) -> Response<ProxyBody> {
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
            return forward().await;
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
}

/// `req` without its `Range`: a range request updates the whole stored response.
pub(super) fn without_range(req: &Parts) -> Parts {
    let mut sent = req.clone();
    sent.headers.remove(header::RANGE);
    sent
}

/// One byte range of a `Range` header (RFC 9110 14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `first-last` (`last` absent: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// First and last byte positions within a body of `len` bytes; `None` if unsatisfiable.
    fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(first, _) if first >= len => None,
            ByteRange::From(first, last) => Some((first, last.map_or(len - 1, |l| l.min(len - 1)))),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(_) if len == 0 => None,
            ByteRange::Suffix(n) => Some((len.saturating_sub(n), len - 1)),
        }
    }
}

/// A `Range: bytes=...` header with exactly one valid range; anything else is `None` (the
/// request then goes to the origin).
pub(super) fn parse_byte_range(h: &HeaderMap) -> Option<ByteRange> {
    let mut values = h.get_all(header::RANGE).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (unit, spec) = v.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let num = |t: &str| -> Option<u64> {
        let t = t.trim();
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(ByteRange::Suffix(num(b)?)),
        (false, true) => Some(ByteRange::From(num(a)?, None)),
        (false, false) => {
            let (first, last) = (num(a)?, num(b)?);
            (first <= last).then_some(ByteRange::From(first, Some(last)))
        }
        (true, true) => None,
    }
}

/// `If-Range` (RFC 9110 13.1.5): absent, or a strong ETag equal to the stored one, or a date
/// equal to the stored Last-Modified.
pub(super) fn if_range_matches(req: &HeaderMap, head: &StoredHead) -> bool {
    let Some(v) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return head
            .etag()
            .and_then(|e| e.to_str().ok())
            .is_some_and(|e| e.trim() == v);
    }
    if v.starts_with("W/") {
        return false;
    }
    head.last_modified()
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.trim() == v)
}

#[cfg(test)]
mod range_tests {
    use super::*;

    fn range(v: &str) -> Option<ByteRange> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        parse_byte_range(&h)
    }

    #[test]
    fn parses_single_ranges_only() {
        assert_eq!(range("bytes=0-99"), Some(ByteRange::From(0, Some(99))));
        assert_eq!(range("bytes=100-"), Some(ByteRange::From(100, None)));
        assert_eq!(range("bytes=-10"), Some(ByteRange::Suffix(10)));
        assert_eq!(range("BYTES = 5-6"), Some(ByteRange::From(5, Some(6))));
        assert_eq!(range("bytes=0-1,5-6"), None);
        assert_eq!(range("bytes=9-1"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=-"), None);
        assert_eq!(range("bytes=a-b"), None);
    }

    #[test]
    fn resolves_against_the_length() {
        assert_eq!(ByteRange::From(0, Some(99)).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::From(50, None).resolve(50), None);
        assert_eq!(ByteRange::From(10, None).resolve(50), Some((10, 49)));
        assert_eq!(ByteRange::Suffix(10).resolve(50), Some((40, 49)));
        assert_eq!(ByteRange::Suffix(100).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::Suffix(0).resolve(50), None);
    }
}
