//! The network layer: accepts clients, talks to origins, and glues `http_cache` to the `store`.
//!
//! Invariants: only this module touches sockets; blocking store calls run on
//! `spawn_blocking` threads, never on an async worker; a body that is not complete is never
//! stored, and a client is never handed a short body that looks complete.

mod admin;
mod body;
pub mod ca;
mod dashboard;
mod fill;
mod framing;
mod health;
mod hostname;
mod hot;
mod lease;
pub mod metrics;
mod mitm;
mod observed;
mod pipeline;
mod server;
mod service;
mod tunnel;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use server::{Server, ServerHandle};

use crate::config::IpNet;
use crate::http_cache::ForwardingHeaders;
use crate::store::EvictionPolicy;

/// Everything the proxy needs to run, already validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address to listen on (default 127.0.0.1:3128).
    pub listen: SocketAddr,
    /// Cache directory (SQLite index and value files).
    pub cache_dir: PathBuf,
    /// Gateway mode: origin-form requests go to this base URL (`http://` or `https://`).
    pub upstream: Option<http::Uri>,
    /// Store size limit in bytes.
    pub size_limit: u64,
    /// Store eviction policy.
    pub eviction_policy: EvictionPolicy,
    /// Responses larger than this stream through uncached.
    pub max_object_size: u64,
    /// Time allowed to connect to an origin (exceeded: 504).
    pub connect_timeout: Duration,
    /// Time allowed for an origin to send response headers, and between body chunks (exceeded: 504).
    pub response_timeout: Duration,
    /// Time allowed for a client to send its request headers.
    pub header_timeout: Duration,
    /// A client connection with no request in flight and no bytes moving for this long is
    /// closed (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// A CONNECT tunnel with no bytes moving either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Time allowed for a whole origin response body after its head (`None`: no limit beyond
    /// the per-chunk `response_timeout`); bounds an origin that trickles.
    pub body_timeout: Option<Duration>,
    /// How long waiters wait for another request's fetch of the same key before fetching themselves.
    pub lock_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Maximum simultaneous client connections; the excess is refused.
    pub max_connections: usize,
    /// Largest request header block accepted (larger: 431).
    pub max_header_size: usize,
    /// The name used in `Via`.
    pub pseudonym: String,
    /// Client-sent forwarding fields (`Forwarded`, `X-Forwarded-*`, ...): stripped or passed.
    pub forwarding_headers: ForwardingHeaders,
    /// Bytes of decoded hot entries kept in memory in front of the store (0 disables).
    pub memory_cache_size: usize,
    /// How long a row held in memory is trusted before it is read from the store again
    /// (bounds how late this process sees another process's purge or refresh).
    pub memory_cache_ttl: Duration,
    /// Intercept CONNECT with hoard's CA (`--mitm`); otherwise CONNECT is a blind tunnel.
    pub mitm: bool,
    /// Hosts always tunnelled, never intercepted: `exact.host`, or `*.domain` (the domain and
    /// every name under it), case-insensitive.
    pub mitm_bypass: Vec<String>,
    /// Where the interception CA lives (default `<cache_dir>/ca`); created there if absent.
    pub ca_dir: Option<PathBuf>,
    /// PEM files of CA certificates trusted for origins, besides the webpki roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// Do not verify origin certificates at all (dangerous; only when asked).
    pub insecure_upstream: bool,
    /// `HOST:PORT:ADDR` overrides, like curl's `--resolve`.
    pub resolve: Vec<(String, u16, IpAddr)>,
    /// Ports CONNECT may reach for any host (a `resolve` entry also opens its own host:port).
    pub allowed_connect_ports: Vec<u16>,
    /// Intercepted hosts whose leaf certificates are kept in memory.
    pub mitm_cert_cache_size: usize,
    /// Count hits and misses in the store (shown by `hoard stats`).
    pub statistics: bool,
    /// Clients allowed to send `PURGE` (default: loopback only; empty: nobody).
    pub purge_allow: Vec<IpNet>,
    /// Clients allowed to use the proxy at all (default: loopback only); others get 403.
    pub allow: Vec<IpNet>,
    /// `user:password` pairs accepted in `Proxy-Authorization: Basic`; empty: no authentication.
    pub proxy_auth: Vec<String>,
    /// Address of the admin server (`/metrics`, `/healthz`); `None`: off.
    pub admin: Option<SocketAddr>,
    /// Clients the admin server answers (default: loopback only); others are closed unanswered.
    pub admin_allow: Vec<IpNet>,
    /// XFetch `beta`: how eagerly fresh hot entries are refreshed before they expire
    /// (1.0 is the paper's default; larger is earlier; 0 disables).
    pub xfetch_beta: f64,
    /// Stale-if-error window applied when the origin gives none (RFC 5861); `None` = off.
    pub stale_if_error: Option<Duration>,
    /// Stale-while-revalidate window applied when the origin gives none; `None` = off.
    pub stale_while_revalidate: Option<Duration>,
    /// Uniform random numbers in (0, 1] for XFetch; injectable so tests are exact.
    pub random: fn() -> f64,
    /// Never contact an origin: serve whatever is stored, whatever its age; 504 otherwise.
    pub offline: bool,
    /// Development-caching rules, first match wins.
    pub rules: Vec<crate::http_cache::Rule>,
}

/// The default random source: uniform in (0, 1].
pub fn default_random() -> f64 {
    1.0 - fastrand::f64()
}

impl ProxyConfig {
    /// A configuration with defaults for everything but the listen address and cache directory.
    pub fn new(listen: SocketAddr, cache_dir: impl Into<PathBuf>) -> Self {
        ProxyConfig {
            listen,
            cache_dir: cache_dir.into(),
            upstream: None,
            size_limit: 1 << 30,
            eviction_policy: EvictionPolicy::LeastRecentlyUsed,
            max_object_size: 256 << 20,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
            body_timeout: Some(Duration::from_secs(600)),
            lock_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_header_size: 64 * 1024,
            pseudonym: "hoard".to_string(),
            forwarding_headers: ForwardingHeaders::Strip,
            memory_cache_size: 128 << 20,
            memory_cache_ttl: Duration::from_secs(1),
            mitm: false,
            mitm_bypass: Vec::new(),
            ca_dir: None,
            extra_ca_files: Vec::new(),
            insecure_upstream: false,
            resolve: Vec::new(),
            allowed_connect_ports: vec![443],
            mitm_cert_cache_size: 1024,
            statistics: true,
            purge_allow: loopback_nets(),
            allow: loopback_nets(),
            proxy_auth: Vec::new(),
            admin: None,
            admin_allow: loopback_nets(),
            xfetch_beta: 1.0,
            stale_if_error: None,
            stale_while_revalidate: None,
            random: default_random,
            offline: false,
            rules: Vec::new(),
        }
    }

    /// The interception CA directory: `ca_dir`, else `<cache_dir>/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir
            .clone()
            .unwrap_or_else(|| self.cache_dir.join("ca"))
    }
}

/// `127.0.0.0/8` and `::1`: the default `allow`, `PURGE` and admin allow lists.
pub fn loopback_nets() -> Vec<IpNet> {
    vec![
        IpNet {
            addr: std::net::Ipv4Addr::new(127, 0, 0, 0).into(),
            prefix: 8,
        },
        IpNet {
            addr: std::net::Ipv6Addr::LOCALHOST.into(),
            prefix: 128,
        },
    ]
}

/// The startup warning for a proxy reachable from other hosts while `allow` still names
/// loopback only (every non-local client would get 403), or `None`.
pub fn exposure_warning(cfg: &ProxyConfig) -> Option<String> {
    if cfg.listen.ip().is_loopback() || cfg.allow != loopback_nets() {
        return None;
    }
    Some(format!(
        "listening on {} but `allow` is the default (loopback only): clients from other \
         hosts get 403; set allow (e.g. --allow 10.0.0.0/8) to admit them",
        cfg.listen
    ))
}

/// Errors that stop the proxy from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The cache directory could not be opened.
    #[error("cannot open cache directory {dir}: {source}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: crate::store::Error,
    },
    /// The interception CA could not be created or loaded.
    #[error("interception CA: {0}")]
    Ca(#[from] ca::CaError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Some other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
