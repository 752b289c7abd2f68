//! A stored head with its own copies of the bytes it holds, for heads kept long (the memory
//! front). Invariant: a detached head shares no allocation with the request or response it
//! was built from.
//!
//! hyper parses a message head into slices of its connection's read buffer: the URI and each
//! header value are `Bytes` that keep the whole buffer (8 KiB at least, more after large
//! reads) alive. A head built from them and kept in the memory front held both connections'
//! buffers per entry: about 16 KiB more than the front counted for a 1 KiB response (issue 18).

use http::Uri;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::StoredHead;

impl StoredHead {
    /// This head, with the URI and every header name and value copied into allocations of
    /// their own (what [`crate::entries::hot::footprint`] counts).
    pub fn detached(&self) -> StoredHead {
        StoredHead {
            method: self.method.clone(),
            uri: detached_uri(&self.uri),
            request_headers: detached_map(&self.request_headers),
            status: self.status,
            response_headers: detached_map(&self.response_headers),
            request_time: self.request_time,
            response_time: self.response_time,
            body_len: self.body_len,
            body_digest: self.body_digest,
            fetch_delta: self.fetch_delta,
            vary: self.vary.clone(),
            forced_ttl: self.forced_ttl,
            rule: self.rule.clone(),
            memo: self.memo.clone(),
        }
    }
}

/// The URI parsed again from its text (one allocation of its own).
fn detached_uri(uri: &Uri) -> Uri {
    uri.to_string().parse().unwrap_or_else(|_| uri.clone())
}

/// The map rebuilt with copied names and values, sized to what it holds.
fn detached_map(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        let name = HeaderName::from_bytes(k.as_str().as_bytes()).unwrap_or_else(|_| k.clone());
        let mut value = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
        value.set_sensitive(v.is_sensitive());
        out.append(name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;

    /// Regression (issue 18): a head built from a parsed request and response kept their
    /// connections' read buffers alive through its URI and header values.
    #[test]
    fn a_detached_head_holds_no_slice_of_the_buffers_it_was_parsed_from() {
        // One buffer standing for hyper's read buffers: every part is a slice of it.
        let buf = Bytes::from(
            b"http://origin.test/a?b=1|max-age=60|text/plain|accept-encoding|gzip|x-custom|v"
                .repeat(64),
        );
        let part = |from: &str| {
            let s = std::str::from_utf8(&buf[..78]).unwrap();
            let i = s.find(from).unwrap();
            let end = s[i..].find('|').map_or(s.len(), |j| i + j);
            buf.slice(i..end)
        };
        let value = |from: &str| HeaderValue::from_maybe_shared(part(from)).unwrap();
        let mut req = http::Request::get(Uri::from_maybe_shared(part("http")).unwrap())
            .body(())
            .unwrap()
            .into_parts()
            .0;
        req.headers.insert("accept-encoding", value("gzip"));
        req.headers.insert("cache-control", value("max-age"));
        let mut res = http::Response::new(()).into_parts().0;
        res.headers.insert("cache-control", value("max-age"));
        res.headers.insert("content-type", value("text/plain"));
        res.headers.insert("vary", value("accept-encoding"));
        res.headers.insert(
            HeaderName::from_bytes(&part("x-custom")).unwrap(),
            value("v"),
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let head = StoredHead::new(&req, &res, t, t, 1, 2, Duration::ZERO);
        let kept = head.detached();
        assert!(!buf.is_unique(), "the parts share the buffer");
        drop((head, req, res));
        assert!(
            buf.is_unique(),
            "the detached head holds a slice of the buffer"
        );
        // And it is the same head.
        assert_eq!(kept.uri, "http://origin.test/a?b=1");
        assert_eq!(kept.response_headers["x-custom"], "v");
        assert_eq!(kept.response_headers["content-type"], "text/plain");
        assert_eq!(kept.request_headers["cache-control"], "max-age=60");
        assert_eq!(kept.request_headers["accept-encoding"], "gzip");
        assert_eq!(kept.response_headers.len(), 4);
    }
}
