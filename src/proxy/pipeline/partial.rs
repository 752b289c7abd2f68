//! Range requests for URLs without a stored complete response (RFC 9111 3.3, 3.4): served
//! from the stored pieces when one piece holds the range and is fresh, otherwise sent to the
//! origin as the client sent it and the 206 stored (combined with the pieces when the same
//! representation), becoming the URL's stored 200 once complete.
//!
//! Invariant: a 206 is stored only when it is one byte range (`Content-Range` with the
//! complete length; multipart/byteranges is passed on, not stored), without `Vary`, with a
//! `Content-Length` equal to the range, storable as a GET response, and no rule applies.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::exchange::content_length;
use super::{Ctx, without_range};
use crate::entries::partial::{MAX_PARTIAL_LEN, Part, PartStored, Partial};
use crate::http_cache::{self, BypassReason, ByteRange, CacheStatus, Detail, Lookup, Vary};
use crate::proxy::body::ProxyBody;

impl Ctx<'_> {
    /// A single-range GET that found no complete stored response.
    pub(super) async fn range_from_parts(&self, spec: ByteRange) -> Response<ProxyBody> {
        if self.is_head || self.rule.is_some() || self.uncoalesced() {
            return self
                .forward_uncached(CacheStatus::bypass(BypassReason::Range))
                .await;
        }
        // Pieces are read and combined in memory: a bounded number at once, never waited for.
        let Some(permit) = self.st.entries.partial_permit() else {
            let cs = CacheStatus::uri_miss().with_detail("partial-busy");
            return self.forward_uncached(cs).await;
        };
        let stored = self.st.entries.load_partial(&self.key).await;
        if let Some(res) = stored.as_ref().and_then(|p| self.serve_part(p, spec)) {
            return res;
        }
        let fwd = match stored {
            Some(_) => CacheStatus::partial(),
            None => CacheStatus::uri_miss(),
        };
        drop(stored);
        let res = self.fetch_part(fwd).await;
        drop(permit);
        res
    }

    /// 206 from the stored pieces, when fresh, `If-Range` matches and one piece holds the range.
    fn serve_part(&self, p: &Partial, spec: ByteRange) -> Option<Response<ProxyBody>> {
        if !http_cache::if_range_matches(&self.lookup.headers, &p.head) {
            return None;
        }
        let now = SystemTime::now();
        let Lookup::Fresh { mut headers, ttl } =
            http_cache::lookup(&p.head, &self.lookup, now, &self.st.lookup_opts)
        else {
            return None;
        };
        let (first, last) = spec.resolve(p.complete_len)?;
        let body = p.slice(first, last)?;
        let cs = CacheStatus::hit(Some(ttl.as_secs() as i64)).with_detail("partial");
        http_cache::append_via(&mut headers, Version::HTTP_11, &self.st.cfg.pseudonym);
        if http_cache::not_modified(&self.lookup.headers, &headers, p.head.response_time) {
            return Some(self.not_modified_response(headers, cs));
        }
        Some(self.partial_response(headers, (first, last, p.complete_len), body, cs))
    }

    /// A 206 of `body` = bytes `first..=last` of `complete`.
    fn partial_response(
        &self,
        mut headers: http::HeaderMap,
        (first, last, complete): (u64, u64, u64),
        body: Bytes,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        let range = format!("bytes {first}-{last}/{complete}");
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("ascii"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut res = Response::new(ProxyBody::full(body));
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, cs);
        res
    }

    /// Send the range request on; store a 206 that may be stored.
    async fn fetch_part(&self, fwd: CacheStatus) -> Response<ProxyBody> {
        let generation = self.st.entries.inv.generation();
        let req = self
            .st
            .upstream_request(self.client_head(), &self.target, ProxyBody::Empty);
        let t_req = SystemTime::now();
        let started = Instant::now();
        let res = match self.st.upstream.send(req).await {
            Ok(r) => r,
            Err(e) => return self.st.upstream_error(&e, fwd),
        };
        let (t_res, delta) = (SystemTime::now(), started.elapsed());
        let (mut rparts, rbody) = res.into_parts();
        let fwd = fwd.with_fwd_status(rparts.status.as_u16());
        let range = http_cache::parse_content_range(&rparts.headers);
        let sent = without_range(&self.lookup);
        let refusal = match range {
            _ if rparts.status != StatusCode::PARTIAL_CONTENT => Some(Detail::from("not-partial")),
            Some(cr)
                if content_length(&rparts.headers) == Some(cr.last - cr.first + 1)
                    && cr.complete <= MAX_PARTIAL_LEN.min(self.st.cfg.max_object_size)
                    && Vary::from_headers(&rparts.headers) == Vary::None =>
            {
                let mut whole = rparts.clone();
                whole.status = StatusCode::OK;
                whole.headers.remove(header::CONTENT_RANGE);
                http_cache::storability_under(None, &sent, &whole, &self.st.lookup_opts)
                    .err()
                    .map(Detail::NotStorable)
            }
            _ => Some(Detail::from("range-not-stored")),
        };
        let origin_head = rparts.clone();
        self.st
            .prepare_response_headers(&mut rparts.headers, rparts.version);
        rparts.version = Version::HTTP_11;
        let (Some(cr), None) = (range, &refusal) else {
            let mut res = Response::from_parts(rparts, self.st.origin_body(rbody));
            let cs = match refusal {
                Some(d) => fwd.with_detail(d),
                None => fwd,
            };
            self.st.stamp(&mut res, cs);
            return res;
        };
        // Parts are at most MAX_PARTIAL_LEN: read whole, then stored and sent.
        let body = match self.st.origin_body(rbody).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let msg = format!("reading the origin's partial response failed: {e}\n");
                return self
                    .st
                    .error(StatusCode::BAD_GATEWAY, fwd.with_detail("body"), &msg);
            }
        };
        let part = Part {
            req: &sent,
            res: &origin_head,
            range: cr,
            body: body.clone(),
            times: (t_req, t_res, delta),
            generation,
        };
        let stored = self.st.entries.store_part(&self.key, part).await;
        let cs = match stored {
            PartStored::Partial => fwd.stored(true),
            PartStored::Complete => fwd.stored(true).with_detail("complete"),
            PartStored::Refused => fwd,
        };
        let mut res = Response::from_parts(rparts, ProxyBody::full(body));
        self.st.stamp(&mut res, cs);
        res
    }
}
