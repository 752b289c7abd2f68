//! Requests the cache does not answer: passed through to the origin (unsafe methods
//! invalidate the URIs the response names), `PURGE`, and the upstream request and response
//! header rewriting shared with the pipeline.
//!
//! Invariant: an unsafe method invalidates only after a 2xx/3xx origin response; hop-by-hop
//! fields never cross the proxy in either direction.

use std::net::SocketAddr;

use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};

use crate::http_cache::{self, BypassReason, CacheStatus};
use crate::proxy::body::ProxyBody;
use crate::proxy::origin::OriginBody;
use crate::proxy::{fill, pipeline, post_store};

use super::State;

impl State {
    /// `PURGE <url>` from an allowed client: remove every stored variant of the URL.
    /// 200 when something was removed, 404 when nothing was stored, 403 for other clients.
    pub(super) async fn purge(&self, peer: SocketAddr, target: Uri) -> Response<ProxyBody> {
        let cs = || CacheStatus::bypass(BypassReason::Method).with_detail("purge");
        if !self.cfg.purge_allow.iter().any(|n| n.contains(peer.ip())) {
            return self.error(
                StatusCode::FORBIDDEN,
                cs(),
                "PURGE is not allowed from this address (see purge-allow)\n",
            );
        }
        match pipeline::invalidate(self, vec![target]).await {
            0 => self.error(StatusCode::NOT_FOUND, cs(), "not cached\n"),
            n => self.error(StatusCode::OK, cs(), &format!("purged {n} entries\n")),
        }
    }

    /// Forward a request the cache does not answer; unsafe methods invalidate on success.
    pub(super) async fn pass_through(
        &self,
        req: Request<ProxyBody>,
        target: Uri,
        reason: BypassReason,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let unsafe_method = !matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let up = self.upstream_request((&parts).into(), &target, body);
        let (t_req, started) = (std::time::SystemTime::now(), std::time::Instant::now());
        let res = match self.upstream.send(up).await {
            Ok(r) => r,
            Err(e) => return self.upstream_error(&e, CacheStatus::bypass(reason)),
        };
        let times = (std::time::SystemTime::now(), started.elapsed());
        let (mut rparts, rbody) = res.into_parts();
        if unsafe_method {
            let targets = http_cache::invalidation_targets(
                &target,
                &parts.method,
                rparts.status,
                &rparts.headers,
            );
            if !targets.is_empty() {
                pipeline::invalidate(self, targets).await;
            }
        }
        // RFC 9110 9.3.3: a POST response naming its own URI may be that URI's GET response.
        let plan = post_store::plan(self, &parts, &target, &rparts, (t_req, times.0, times.1));
        let cs = CacheStatus::bypass(reason);
        self.prepare_response_headers(&mut rparts.headers, rparts.version);
        rparts.version = Version::HTTP_11;
        let Some(plan) = plan else {
            let mut res = Response::from_parts(rparts, self.origin_body(rbody));
            self.stamp(&mut res, cs);
            return res;
        };
        let (tx, body) = ProxyBody::channel(8, plan.expected_len());
        // `stored` only when the length is known to fit (`fill::SizeAtHead`); a body of
        // unknown length may still end over the limit.
        let known = plan.expected_len().is_some();
        // The unsafe method invalidated the URI above (committed before this answer): the
        // fill replaces nothing, so the client's end does not wait for its commit.
        let to_client = fill::ToClient {
            body: tx,
            stall: self.cfg.idle_timeout,
            end_after: None,
        };
        let (timeout, total) = (self.upstream.response_timeout(), self.cfg.body_timeout);
        self.background.spawn(fill::run(
            plan,
            rbody,
            Some(to_client),
            fill::Waiters::default(),
            timeout,
            total,
        ));
        let mut res = Response::from_parts(rparts, body);
        let cs = cs.with_fwd_status(res.status().as_u16()).stored(known);
        self.stamp(&mut res, cs.with_detail("content-location"));
        res
    }

    /// The request to send upstream: hop-by-hop headers removed, `Via` added, `Host` from the target.
    pub fn upstream_request(
        &self,
        head: RequestHead<'_>,
        target: &Uri,
        body: ProxyBody,
    ) -> Request<ProxyBody> {
        build_upstream_request(head, target, &self.cfg.pseudonym, body)
    }

    /// An origin response body streamed to the client under the chunk and body timeouts.
    pub fn origin_body(&self, body: OriginBody) -> ProxyBody {
        ProxyBody::origin(body, self.cfg.response_timeout, self.cfg.body_timeout)
    }

    /// Strip hop-by-hop headers of an upstream response and add `Via`.
    pub fn prepare_response_headers(&self, headers: &mut http::HeaderMap, version: Version) {
        http_cache::strip_hop_by_hop(headers);
        http_cache::append_via(headers, version, &self.cfg.pseudonym);
    }
}

/// What an upstream request is built from: a request head, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub version: http::Version,
    pub headers: &'a http::HeaderMap,
}

impl<'a> From<&'a http::request::Parts> for RequestHead<'a> {
    fn from(p: &'a http::request::Parts) -> Self {
        RequestHead {
            method: &p.method,
            version: p.version,
            headers: &p.headers,
        }
    }
}

/// The request to send upstream: hop-by-hop headers removed, `Via` added, `Host` from the target.
pub fn build_upstream_request(
    head: RequestHead<'_>,
    target: &Uri,
    pseudonym: &str,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let mut headers = head.headers.clone();
    http_cache::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if http_body::Body::is_end_stream(&body) {
        // No body goes upstream (a GET's or HEAD's body is never forwarded): the framing the
        // client sent for its own body would make the origin wait for bytes that never come,
        // or read the next request on this pooled connection as them (a desync that lets
        // one client choose another's response).
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::EXPECT);
    }
    http_cache::append_via(&mut headers, head.version, pseudonym);
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = target.clone();
    *req.headers_mut() = headers;
    req
}
