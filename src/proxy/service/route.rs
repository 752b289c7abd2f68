//! Routing of a request, synchronously: refusals and the proxy's own errors, CONNECT, `PURGE`,
//! pass-through, and GET/HEAD through the pipeline, which answers a fresh entry of the memory
//! front on the spot. What waits (the store, the origin, a tunnel) is returned as a
//! [`Pending`] value and finished by one future.
//!
//! Invariant: the request is normalised exactly once (`route_to`), before anything computes
//! a key, a Vary match or storability, whichever way it then goes.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::State;
use crate::http_cache::{self, BypassReason, CacheStatus, Normalized, Rule};
use crate::proxy::body::ProxyBody;
use crate::proxy::metrics::UPSTREAM_US;
use crate::proxy::pipeline;

/// What routing made of a request.
// Returned on the stack once per request; boxing the waiting part would add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Routed<'a> {
    /// Answered without waiting.
    Now(Response<ProxyBody>),
    /// The rest waits.
    Later(Pending<'a>),
}

/// The part of a request's handling that waits.
pub(super) enum Pending<'a> {
    /// A tunnel or an intercepted connection (plain requests only).
    Connect(Request<Incoming>),
    Purge(Uri),
    Pass(Request<ProxyBody>, Uri, BypassReason),
    CachedMethod(Request<ProxyBody>, Uri, Rule),
    Pipeline(pipeline::Later<'a>),
}

impl Pending<'_> {
    /// [`finish`](Pending::finish), with the microseconds spent waiting on origins (for the
    /// access line).
    pub(super) async fn finish_timed(
        self,
        st: &Arc<State>,
        peer: SocketAddr,
    ) -> (Response<ProxyBody>, u64) {
        UPSTREAM_US
            .scope(Cell::new(0), async {
                let res = self.finish(st, peer).await;
                (res, UPSTREAM_US.with(Cell::get))
            })
            .await
    }

    /// Finish the request.
    pub(super) async fn finish(self, st: &Arc<State>, peer: SocketAddr) -> Response<ProxyBody> {
        match self {
            Pending::Connect(req) => st.connect_refusing(req, peer).await,
            Pending::Purge(target) => st.purge(peer, target).await,
            Pending::Pass(req, target, reason) => st.pass_through(req, target, reason).await,
            Pending::CachedMethod(req, target, rule) => {
                pipeline::cached_method(st, req, target, rule).await
            }
            Pending::Pipeline(later) => later.finish().await,
        }
    }
}

impl State {
    /// A plain request (not inside an intercepted connection): the refusals, then CONNECT,
    /// then its target.
    pub(super) fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Routed<'_> {
        let now = Routed::Now;
        if let Some(res) = self.refuse_framing(&req, peer) {
            return now(res);
        }
        if let Some(res) = self.refuse_peer(peer) {
            return now(res);
        }
        if let Some(res) = self.refuse_large_header(&req) {
            return now(res);
        }
        if let Some(res) = self.refuse_unauthorized(&req) {
            return now(res);
        }
        // RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host field.
        // CONNECT is exempt: some clients omit Host there, and the authority is the target.
        if req.version() == Version::HTTP_11 && req.method() != Method::CONNECT {
            let hosts = req.headers().get_all(header::HOST).iter().count();
            if hosts != 1 {
                return now(self.error(
                    StatusCode::BAD_REQUEST,
                    CacheStatus::bypass(BypassReason::Refused).with_detail("bad-host"),
                    if hosts == 0 {
                        "HTTP/1.1 request without a Host field\n"
                    } else {
                        "request with several Host fields\n"
                    },
                ));
            }
        }
        if req.method() == Method::CONNECT {
            return Routed::Later(Pending::Connect(req));
        }
        match self.target_uri(&req) {
            Ok(target) => self.route_to(
                req.map(|b| ProxyBody::client(b, self.cfg.idle_timeout)),
                target,
            ),
            Err(msg) => now(self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                msg,
            )),
        }
    }

    /// A CONNECT: a tunnel, an intercepted connection, or a refusal that ends the connection
    /// (the framing guard stopped at its head, so nothing after it would be checked).
    async fn connect_refusing(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let mut res = Box::pin(self.connect(req, peer)).await;
        if !res.status().is_success() {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    /// An inner request of an intercepted connection: its target is the CONNECT origin plus
    /// its path, whatever its `Host` or `:authority` says.
    pub(super) fn route_intercepted(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        origin: &str,
    ) -> Routed<'_> {
        if let Some(res) = self.refuse_framing(&req, peer) {
            return Routed::Now(res);
        }
        if let Some(res) = self.refuse_large_header(&req) {
            return Routed::Now(res);
        }
        if req.method() == Method::CONNECT {
            return Routed::Now(self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT inside an intercepted connection is not supported\n",
            ));
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let pq = if pq.starts_with('/') { pq } else { "/" };
        let Ok(target) = format!("{origin}{pq}").parse::<Uri>() else {
            return Routed::Now(self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "request target cannot be joined to the CONNECT authority\n",
            ));
        };
        self.route_to(
            req.map(|b| ProxyBody::client(b, self.cfg.idle_timeout)),
            target,
        )
    }

    /// The common part of plain and intercepted requests, routed and finished: the pipeline's
    /// unit tests enter here.
    #[cfg(test)]
    pub(in crate::proxy) async fn dispatch_to(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
        peer: SocketAddr,
        target: Uri,
    ) -> Response<ProxyBody> {
        match self.route_to(req, target) {
            Routed::Now(res) => res,
            Routed::Later(p) => p.finish(self, peer).await,
        }
    }

    /// The common part of plain and intercepted requests, as far as it goes without waiting:
    /// loop detection, then GET/HEAD through the cache and everything else passed through.
    fn route_to(&self, mut req: Request<ProxyBody>, target: Uri) -> Routed<'_> {
        // Once, before anything computes a key, a Vary match or storability: what the origin
        // will not see (hop-by-hop fields) must not choose what others are served.
        let normalized =
            http_cache::normalize_request(req.headers_mut(), self.cfg.forwarding_headers);
        if self.is_loop(&target) {
            return Routed::Now(self.error(
                StatusCode::LOOP_DETECTED,
                CacheStatus::bypass(BypassReason::Refused).with_detail("loop"),
                "request loop: the target is this proxy\n",
            ));
        }
        if let Some(res) = self.max_forwards(&mut req) {
            return Routed::Now(res);
        }
        if req.method().as_str() == "PURGE" {
            return Routed::Later(Pending::Purge(target));
        }
        if self.cfg.offline && !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Routed::Now(self.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::bypass(BypassReason::Method).with_detail("offline"),
                "hoard is offline: only GET and HEAD are answered, from the cache\n",
            ));
        }
        if normalized == Normalized::CarriesForwarding && !self.cfg.offline {
            return Routed::Later(Pending::Pass(req, target, BypassReason::Forwarding));
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD)
            && let Some(rule) = http_cache::first_match(&self.cfg.rules, &target)
            && rule.caches_method(req.method())
        {
            let rule = rule.clone();
            return Routed::Later(Pending::CachedMethod(req, target, rule));
        }
        match *req.method() {
            Method::GET | Method::HEAD => match pipeline::get_or_head(self, req, target) {
                pipeline::Started::Answered(res) => Routed::Now(res),
                pipeline::Started::Later(later) => Routed::Later(Pending::Pipeline(later)),
            },
            _ => Routed::Later(Pending::Pass(req, target, BypassReason::Method)),
        }
    }
}
