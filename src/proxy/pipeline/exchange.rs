//! The one exchange with the origin, for a foreground fetch and a background refresh alike:
//! send, then merge a 304 into the stored entry, or admit a new response for a fill.
//!
//! Invariants: a 304 is merged and applied to the store only here (`Exchange::run`), a new
//! response is admitted (storability, store health, `FillPlan`) only here (`Exchange::admit`),
//! and every fill starts here (`Exchange::fill`); what the client is answered is the caller's.

use std::time::Duration;

use http::response;

use super::phase::Before;
use super::*;
use crate::proxy::origin::OriginBody;
use crate::proxy::service::build_upstream_request;
use crate::proxy::upstream::UpstreamError;

/// What one exchange needs of its request: borrowed from a foreground [`Ctx`] or from a
/// background [`Refresher`](super::refresh::Refresher).
pub(super) struct Exchange<'a> {
    pub entries: &'a Entries,
    pub upstream: &'a Upstream,
    pub opts: &'a LookupOptions,
    pub key: &'a CacheKey,
    /// The request as a GET to the absolute target (storability and merges are asked on it).
    pub lookup: &'a Parts,
    pub target: &'a Uri,
    pub pseudonym: &'a str,
    pub rule: Option<&'a Rule>,
    /// The buffered body of a rule-cached method.
    pub body: Option<&'a Bytes>,
    pub max_object_size: u64,
    pub body_timeout: Option<Duration>,
}

/// When an exchange happened: request sent, response received, and the time between (the
/// `delta` XFetch uses).
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub sent: SystemTime,
    pub received: SystemTime,
    pub delta: Duration,
}

/// A response from the origin, not yet answered or stored.
pub(super) struct Answer {
    pub parts: response::Parts,
    pub body: OriginBody,
    pub times: Times,
}

/// What a 304 did to the stored entry (already applied to the store).
pub(super) enum Verdict {
    /// The merged head was written (`true`) or the write failed (`false`).
    Stored(bool),
    /// The merge answers this client only; the entry is left as it was.
    ClientOnly(NotStorable),
    /// The merge may no longer be shared: the entry was removed.
    Removed(NotStorable),
}

/// A 304 merged into the stored entry it revalidated.
pub(super) struct Revalidated {
    /// The merged head (what the client is answered with) and its per-client fields.
    pub refreshed: Refreshed,
    pub verdict: Verdict,
    /// How the key's flight ends for waiters.
    pub outcome: Outcome,
    pub received: SystemTime,
}

impl Revalidated {
    /// The `Cache-Status` of a response answered from the merge.
    pub(super) fn status(&self, fwd: CacheStatus) -> CacheStatus {
        let fwd = fwd.with_fwd_status(304);
        match self.verdict {
            Verdict::Stored(stored) => fwd.stored(stored),
            Verdict::ClientOnly(reason) | Verdict::Removed(reason) => {
                fwd.with_detail(Detail::NotStorable(reason))
            }
        }
    }
}

/// What one exchange with the origin came to.
pub(super) enum Exchanged {
    /// No response (connect, TLS, timeout...), and when that was known.
    Unreachable(UpstreamError, SystemTime),
    /// A 5xx to a revalidation: the caller serves the stale entry (stale-if-error), keeps
    /// it, or passes the error on as a new response.
    ServerError(Answer),
    /// A 304 merged into the stored entry.
    Revalidated(Box<Revalidated>),
    /// A 304 whose validators do not select the stored entry.
    NotMatched,
    /// A new response (to a fetch, or a 200 to a revalidation).
    Response(Answer),
}

/// Whether a new response is stored, and why not.
pub(super) struct Admission {
    pub storable: Result<(), NotStorable>,
    /// Storable, but the store refuses writes (disk full, read-only).
    pub store_down: bool,
    /// Set when the response is stored while it streams.
    pub plan: Option<FillPlan>,
}

impl Admission {
    /// How the flight ends when nothing is stored: failures and per-request refusals let one
    /// waiter try again; a response nobody may share makes the key pass for a while.
    pub(super) fn unstored_outcome(&self, status: StatusCode) -> Outcome {
        let retry = self.store_down
            || status.is_server_error()
            || matches!(
                self.storable,
                Err(NotStorable::Status | NotStorable::Authorization)
            );
        if retry {
            Outcome::Abandoned
        } else {
            Outcome::Uncacheable
        }
    }

    /// Why nothing is stored (`Cache-Status` detail).
    pub(super) fn unstored_detail(&self) -> Detail {
        match self.storable {
            Err(reason) => Detail::NotStorable(reason),
            Ok(()) if self.store_down => Detail::from("store-unavailable"),
            Ok(()) => Detail::from("too-large"),
        }
    }
}

impl Exchange<'_> {
    /// Send `sent` (a revalidation of `stale` when given, else a plain fetch) and merge a 304
    /// into `stale`, applying the merge to the store.
    pub(super) async fn run(&self, sent: &Parts, stale: Option<(&[u8], &StoredHead)>) -> Exchanged {
        let body = match self.body {
            Some(b) => ProxyBody::full(b.clone()),
            None => ProxyBody::Empty,
        };
        let req = build_upstream_request(sent.into(), self.target, self.pseudonym, body);
        let t_req = SystemTime::now();
        let started = Instant::now();
        let res = self.upstream.send(req).await;
        let times = Times {
            sent: t_req,
            received: SystemTime::now(),
            delta: started.elapsed(),
        };
        let (parts, body) = match res {
            Ok(r) => r.into_parts(),
            Err(e) => return Exchanged::Unreachable(e, times.received),
        };
        let Some((row_key, head)) = stale else {
            return Exchanged::Response(Answer { parts, body, times });
        };
        if parts.status.is_server_error() {
            return Exchanged::ServerError(Answer { parts, body, times });
        }
        if parts.status != StatusCode::NOT_MODIFIED {
            return Exchanged::Response(Answer { parts, body, times });
        }
        let merged = merge_304(
            self.rule,
            self.lookup,
            head,
            &parts,
            (times.sent, times.received, times.delta),
            self.opts,
        );
        let (refreshed, verdict, outcome) = match merged {
            Merged304::NoMatch => return Exchanged::NotMatched,
            Merged304::Store(r) => {
                let stored = self
                    .entries
                    .refresh_head(self.key, row_key, r.head.clone())
                    .await;
                // RFC 9111 4.3.4: the other variants with this strong validator too
                // (pipeline/vary_etags.rs).
                let t = (times.sent, times.received, times.delta);
                self.refresh_siblings(row_key, head, &parts, t).await;
                let outcome = if stored {
                    Outcome::Stored
                } else {
                    Outcome::Abandoned
                };
                (r, Verdict::Stored(stored), outcome)
            }
            Merged304::ClientOnly(r, reason) => {
                (r, Verdict::ClientOnly(reason), Outcome::Abandoned)
            }
            Merged304::Remove(r, reason) => {
                self.entries.remove_row(self.key, row_key).await;
                (r, Verdict::Removed(reason), Outcome::Uncacheable)
            }
        };
        Exchanged::Revalidated(Box::new(Revalidated {
            refreshed,
            verdict,
            outcome,
            received: times.received,
        }))
    }

    /// Whether the new response `res` is stored: storability under the rule, the store's
    /// health (disk full or read-only: pass through, except one probe fill now and then),
    /// and a fill plan (`None` when too large).
    pub(super) fn admit(&self, res: &response::Parts, times: Times) -> Admission {
        let storable = http_cache::storability_under(self.rule, self.lookup, res, self.opts);
        let store_down = storable.is_ok() && !self.entries.health.may_store();
        let plan = match &storable {
            Ok(()) if store_down => None,
            Ok(()) => FillPlan::new(
                self.entries,
                self.key,
                self.lookup,
                res,
                times.sent,
                times.received,
                times.delta,
                self.max_object_size,
            )
            .map(|p| p.with_rule(self.rule)),
            Err(_) => None,
        };
        Admission {
            storable,
            store_down,
            plan,
        }
    }

    /// The fill of an admitted response: the origin body to the store (and to the client when
    /// `to_client`), then its waiters woken.
    pub(super) fn fill(
        &self,
        plan: FillPlan,
        body: impl Into<fill::Arrived> + Send + 'static,
        to_client: Option<fill::ToClient>,
        waiters: fill::Waiters,
    ) -> impl Future<Output = ()> + Send + 'static {
        let timeout = self.upstream.response_timeout();
        fill::run(plan, body, to_client, waiters, timeout, self.body_timeout)
    }
}

impl Ctx<'_> {
    /// This request's side of an [`Exchange`].
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            entries: &self.st.entries,
            upstream: &self.st.upstream,
            opts: &self.st.lookup_opts,
            key: &self.key,
            lookup: &self.lookup,
            target: &self.target,
            pseudonym: &self.st.cfg.pseudonym,
            rule: self.rule.as_ref(),
            body: self.body.as_ref(),
            max_object_size: self.st.cfg.max_object_size,
            body_timeout: self.st.cfg.body_timeout,
        }
    }

    /// Go to the origin: revalidate `stale` if given, otherwise fetch; store what may be stored.
    /// `before`: what the lookup found stored for the key.
    pub(super) async fn fetch(
        &self,
        stale: Option<(StaleEntry, Parts)>,
        permit: Option<Permit>,
        fwd: CacheStatus,
        lease: Option<Lease>,
        before: Before,
    ) -> Response<ProxyBody> {
        let x = self.exchange();
        let mut variants = vary_etags::Offered::default();
        let exchanged = match &stale {
            Some((entry, reval)) => x.run(reval, Some((&entry.row_key, &entry.head))).await,
            None => {
                let mut p = self.lookup.clone();
                for h in &http_cache::CONDITIONALS {
                    p.headers.remove(h);
                }
                // RFC 9111 4.3.1: a Vary miss asks with the stored variants' ETags
                // (pipeline/vary_etags.rs).
                variants = self.offer_variants(&fwd, &mut p.headers).await;
                x.run(&p, None).await
            }
        };
        let stale = stale.map(|(entry, _)| entry);
        match exchanged {
            Exchanged::Unreachable(e, t_res) => {
                let held = stale.is_some();
                if let Some(entry) = stale.filter(|s| within(s.stale_if_error_until, t_res)) {
                    if let Some(p) = permit {
                        p.finish(Outcome::Failed);
                    }
                    let cs = fwd.with_detail(Detail::StaleIfError);
                    return self.serve_stale(entry, t_res, cs);
                }
                if held {
                    self.st.stale_unrevalidated(&e, self.ruled(fwd))
                } else {
                    self.st.upstream_error(&e, self.ruled(fwd))
                }
            }
            Exchanged::ServerError(answer) => {
                let t_res = answer.times.received;
                match stale.filter(|s| within(s.stale_if_error_until, t_res)) {
                    Some(entry) => {
                        if let Some(p) = permit {
                            p.finish(Outcome::Failed);
                        }
                        let cs = fwd
                            .with_fwd_status(answer.parts.status.as_u16())
                            .with_detail(Detail::StaleIfError);
                        self.serve_stale(entry, t_res, cs)
                    }
                    None => {
                        let waiters = fill::Waiters {
                            client: None,
                            lease,
                            permit,
                        };
                        self.respond(&x, answer, waiters, fwd, before).await
                    }
                }
            }
            Exchanged::NotMatched => {
                // The 304 does not match what we hold: fetch the full response (which
                // replaces what we hold).
                Box::pin(self.fetch(None, permit, fwd, lease, Before::STORED)).await
            }
            Exchanged::Revalidated(r) => {
                if let Some(p) = permit {
                    p.finish(r.outcome);
                }
                let cs = r.status(fwd);
                let mut headers = served_headers(&r.refreshed.head, r.received);
                for (name, value) in &r.refreshed.client_only {
                    headers.append(name, value.clone());
                }
                let entry = stale.expect("a 304 is merged only into a stale entry");
                self.serve_stored(&r.refreshed.head, headers, entry.rec, cs)
            }
            Exchanged::Response(answer)
                if answer.parts.status == StatusCode::NOT_MODIFIED && !variants.is_empty() =>
            {
                let Answer { parts, times, .. } = answer;
                Box::pin(self.select_variant(variants, &parts, times, permit, fwd, lease)).await
            }
            Exchanged::Response(answer) => {
                let waiters = fill::Waiters {
                    client: None,
                    lease,
                    permit,
                };
                self.respond(&x, answer, waiters, fwd, before).await
            }
        }
    }

    /// Answer with a new response from the origin, stored while it streams when admitted.
    /// A response that replaces a stored one (`before`) reaches its client only after its
    /// commit: a whole body's response is returned then, a streamed body's last chunk and end
    /// are sent then (`fill::after_commit`, bounded by `response-timeout`).
    async fn respond(
        &self,
        x: &Exchange<'_>,
        answer: Answer,
        mut waiters: fill::Waiters,
        fwd: CacheStatus,
        before: Before,
    ) -> Response<ProxyBody> {
        let Answer {
            parts: mut rparts,
            body: rbody,
            times,
        } = answer;
        let t_res = times.received;
        let mut admission = x.admit(&rparts, times);
        let fwd = fwd.with_fwd_status(rparts.status.as_u16());
        let client_headers = {
            let mut h = rparts.headers.clone();
            self.st.prepare_response_headers(&mut h, rparts.version);
            h
        };
        let Some(plan) = admission.plan.take() else {
            if let Some(p) = waiters.permit {
                p.finish(admission.unstored_outcome(rparts.status));
            }
            drop(waiters.lease);
            let detail = admission.unstored_detail();
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
            Conditional::evaluate(&self.lookup.headers, status, &client_headers, t_res)
                .is_not_modified();
        // A body that arrived whole with its head (a small response) is answered as one
        // buffer, written with the head; the fill only stores it.
        let rbody = fill::Arrived::take(rbody, fill::READY_LIMIT);
        let fwd = rbody
            .size_at_head(expected, plan.max_object_size())
            .status(fwd);
        let (mut to_client, body) = if self.is_head || client_wants_304 {
            (None, ProxyBody::Empty)
        } else if let Some(whole) = rbody.whole(expected) {
            (None, ProxyBody::full(whole))
        } else {
            let (tx, body) = ProxyBody::channel(8, expected);
            let stall = self.st.cfg.idle_timeout;
            let to = fill::ToClient {
                body: tx,
                stall,
                end_after: None,
            };
            (Some(to), body)
        };
        let whole = to_client.is_none() && rbody.is_complete();
        // A HEAD or a 304 answered while the body still streams into the store does not
        // wait: its client has no body to end, and holding its head for the whole download
        // would cost more than the order is worth (README, "Deliberate deviations").
        let mut after = None;
        if (whole || to_client.is_some()) && before.replaced(&self.st.entries, &self.key) {
            let (signal, wait) = fill::after_commit(self.st.upstream.response_timeout());
            waiters.client = Some(signal);
            match to_client.as_mut() {
                Some(to) => to.end_after = Some(wait),
                None => after = Some(wait),
            }
        }
        if whole && !plan.is_shared() {
            // No task: straight to the store's group commit (fill::commit_arrived).
            fill::commit_arrived(plan, rbody, waiters, self.st.background.token());
        } else {
            self.st
                .background
                .spawn(x.fill(plan, rbody, to_client, waiters));
        }
        if let Some(wait) = after {
            wait.wait().await;
        }
        if client_wants_304 {
            return self.not_modified_response(client_headers, fwd);
        }
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = client_headers;
        self.st.stamp(&mut res, self.ruled(fwd));
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
            .upstream_request(self.client_head(), &self.target, self.request_body());
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

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
