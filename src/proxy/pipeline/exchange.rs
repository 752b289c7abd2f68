//! The exchange with the origin: send, then a 304 merge or a fill (or a pass-through).
//!
//! Invariant: an entry is only written through a `FillPlan` after storability said yes.

use super::*;

impl Ctx<'_> {
    /// Go to the origin: revalidate `stale` if given, otherwise fetch; store what may be stored.
    pub(super) async fn fetch(
        &self,
        stale: Option<(StaleEntry, Parts)>,
        permit: Option<Permit>,
        fwd: CacheStatus,
        lease: Option<Lease>,
    ) -> Response<ProxyBody> {
        let (stale, req) = match stale {
            Some((entry, reval)) => {
                let req = self
                    .st
                    .upstream_request(&reval, &self.target, self.request_body());
                (Some(entry), req)
            }
            None => {
                let mut p = self.lookup.clone();
                for h in &CONDITIONALS {
                    p.headers.remove(h);
                }
                (
                    None,
                    self.st
                        .upstream_request(&p, &self.target, self.request_body()),
                )
            }
        };
        let t_req = SystemTime::now();
        let started = Instant::now();
        let sent = self.st.upstream.send(req).await;
        let t_res = SystemTime::now();
        let delta = started.elapsed();
        let res = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(entry) = stale.filter(|s| within(s.stale_if_error_until, t_res)) {
                    if let Some(p) = permit {
                        p.finish(Outcome::Failed);
                    }
                    let cs = fwd.with_detail(Detail::StaleIfError);
                    return self.serve_stale(entry, t_res, cs);
                }
                return self.st.upstream_error(&e, self.ruled(fwd));
            }
        };
        let (mut rparts, rbody) = res.into_parts();
        if rparts.status.is_server_error()
            && let Some(entry) = stale
                .as_ref()
                .filter(|s| within(s.stale_if_error_until, t_res))
        {
            let _ = entry;
            let entry = stale.expect("checked above");
            if let Some(p) = permit {
                p.finish(Outcome::Failed);
            }
            let cs = fwd
                .with_fwd_status(rparts.status.as_u16())
                .with_detail(Detail::StaleIfError);
            return self.serve_stale(entry, t_res, cs);
        }
        if rparts.status == StatusCode::NOT_MODIFIED
            && let Some(entry) = stale
        {
            let merged = merge_304(
                self.rule.as_ref(),
                &self.lookup,
                &entry.head,
                &rparts,
                (t_req, t_res, delta),
                &self.st.lookup_opts,
            );
            let entries = &self.st.entries;
            let (refreshed, outcome, fwd) = match merged {
                Merged304::NoMatch => {
                    // The 304 does not match what we hold: fetch the full response.
                    return Box::pin(self.fetch(None, permit, fwd, lease)).await;
                }
                Merged304::Store(r) => {
                    let stored = entries
                        .refresh_head(&self.key, &entry.row_key, r.head.clone())
                        .await;
                    let outcome = if stored {
                        Outcome::Stored
                    } else {
                        Outcome::Abandoned
                    };
                    (r, outcome, fwd.with_fwd_status(304).stored(stored))
                }
                Merged304::ClientOnly(r, reason) => (
                    r,
                    Outcome::Abandoned,
                    fwd.with_fwd_status(304)
                        .with_detail(Detail::NotStorable(reason)),
                ),
                Merged304::Remove(r, reason) => {
                    entries.remove_row(&self.key, &entry.row_key).await;
                    (
                        r,
                        Outcome::Uncacheable,
                        fwd.with_fwd_status(304)
                            .with_detail(Detail::NotStorable(reason)),
                    )
                }
            };
            if let Some(p) = permit {
                p.finish(outcome);
            }
            let mut headers = served_headers(&refreshed.head, t_res);
            for (name, value) in &refreshed.client_only {
                headers.append(name, value.clone());
            }
            return self.serve_stored(&refreshed.head, headers, entry.rec, fwd);
        }
        // A new response.
        let storable = http_cache::storability_under(
            self.rule.as_ref(),
            &self.lookup,
            &rparts,
            &self.st.lookup_opts,
        );
        // Disk full or read-only: pass through, except one probe fill now and then.
        let store_down = storable.is_ok() && !self.st.entries.health.may_store();
        let plan = match &storable {
            Ok(()) if store_down => None,
            Ok(()) => FillPlan::new(
                &self.st.entries,
                &self.key,
                &self.lookup,
                &rparts,
                t_req,
                t_res,
                delta,
                self.st.cfg.max_object_size,
            )
            .map(|p| p.with_rule(self.rule.as_ref())),
            Err(_) => None,
        };
        let fwd = fwd.with_fwd_status(rparts.status.as_u16());
        let client_headers = {
            let mut h = rparts.headers.clone();
            self.st.prepare_response_headers(&mut h, rparts.version);
            h
        };
        let Some(plan) = plan else {
            if let Some(p) = permit {
                // Failures and per-request refusals: one waiter tries again. Responses nobody
                // may share: remember the key as pass for a while.
                let retry = store_down
                    || rparts.status.is_server_error()
                    || matches!(
                        storable,
                        Err(NotStorable::Status | NotStorable::Authorization)
                    );
                p.finish(if retry {
                    Outcome::Abandoned
                } else {
                    Outcome::Uncacheable
                });
            }
            drop(lease);
            let detail = match storable {
                Err(reason) => Detail::NotStorable(reason),
                Ok(()) if store_down => Detail::from("store-unavailable"),
                Ok(()) => Detail::from("too-large"),
            };
            rparts.headers = client_headers;
            rparts.version = Version::HTTP_11;
            let mut res = Response::from_parts(rparts, self.st.origin_body(rbody));
            if self.is_head {
                *res.body_mut() = ProxyBody::Empty;
            }
            self.st.stamp(&mut res, self.ruled(fwd.with_detail(detail)));
            return res;
        };
        let expected = content_length(&rparts.headers);
        let status = rparts.status;
        let client_wants_304 =
            Conditional::evaluate(&self.parts.headers, status, &client_headers, t_res)
                .is_not_modified();
        let (to_client, body) = if self.is_head || client_wants_304 {
            (None, ProxyBody::Empty)
        } else {
            let (tx, body) = ProxyBody::channel(8, expected);
            let stall = self.st.cfg.idle_timeout;
            (Some(fill::ToClient { body: tx, stall }), body)
        };
        let timeout = self.st.upstream.response_timeout();
        let total = self.st.cfg.body_timeout;
        self.st.background.spawn(fill::run(
            plan, rbody, to_client, permit, lease, timeout, total,
        ));
        if client_wants_304 {
            return self.not_modified_response(client_headers, fwd.stored(true));
        }
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = client_headers;
        self.st.stamp(&mut res, self.ruled(fwd.stored(true)));
        res
    }

    /// RFC 9111 4.3.5: a 200 to a HEAD this cache forwarded updates the stored GET response
    /// when the validators match (if it may still be shared), and removes it when not.
    pub(super) async fn freshen_with_head(&self, res: &http::response::Parts, t_req: SystemTime) {
        if self.rule.is_some() || res.status != StatusCode::OK {
            return;
        }
        let Loaded::Found { row_key, head, .. } = self.load().await else {
            return;
        };
        let entries = &self.st.entries;
        let t_res = SystemTime::now();
        match http_cache::freshen_with_head(&head, &self.lookup, res, t_req, t_res) {
            http_cache::HeadUpdate::Freshened(r) => {
                match Merged304::classify(None, &self.lookup, r, &self.st.lookup_opts) {
                    Merged304::Remove(..) => entries.remove_row(&self.key, &row_key).await,
                    Merged304::Store(r) => {
                        entries.refresh_head(&self.key, &row_key, r.head).await;
                    }
                    Merged304::ClientOnly(..) | Merged304::NoMatch => {}
                }
            }
            http_cache::HeadUpdate::Invalidate => entries.remove_row(&self.key, &row_key).await,
            http_cache::HeadUpdate::Ignore => {}
        }
    }

    /// Forward without touching the cache (Range requests and similar).
    pub(super) async fn forward_uncached(&self, cs: CacheStatus) -> Response<ProxyBody> {
        let req = self
            .st
            .upstream_request(&self.parts, &self.target, self.request_body());
        let t_req = SystemTime::now();
        match self.st.upstream.send(req).await {
            Err(e) => self.st.upstream_error(&e, self.ruled(cs)),
            Ok(res) => {
                let (mut rparts, rbody) = res.into_parts();
                if self.is_head {
                    self.freshen_with_head(&rparts, t_req).await;
                }
                self.st
                    .prepare_response_headers(&mut rparts.headers, rparts.version);
                rparts.version = Version::HTTP_11;
                let mut res = Response::from_parts(rparts, self.st.origin_body(rbody));
                self.st.stamp(&mut res, self.ruled(cs));
                res
            }
        }
    }
}

/// Conditional request headers a cache removes before filling (it answers them itself).
pub(super) const CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
