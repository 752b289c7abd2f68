//! Range requests answered from a fresh, complete stored 200 (206, or 416 when
//! unsatisfiable); everything else goes to the origin uncached.
//!
//! Invariant: only one satisfiable byte range of a matching (`If-Range`) entry is served.

use super::*;
use crate::http_cache::{if_range_matches, parse_byte_range};

impl Ctx<'_> {
    /// A Range request: one byte range is served from a fresh, complete stored 200 (206, or
    /// 416 when unsatisfiable); anything else (several ranges, a stale or absent entry, an
    /// `If-Range` that does not match) goes to the origin and is not stored.
    pub(super) async fn range(&self) -> Response<ProxyBody> {
        let forward = || self.forward_uncached(CacheStatus::bypass(BypassReason::Range));
        let Some(spec) = parse_byte_range(&self.lookup.headers) else {
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
            // Partial content (RFC 9111 3.3, 3.4): pipeline/partial.rs.
            return self.range_from_parts(spec).await;
        };
        if head.status != StatusCode::OK || !if_range_matches(&self.lookup.headers, &head) {
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
