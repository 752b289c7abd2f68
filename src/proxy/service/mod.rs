//! Per-request handling: the shared [`State`] of a running proxy, and the access line and
//! metrics of each request around its routing. Intercepted (inner TLS) requests enter through
//! `handle_intercepted` and share the routing with plain ones.
//!
//! Elsewhere in this module: the routing of plain and intercepted requests (`route`: CONNECT
//! tunnels or interception, cacheable GET/HEAD through the pipeline, everything else passed
//! through), access control (`access`), targets and CONNECT (`target`), pass-through,
//! invalidation and `PURGE` (`pass`), the proxy's own responses (`respond`).
//!
//! Invariant: every response that leaves here carries `Cache-Status`; no `unwrap` on the
//! network path: failures become 4xx/5xx responses with the reason in body and log.

mod access;
mod max_forwards;
mod pass;
mod respond;
mod route;
mod target;

pub use pass::{RequestHead, build_upstream_request};
use route::Routed;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::HeaderName;
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;

use std::sync::Arc;

use super::body::ProxyBody;
use super::metrics::Metrics;
use super::mitm::Interceptor;
use super::upstream::Upstream;
use super::{ProxyConfig, ProxyError};
use crate::coalesce::Coalescer;
use crate::entries::Entries;
use crate::entries::hot::HotCache;
use crate::entries::shared::{ClientIdentity, SharedConfig, SharedTier};
use crate::http_cache::LookupOptions;
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
    /// The `Via` value of answers from the cache (`1.1 <pseudonym>`), made once.
    pub via: Option<http::HeaderValue>,
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
        let via = crate::http_cache::via_value(http::Version::HTTP_11, &cfg.pseudonym);
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
                secret_file: cfg.shared_secret_file.clone(),
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
            via,
            mitm,
            background: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Handle one request: log one access line and count it in the metrics. What can be
    /// answered without waiting (refusals, fresh entries in the memory front) is answered
    /// inside this call, and the returned future is ready; the rest is one boxed future.
    pub fn handle<'a>(
        self: &'a Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Handling<'a> {
        crate::runtime::busy_poll::note_request();
        let seen = Seen::of(&req, peer, None);
        let pending = match self.route(req, peer) {
            Routed::Now(res) => return Handling::Ready(Some(self.finish(seen, res, 0))),
            Routed::Later(p) => p,
        };
        Handling::Later(Box::pin(async move {
            let (res, upstream_us) = pending.finish_timed(self, peer).await;
            self.finish(seen, res, upstream_us)
        }))
    }

    /// Handle one request that arrived inside an intercepted CONNECT to `origin`
    /// (`https://host[:port]`): log and count it like any other.
    pub(super) async fn handle_intercepted(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        origin: &str,
    ) -> Response<ProxyBody> {
        crate::runtime::busy_poll::note_request();
        let seen = Seen::of(&req, peer, Some(origin));
        let (res, upstream_us) = match self.route_intercepted(req, peer, origin) {
            Routed::Now(res) => (res, 0),
            Routed::Later(p) => p.finish_timed(self, peer).await,
        };
        self.finish(seen, res, upstream_us)
    }

    /// The request's access line and its metrics, once its response head is known.
    fn finish(
        &self,
        seen: Seen<'_>,
        res: Response<ProxyBody>,
        upstream_us: u64,
    ) -> Response<ProxyBody> {
        let Seen {
            start,
            method,
            uri,
            peer,
            origin,
        } = seen;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
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
        crate::access_line::emit(
            &crate::access_line::AccessLine {
                peer,
                method: &method,
                uri: &uri,
                status,
                cache_status,
                bytes,
                upstream_us,
                intercepted: origin.is_some(),
                elapsed_us: elapsed.as_micros() as u64,
            },
            now,
        );
        res
    }
}

/// What the access line needs of a request, taken before it is routed.
struct Seen<'o> {
    start: Instant,
    method: Method,
    uri: Uri,
    peer: SocketAddr,
    origin: Option<&'o str>,
}

impl<'o> Seen<'o> {
    fn of(req: &Request<Incoming>, peer: SocketAddr, origin: Option<&'o str>) -> Seen<'o> {
        Seen {
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            peer,
            origin,
        }
    }
}

/// The response to one request, as [`State::handle`] returns it: ready at once when the
/// request was answered without waiting (hyper then holds a few words, not the request's
/// whole state machine), else the boxed rest.
pub enum Handling<'a> {
    /// Answered; taken by the first poll.
    Ready(Option<Response<ProxyBody>>),
    /// Waits on the store, the origin or another request.
    Later(Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'a>>),
}

impl Future for Handling<'_> {
    type Output = Response<ProxyBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handling::Ready(res) => {
                Poll::Ready(res.take().expect("Handling polled after it completed"))
            }
            Handling::Later(fut) => fut.as_mut().poll(cx),
        }
    }
}
