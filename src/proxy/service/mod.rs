//! Per-request dispatch: CONNECT tunnels or interception, cacheable GET/HEAD through the
//! pipeline, everything else passed through (invalidating on unsafe methods), and the proxy's
//! own error responses. Intercepted (inner TLS) requests enter through `handle_intercepted` and
//! share `dispatch_to` with plain ones.
//!
//! Invariant: every response that leaves here carries `Cache-Status`; no `unwrap` on the
//! network path: failures become 4xx/5xx responses with the reason in body and log.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use std::cell::Cell;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use std::sync::Arc;

use super::body::ProxyBody;
use super::hostname;
use super::metrics::{Metrics, UPSTREAM_US};
use super::mitm::{self, Interceptor};
use super::pipeline;
use super::server::ConnSlot;
use super::tunnel;
use super::upstream::{Upstream, UpstreamError};
use super::{ProxyConfig, ProxyError};
use super::{fill, post_store};
use crate::coalesce::Coalescer;
use crate::entries::Entries;
use crate::entries::hot::HotCache;
use crate::entries::shared::{SharedConfig, SharedTier};
use crate::http_cache::{self, BypassReason, CacheStatus, LookupOptions, Normalized};
use crate::store::Cache;

/// `Cache-Status` header name (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Shared state of one running proxy.
#[derive(Debug)]
pub struct State {
    /// Validated configuration.
    pub cfg: ProxyConfig,
    /// The disk store.
    pub store: Cache,
    /// The origin client.
    pub upstream: Upstream,
    /// In-process single-flight.
    pub coalescer: Coalescer,
    /// Where we listen (loop detection).
    pub local_addr: SocketAddr,
    /// Freshness options for lookups and storability.
    pub lookup_opts: LookupOptions,
    /// HTTP entries: the in-memory front over the store, leases, invalidations.
    pub entries: Entries,
    /// Prometheus metrics (served by the admin server).
    pub metrics: Arc<Metrics>,
    /// `Basic` tokens (base64 of `user:password`) accepted in `Proxy-Authorization`.
    proxy_tokens: Vec<String>,
    /// CONNECT interception, when `--mitm` is on.
    pub mitm: Option<Arc<Interceptor>>,
    /// Cache fills and background refreshes: shutdown waits for them (bounded) so responses
    /// already sent to clients are also in the store.
    pub background: tokio_util::task::TaskTracker,
}

impl State {
    /// Assemble the state (`mitm` is made beforehand: loading the CA does blocking file I/O).
    pub fn new(
        cfg: ProxyConfig,
        store: Cache,
        local_addr: SocketAddr,
        mitm: Option<Arc<Interceptor>>,
    ) -> Result<Self, ProxyError> {
        let metrics = Arc::new(Metrics::persisting(&cfg.cache_dir, cfg.statistics));
        let upstream = Upstream::new(&cfg)?.with_metrics(metrics.clone());
        let (cfg_hot_budget, cfg_hot_ttl) = (cfg.memory_cache_size, cfg.memory_cache_ttl);
        let cfg_stale_if_error = cfg.stale_if_error;
        let cfg_swr = cfg.stale_while_revalidate;
        let cfg_hot_max_entry = (cfg.memory_cache_size / 64).min(2 << 20);
        let proxy_tokens = cfg
            .proxy_auth
            .iter()
            .map(|c| base64(c.as_bytes()))
            .collect();
        let mut entries = Entries::new(
            store.clone(),
            HotCache::new(cfg_hot_budget, cfg_hot_max_entry, cfg_hot_ttl),
        )
        .with_presence();
        let lookup_opts = LookupOptions {
            default_stale_if_error: cfg_stale_if_error,
            default_stale_while_revalidate: cfg_swr,
            ..LookupOptions::default()
        };
        if let Some(url) = &cfg.shared {
            let tier = SharedTier::start(SharedConfig {
                url: url.clone(),
                prefix: cfg.shared_prefix.clone(),
                max_object_size: cfg.shared_max_object_size,
                timeout: cfg.shared_timeout,
            })
            .map_err(|e| ProxyError::Config(format!("shared: {e}")))?;
            tracing::info!(url = %tier.url(), "shared tier configured");
            entries = entries.with_shared(tier, lookup_opts.clone(), cfg.shared_max_object_size);
        }
        Ok(State {
            cfg,
            store,
            entries,
            upstream,
            coalescer: Coalescer::default(),
            local_addr,
            lookup_opts,
            metrics,
            proxy_tokens,
            mitm,
            background: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Handle one request: log one access line and count it in the metrics.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        self.handle_in(req, peer, None).await
    }

    /// Handle one request that arrived inside an intercepted CONNECT to `origin`
    /// (`https://host[:port]`): log and count it like any other.
    pub(super) async fn handle_intercepted(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        origin: &str,
    ) -> Response<ProxyBody> {
        self.handle_in(req, peer, Some(origin)).await
    }

    async fn handle_in(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        origin: Option<&str>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let (res, upstream_us) = UPSTREAM_US
            .scope(Cell::new(0), async {
                let res = match origin {
                    None => self.dispatch(req, peer).await,
                    Some(o) => self.dispatch_intercepted(req, peer, o).await,
                };
                (res, UPSTREAM_US.with(Cell::get))
            })
            .await;
        let elapsed = start.elapsed();
        let status = res.status().as_u16();
        let cache_status = res
            .headers()
            .get(&CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let bytes = if method == Method::HEAD {
            Some(0)
        } else {
            res.body().size_hint().exact()
        };
        self.metrics.request(cache_status, elapsed, bytes);
        self.metrics.publish(|| super::metrics::AccessEvent {
            time_ms: super::metrics::unix_ms(),
            method: method.to_string(),
            url: match origin {
                Some(o) => format!("{o}{}", uri.path_and_query().map_or("/", |p| p.as_str())),
                None => uri.to_string(),
            },
            status,
            cache_status: cache_status.to_string(),
            outcome: super::metrics::outcome(cache_status).to_string(),
            bytes,
            elapsed_us: elapsed.as_micros() as u64,
        });
        tracing::info!(
            target: "hoard::access",
            %peer,
            %method,
            %uri,
            status,
            cache_status,
            bytes,
            upstream_us,
            intercepted = origin.is_some(),
            elapsed_us = elapsed.as_micros() as u64,
        );
        res
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        if let Some(res) = self.refuse_framing(&req, peer) {
            return res;
        }
        // The accept loop already refuses these; kept for any other caller of `handle`.
        if !self.cfg.allow.iter().any(|n| n.contains(peer.ip())) {
            let mut res = self.error(
                StatusCode::FORBIDDEN,
                CacheStatus::bypass(BypassReason::Refused).with_detail("not-allowed"),
                "this address may not use the proxy (see allow)\n",
            );
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
        if let Some(res) = self.refuse_large_header(&req) {
            return res;
        }
        if !self.proxy_tokens.is_empty() && !self.authorized(req.headers()) {
            let mut res = self.error(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                CacheStatus::bypass(BypassReason::Refused).with_detail("proxy-auth"),
                "proxy authentication required\n",
            );
            res.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hoard\""),
            );
            return res;
        }
        // RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host field.
        // CONNECT is exempt: some clients omit Host there, and the authority is the target.
        if req.version() == Version::HTTP_11 && req.method() != Method::CONNECT {
            let hosts = req.headers().get_all(header::HOST).iter().count();
            if hosts != 1 {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    CacheStatus::bypass(BypassReason::Refused).with_detail("bad-host"),
                    if hosts == 0 {
                        "HTTP/1.1 request without a Host field\n"
                    } else {
                        "request with several Host fields\n"
                    },
                );
            }
        }
        if req.method() == Method::CONNECT {
            let mut res = self.connect(req, peer).await;
            if !res.status().is_success() {
                // A refused CONNECT ends the connection: the framing guard stopped at its head,
                // so nothing after it would be checked.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return res;
        }
        let target = match self.target_uri(&req) {
            Ok(t) => t,
            Err(msg) => {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                    msg,
                );
            }
        };
        self.dispatch_to(req, peer, target).await
    }

    /// 400 and close for a request whose raw head the framing guard condemned.
    fn refuse_framing(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        let v = req.extensions().get::<super::framing::Violation>()?;
        tracing::warn!(%peer, violation = v.as_str(), "ambiguous request framing refused");
        let mut res = self.error(
            StatusCode::BAD_REQUEST,
            CacheStatus::bypass(BypassReason::Refused).with_detail(v.as_str()),
            "ambiguous request framing (bare LF, or Content-Length with Transfer-Encoding)\n",
        );
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Some(res)
    }

    /// 431 when the request header block exceeds `max_header_size`.
    fn refuse_large_header(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.uri().authority().map_or(0, |a| a.as_str().len())
            + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + 32;
        if header_bytes > self.cfg.max_header_size {
            return Some(self.error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                CacheStatus::bypass(BypassReason::Refused).with_detail("header-too-large"),
                "request header block too large\n",
            ));
        }
        None
    }

    /// An inner request of an intercepted connection: its target is the CONNECT origin plus
    /// its path, whatever its `Host` or `:authority` says.
    async fn dispatch_intercepted(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        origin: &str,
    ) -> Response<ProxyBody> {
        if let Some(res) = self.refuse_framing(&req, peer) {
            return res;
        }
        if let Some(res) = self.refuse_large_header(&req) {
            return res;
        }
        if req.method() == Method::CONNECT {
            return self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT inside an intercepted connection is not supported\n",
            );
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let pq = if pq.starts_with('/') { pq } else { "/" };
        let Ok(target) = format!("{origin}{pq}").parse::<Uri>() else {
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "request target cannot be joined to the CONNECT authority\n",
            );
        };
        self.dispatch_to(req, peer, target).await
    }

    /// The common part of plain and intercepted requests: loop detection, then GET/HEAD
    /// through the cache and everything else passed through.
    pub(super) async fn dispatch_to(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        target: Uri,
    ) -> Response<ProxyBody> {
        // Once, before anything computes a key, a Vary match or storability: what the origin
        // will not see (hop-by-hop fields) must not choose what others are served.
        let normalized =
            http_cache::normalize_request(req.headers_mut(), self.cfg.forwarding_headers);
        if self.is_loop(&target) {
            return self.error(
                StatusCode::LOOP_DETECTED,
                CacheStatus::bypass(BypassReason::Refused).with_detail("loop"),
                "request loop: the target is this proxy\n",
            );
        }
        if req.method().as_str() == "PURGE" {
            return self.purge(peer, target).await;
        }
        if self.cfg.offline && !matches!(*req.method(), Method::GET | Method::HEAD) {
            return self.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::bypass(BypassReason::Method).with_detail("offline"),
                "hoard is offline: only GET and HEAD are answered, from the cache\n",
            );
        }
        if normalized == Normalized::CarriesForwarding && !self.cfg.offline {
            return self
                .pass_through(req, target, BypassReason::Forwarding)
                .await;
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD)
            && let Some(rule) = http_cache::first_match(&self.cfg.rules, &target)
            && rule.caches_method(req.method())
        {
            let rule = rule.clone();
            return pipeline::cached_method(self, req, target, rule).await;
        }
        match *req.method() {
            Method::GET | Method::HEAD => pipeline::get_or_head(self, req, target).await,
            _ => self.pass_through(req, target, BypassReason::Method).await,
        }
    }

    /// Does `Proxy-Authorization: Basic <token>` carry one of the configured credentials?
    /// (Compared in constant time per candidate.)
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let mut parts = value.trim().splitn(2, ' ');
        let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let token = token.trim().as_bytes();
        self.proxy_tokens.iter().fold(false, |ok, want| {
            let want = want.as_bytes();
            let same = want.len() == token.len()
                && want.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
            ok | same
        })
    }

    /// `PURGE <url>` from an allowed client: remove every stored variant of the URL.
    /// 200 when something was removed, 404 when nothing was stored, 403 for other clients.
    async fn purge(&self, peer: SocketAddr, target: Uri) -> Response<ProxyBody> {
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

    /// The absolute URI a request is for: absolute-form in forward mode, the upstream base
    /// plus path in gateway mode.
    fn target_uri(&self, req: &Request<Incoming>) -> Result<Uri, &'static str> {
        if let Some(base) = &self.cfg.upstream {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let base_path = base.path().trim_end_matches('/');
            let joined = format!(
                "{}://{}{}{}",
                base.scheme_str().unwrap_or("http"),
                base.authority().map(|a| a.as_str()).unwrap_or(""),
                base_path,
                pq
            );
            return joined
                .parse()
                .map_err(|_| "request target cannot be joined to the upstream URL\n");
        }
        let uri = req.uri();
        match (uri.scheme_str(), uri.authority()) {
            (Some("http") | Some("https"), Some(_)) => Ok(uri.clone()),
            (Some(_), Some(_)) => Err("only http and https URLs can be proxied\n"),
            _ => Err(
                "hoard is a forward proxy: send absolute-form requests (GET http://host/path), \
                 or start it with --upstream URL for gateway mode\n",
            ),
        }
    }

    /// Is `target` this proxy itself?
    fn is_loop(&self, target: &Uri) -> bool {
        let Some(host) = target.host() else {
            return false;
        };
        let default_port = if target.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let port = target.port_u16().unwrap_or(default_port);
        if port != self.local_addr.port() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let ours = self.local_addr.ip();
                ip == ours || (ours.is_unspecified() || ip.is_unspecified()) || {
                    ip.is_loopback() && ours.is_loopback()
                }
            }
            Err(_) => false,
        }
    }

    /// May CONNECT reach `host:port`? Any host on `allowed_connect_ports`; otherwise only the
    /// exact `(host, port)` pairs named by `--resolve` (a `--resolve` entry opens its port for
    /// its own host, never for every host).
    fn connect_port_allowed(&self, host: &str, port: u16) -> bool {
        self.cfg.allowed_connect_ports.contains(&port)
            || self.upstream.resolve().lookup(host, port).is_some()
    }

    /// CONNECT host:port -> interception (`--mitm`, host not bypassed) or a blind tunnel.
    async fn connect(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let slot = req.extensions_mut().remove::<ConnSlot>();
        if self.cfg.offline {
            return self.error(
                StatusCode::GATEWAY_TIMEOUT,
                CacheStatus::bypass(BypassReason::Tunnel).with_detail("offline"),
                "hoard is offline: tunnels are not opened\n",
            );
        }
        let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT needs host:port\n",
            );
        };
        let (Some(port), Some(host)) = (req.uri().port_u16(), req.uri().host()) else {
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-request"),
                "CONNECT needs host:port\n",
            );
        };
        // Before any tunnel or interception: a leaf is only ever made for a plain name.
        if let Err(why) = hostname::check_authority_host(host) {
            tracing::info!(%peer, %authority, reason = why.as_str(), "CONNECT host refused");
            return self.error(
                StatusCode::BAD_REQUEST,
                CacheStatus::bypass(BypassReason::Refused).with_detail("bad-connect-host"),
                &format!("CONNECT needs a DNS name or an IP address (IPv6 in brackets): {why}\n"),
            );
        }
        let host = host.to_string();
        if !self.connect_port_allowed(&host, port) {
            return self.error(
                StatusCode::FORBIDDEN,
                CacheStatus::bypass(BypassReason::Refused).with_detail("port-not-allowed"),
                &format!(
                    "CONNECT to port {port} is not allowed for this host \
                     (allowed_connect_ports, or a resolve entry for it)\n"
                ),
            );
        }
        if let Some(m) = &self.mitm
            && !m.bypassed(&host)
        {
            // Origin connections are made per inner request, through the pooled client.
            mitm::serve(
                self.clone(),
                hyper::upgrade::on(req),
                host,
                port,
                peer,
                slot,
            );
            let mut res = Response::new(ProxyBody::Empty);
            self.stamp(
                &mut res,
                CacheStatus::bypass(BypassReason::Tunnel).with_detail("intercept"),
            );
            return res;
        }
        let origin = match tunnel::connect(
            &authority,
            &host,
            port,
            self.upstream.resolve(),
            self.cfg.connect_timeout,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => return self.upstream_error(&e, CacheStatus::bypass(BypassReason::Tunnel)),
        };
        tunnel::splice(
            hyper::upgrade::on(req),
            origin,
            authority,
            slot,
            self.cfg.tunnel_idle_timeout,
        );
        let mut res = Response::new(ProxyBody::Empty);
        self.stamp(&mut res, CacheStatus::bypass(BypassReason::Tunnel));
        res
    }

    /// Forward a request the cache does not answer; unsafe methods invalidate on success.
    async fn pass_through(
        &self,
        req: Request<Incoming>,
        target: Uri,
        reason: BypassReason,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let unsafe_method = !matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let up = self.upstream_request(&parts, &target, ProxyBody::Incoming(body));
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
        let to_client = fill::ToClient {
            body: tx,
            stall: self.cfg.idle_timeout,
        };
        let (timeout, total) = (self.upstream.response_timeout(), self.cfg.body_timeout);
        self.background.spawn(fill::run(
            plan,
            rbody,
            Some(to_client),
            None,
            None,
            timeout,
            total,
        ));
        let mut res = Response::from_parts(rparts, body);
        let cs = cs.with_fwd_status(res.status().as_u16()).stored(true);
        self.stamp(&mut res, cs.with_detail("content-location"));
        res
    }

    /// The request to send upstream: hop-by-hop headers removed, `Via` added, `Host` from the target.
    pub fn upstream_request(
        &self,
        parts: &http::request::Parts,
        target: &Uri,
        body: ProxyBody,
    ) -> Request<ProxyBody> {
        build_upstream_request(parts, target, &self.cfg.pseudonym, body)
    }

    /// An origin response body streamed to the client under the chunk and body timeouts.
    pub fn origin_body(&self, body: Incoming) -> ProxyBody {
        ProxyBody::origin(body, self.cfg.response_timeout, self.cfg.body_timeout)
    }

    /// Strip hop-by-hop headers of an upstream response and add `Via`.
    pub fn prepare_response_headers(&self, headers: &mut http::HeaderMap, version: Version) {
        http_cache::strip_hop_by_hop(headers);
        http_cache::append_via(headers, version, &self.cfg.pseudonym);
    }

    /// Add our `Cache-Status` member after those of upstream caches (RFC 9211 section 2:
    /// the list is in path order, the cache closest to the client last).
    pub fn stamp(&self, res: &mut Response<ProxyBody>, status: CacheStatus) {
        let ours = status.header_value();
        let headers = res.headers_mut();
        let upstream: Vec<&str> = headers
            .get_all(&CACHE_STATUS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let value = if upstream.is_empty() {
            ours
        } else {
            let joined = format!("{}, {}", upstream.join(", "), ours.to_str().unwrap_or(""));
            HeaderValue::from_str(&joined).unwrap_or(ours)
        };
        headers.insert(CACHE_STATUS.clone(), value);
    }
    /// A short plain-text response generated by the proxy itself.
    pub fn error(&self, code: StatusCode, cs: CacheStatus, msg: &str) -> Response<ProxyBody> {
        let mut res = Response::new(ProxyBody::full(msg.to_string()));
        *res.status_mut() = code;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.stamp(&mut res, cs);
        res
    }

    /// 502/504 for an upstream failure, with the reason in body, `Cache-Status` and log.
    pub fn upstream_error(&self, e: &UpstreamError, cs: CacheStatus) -> Response<ProxyBody> {
        tracing::warn!(error = %e, "upstream failure");
        self.error(e.status(), cs.with_detail(e.detail()), &format!("{e}\n"))
    }
}

/// The request to send upstream: hop-by-hop headers removed, `Via` added, `Host` from the target.
pub fn build_upstream_request(
    parts: &http::request::Parts,
    target: &Uri,
    pseudonym: &str,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let mut headers = parts.headers.clone();
    http_cache::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    http_cache::append_via(&mut headers, parts.version, pseudonym);
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = target.clone();
    *req.headers_mut() = headers;
    req
}

/// Standard base64 with padding (RFC 4648), for `Basic` credentials.
fn base64(input: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("alice:s3cret", "YWxpY2U6czNjcmV0"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), enc);
        }
    }
}
