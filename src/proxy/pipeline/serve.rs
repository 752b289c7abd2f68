//! Answering from stored responses: fresh hits, stale entries, 304s to conditionals, offline.
//!
//! Invariant: a stored entry is served with its true `Age`, `Via` and a `Content-Length` equal
//! to its verified body length; a file body is checked against its digest as it streams.

use super::*;

impl Ctx<'_> {
    /// Offline mode: never contact an origin. Any stored variant is served whatever its age
    /// (with its true `Age`); a miss is a 504 that says why.
    pub(super) async fn offline(&self) -> Response<ProxyBody> {
        match self.load().await {
            Loaded::Found {
                head, body: rec, ..
            } => {
                let now = SystemTime::now();
                let lifetime = head.freshness_lifetime(&self.st.lookup_opts);
                let age = head.current_age(now);
                let ttl = lifetime.as_secs() as i64 - age.as_secs() as i64;
                let cs = CacheStatus::hit(Some(ttl)).with_detail("offline");
                self.serve_stored(&head, served_headers(&head, now), rec, cs)
            }
            Loaded::Miss | Loaded::VaryMiss => self.st.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::uri_miss().with_detail("offline"),
                "hoard is offline and this URL is not in the cache\n",
            ),
        }
    }

    /// A hit response if `loaded` is an entry fresh enough for this request.
    pub(super) fn serve_if_fresh(&self, loaded: Loaded) -> Option<Response<ProxyBody>> {
        let Loaded::Found {
            head,
            body: rec,
            tier,
            ..
        } = loaded
        else {
            return None;
        };
        let now = SystemTime::now();
        match http_cache::lookup(&head, &self.lookup, now, &self.st.lookup_opts) {
            Lookup::Fresh { headers, ttl } => {
                let cs = hit_status(ttl, tier);
                Some(self.serve_stored(&head, headers, rec, cs))
            }
            Lookup::Stale { .. } => {
                let cs = self.collapsed(&head)?;
                Some(self.serve_stored(&head, served_headers(&head, now), rec, cs))
            }
            _ => None,
        }
    }

    pub(super) fn only_if_cached_miss(&self) -> Response<ProxyBody> {
        self.st.error(
            StatusCode::GATEWAY_TIMEOUT,
            CacheStatus::only_if_cached(),
            "only-if-cached: no suitable response is stored\n",
        )
    }

    /// Answer from a stored entry with the given response headers (Age already set).
    pub(super) fn serve_stored(
        &self,
        head: &StoredHead,
        mut headers: HeaderMap,
        rec: StoredBody,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        let status = head.status;
        // Stored heads never hold hop-by-hop fields: `StoredHead::new` and `refresh` drop them.
        let stored_len = headers.remove(header::CONTENT_LENGTH);
        if let Some(via) = &self.st.via {
            headers.append(header::VIA, via.clone());
        }
        let len = rec.len();
        if Conditional::evaluate(&self.lookup.headers, status, &headers, head.response_time)
            .is_not_modified()
        {
            return self.not_modified_response(headers, cs);
        }
        if !(status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED) {
            // The stored field when it already says the verified length, digit for digit.
            let mut buf = [0u8; 20];
            let value = match stored_len {
                Some(v) if v.as_bytes() == http_cache::decimal(len, &mut buf) => v,
                _ => HeaderValue::from(len),
            };
            headers.insert(header::CONTENT_LENGTH, value);
        }
        let body = if self.is_head || len == 0 {
            ProxyBody::Empty
        } else {
            stored_body(rec, head.body_digest, &self.st.entries)
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, self.ruled(cs));
        res
    }

    pub(super) fn not_modified_response(
        &self,
        mut headers: HeaderMap,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        let mut res = Response::new(ProxyBody::Empty);
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.headers_mut() = headers;
        self.st.stamp(&mut res, self.ruled(cs));
        res
    }

    /// Serve a stale entry as it is (stale-while-revalidate, stale-if-error, max-stale).
    pub(super) fn serve_stale(
        &self,
        e: StaleEntry,
        now: SystemTime,
        cs: CacheStatus,
    ) -> Response<ProxyBody> {
        let headers = served_headers(&e.head, now);
        self.serve_stored(&e.head, headers, e.rec, cs)
    }
}

/// The body to send for a stored entry; a file body is verified against `digest` as it
/// streams, and its row is removed if it turns out damaged.
pub(super) fn stored_body(body: StoredBody, digest: u64, entries: &Entries) -> ProxyBody {
    match body {
        StoredBody::Mem(b) => ProxyBody::full(b),
        StoredBody::Rec(r, row_key) => match r.value {
            Value::Inline(v) => ProxyBody::full(v),
            Value::File { .. } => {
                let len = r.len();
                let (store, hot) = (entries.store.clone(), entries.hot.clone());
                ProxyBody::from_reader(r.into_reader(), len, digest, move || {
                    tracing::warn!("stored body damaged: entry dropped");
                    let _ = store.delete(&row_key);
                    hot.remove(&row_key);
                })
            }
        },
    }
}

/// Stored response headers with `Age` for `now` (RFC 9111 4.2.3).
pub(super) fn served_headers(head: &StoredHead, now: SystemTime) -> HeaderMap {
    let mut h = head.response_headers.clone();
    http_cache::set_age(&mut h, head.current_age(now));
    h
}

/// `Cache-Status` of a fresh hit with `ttl` left, saying when it came from the shared tier.
pub(super) fn hit_status(ttl: std::time::Duration, tier: Tier) -> CacheStatus {
    let cs = CacheStatus::hit(Some(ttl.as_secs() as i64));
    match tier {
        Tier::Shared => cs.with_detail("shared"),
        Tier::Memory | Tier::Disk => cs,
    }
}
