//! Per-request dispatch: the shared [`State`] of a running proxy, the access line and metrics
//! of each request, and the routing of plain and intercepted requests (CONNECT tunnels or
//! interception, cacheable GET/HEAD through the pipeline, everything else passed through).
//! Intercepted (inner TLS) requests enter through `handle_intercepted` and share
//! `dispatch_to` with plain ones.
//!
//! Elsewhere in this module: access control (`access`), targets and CONNECT (`target`),
//! pass-through, invalidation and `PURGE` (`pass`), the proxy's own responses (`respond`).
//!
//! Invariant: every response that leaves here carries `Cache-Status`; no `unwrap` on the
//! network path: failures become 4xx/5xx responses with the reason in body and log.

mod access;
mod pass;
mod respond;
mod target;

pub use pass::build_upstream_request;

use std::net::SocketAddr;
use std::time::Instant;

use std::cell::Cell;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use std::sync::Arc;

use super::body::ProxyBody;
use super::metrics::{Metrics, UPSTREAM_US};
use super::mitm::Interceptor;
use super::pipeline;
use super::upstream::Upstream;
use super::{ProxyConfig, ProxyError};
use crate::coalesce::Coalescer;
use crate::entries::Entries;
use crate::entries::hot::HotCache;
use crate::entries::shared::{ClientIdentity, SharedConfig, SharedTier};
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
            .map(|c| access::base64(c.as_bytes()))
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
            let client_identity = ClientIdentity::from_pair(
                cfg.shared_cert_file.clone(),
                cfg.shared_key_file.clone(),
            )
            .map_err(|e| ProxyError::Config(format!("shared: {e}")))?;
            let tier = SharedTier::start(SharedConfig {
                url: url.clone(),
                prefix: cfg.shared_prefix.clone(),
                max_object_size: cfg.shared_max_object_size,
                timeout: cfg.shared_timeout,
                ca_file: cfg.shared_ca_file.clone(),
                client_identity,
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
        crate::access_line::emit(&crate::access_line::AccessLine {
            peer,
            method: &method,
            uri: &uri,
            status,
            cache_status,
            bytes,
            upstream_us,
            intercepted: origin.is_some(),
            elapsed_us: elapsed.as_micros() as u64,
        });
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
        if let Some(res) = self.refuse_peer(peer) {
            return res;
        }
        if let Some(res) = self.refuse_large_header(&req) {
            return res;
        }
        if let Some(res) = self.refuse_unauthorized(&req) {
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
        self.dispatch_to(req.map(ProxyBody::Incoming), peer, target)
            .await
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
        self.dispatch_to(req.map(ProxyBody::Incoming), peer, target)
            .await
    }

    /// The common part of plain and intercepted requests: loop detection, then GET/HEAD
    /// through the cache and everything else passed through.
    pub(in crate::proxy) async fn dispatch_to(
        &self,
        mut req: Request<ProxyBody>,
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
}
