//! The pooled client that talks to origins: HTTP/1.1, and h2 by ALPN over rustls for https
//! origins, verified against webpki roots plus `extra_ca_files`. Timeouts and failures become
//! [`UpstreamError`]s that name the status the client should get (502 or 504).
//!
//! Invariant: an origin certificate that does not verify is a 502 (`tls-verify`), never a
//! silent accept; only `insecure_upstream`, asked for explicitly, turns verification off.

use std::error::Error as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::body::{BoxError, ProxyBody};
use super::metrics::Metrics;
use super::origin::interim::{Interim, MAX_INTERIM};
use super::origin::retry::{self, Tracking};
use super::origin::{Origin, OriginBody, OriginFuture};
use super::request_body::{Check, ClientBodyFault, Upload};
use super::{ProxyConfig, ProxyError};

/// Most header fields an origin's HTTP/1 response head may have (one heap allocation per
/// response for the parse slots, on misses only).
pub const MAX_RESPONSE_FIELDS: usize = 512;
/// Largest origin response head accepted (larger: 502). Above the 64 KiB request limit so
/// origins with large cookies or CSP headers still work; well below hyper's ~400 KiB buffer.
pub const MAX_RESPONSE_HEAD: usize = 96 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unreachable, unresolvable, TLS failure other than verification.
    #[error("cannot connect to origin: {0}")]
    Connect(String),
    /// The origin's certificate did not verify (unknown issuer, wrong name, expired...).
    #[error("origin TLS certificate rejected: {0}")]
    Tls(String),
    /// Connecting took longer than `connect_timeout`.
    #[error("timed out connecting to origin")]
    ConnectTimeout,
    /// No response headers within `response_timeout`.
    #[error("origin did not respond within {0:?}")]
    ResponseTimeout(Duration),
    /// The origin sent something that is not HTTP, or reset the connection.
    #[error("bad response from origin: {0}")]
    Protocol(String),
    /// The client's own request body failed while it was being forwarded (its framing, cut
    /// short, stalled): not the origin's failure, never counted as one.
    #[error("the request body failed: {}", .0.as_str())]
    ClientBody(ClientBodyFault),
}

impl UpstreamError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Tls(_) | UpstreamError::Protocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::ClientBody(fault) => fault.status(),
        }
    }

    /// Short token for `Cache-Status` detail and logs.
    pub fn detail(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect-error",
            UpstreamError::Tls(_) => "tls-verify",
            UpstreamError::ConnectTimeout => "connect-timeout",
            UpstreamError::ResponseTimeout(_) => "response-timeout",
            UpstreamError::Protocol(_) => "bad-response",
            UpstreamError::ClientBody(fault) => fault.as_str(),
        }
    }

    /// The client's failure, not the origin's (the `hoard_upstream_errors_total` counter
    /// leaves it out).
    pub fn is_client_fault(&self) -> bool {
        matches!(self, UpstreamError::ClientBody(_))
    }
}

/// `--resolve HOST:PORT:ADDR` entries: connections to `HOST:PORT` go to `ADDR:PORT`, while TLS
/// still uses (and verifies) `HOST`.
#[derive(Debug, Clone, Default)]
pub struct ResolveMap {
    entries: Arc<Vec<(String, u16, IpAddr)>>,
}

impl ResolveMap {
    /// From `(host, port, addr)` triples.
    pub fn new(entries: &[(String, u16, IpAddr)]) -> Self {
        let entries = entries
            .iter()
            .map(|(h, p, a)| (h.trim_end_matches('.').to_ascii_lowercase(), *p, *a))
            .collect();
        ResolveMap {
            entries: Arc::new(entries),
        }
    }

    /// The address `host:port` is mapped to, if any.
    pub fn lookup(&self, host: &str, port: u16) -> Option<IpAddr> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.');
        self.entries
            .iter()
            .find(|(h, p, _)| *p == port && h.eq_ignore_ascii_case(host))
            .map(|(_, _, a)| *a)
    }
}

/// The TCP connector under the TLS layer: applies the [`ResolveMap`] by rewriting the URI it
/// connects to, so the TLS layer above still sees (and verifies) the original host name.
#[derive(Debug, Clone)]
pub struct ResolvingConnector {
    inner: HttpConnector<super::dns::Resolver>,
    map: ResolveMap,
}

impl tower_service::Service<Uri> for ResolvingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let port = dst
            .port_u16()
            .unwrap_or(if dst.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let dst = match dst.host().and_then(|h| self.map.lookup(h, port)) {
            Some(ip) => {
                let sa = SocketAddr::new(ip, port);
                match format!("http://{sa}/").parse::<Uri>() {
                    Ok(u) => u,
                    Err(e) => return Box::pin(async move { Err(e.into()) }),
                }
            }
            None => dst,
        };
        let fut = self.inner.call(dst);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// The connector of the pooled client: TCP connect and, for https origins, the TLS handshake,
/// together bounded by `connect_timeout` (as nginx's `proxy_connect_timeout` covers
/// `proxy_ssl`). An origin that accepts TCP and never answers the handshake is a connect
/// timeout, not a response timeout.
#[derive(Debug, Clone)]
pub struct TimedConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower_service::Service<Uri> for TimedConnector<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (fut, timeout) = (self.inner.call(dst), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the origin (TCP and TLS) took longer than connect-timeout",
                )) as BoxError),
            }
        })
    }
}

/// Accepts any origin certificate. Only used with `--insecure-upstream`, which the user must
/// ask for: it makes every intercepted or https origin open to impersonation.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Read every certificate of a PEM file.
pub fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ProxyError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ProxyError::Config(format!("extra CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ProxyError::Config(format!(
            "extra CA file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls client configuration for origins: webpki roots plus `extra_ca_files`, or no
/// verification at all with `insecure_upstream`.
pub fn client_tls_config(cfg: &ProxyConfig) -> Result<rustls::ClientConfig, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS versions: {e}")))?;
    if cfg.insecure_upstream {
        tracing::warn!("--insecure-upstream: origin certificates are NOT verified");
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in &cfg.extra_ca_files {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| {
                ProxyError::Config(format!("extra CA file {}: {e}", path.display()))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The origin client: an [`Origin`] (the pooled hyper client unless replaced) under the
/// response timeout, the head size limit and the upstream metrics.
#[derive(Debug, Clone)]
pub struct Upstream {
    origin: Arc<dyn Origin>,
    response_timeout: Duration,
    resolve: ResolveMap,
    metrics: Option<Arc<Metrics>>,
}

impl Upstream {
    /// Build the client from the configuration (timeouts, trust, `--resolve`).
    pub fn new(cfg: &ProxyConfig) -> Result<Self, ProxyError> {
        // Names are looked up with a bound on lookups at once (`dns`): a silent DNS server
        // must not take the blocking threads the store's reads need.
        let mut http = HttpConnector::new_with_resolver(super::dns::Resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let resolve = ResolveMap::new(&cfg.resolve);
        let tcp = ResolvingConnector {
            inner: http,
            map: resolve.clone(),
        };
        let tls = client_tls_config(cfg)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Tracking(tcp));
        let connector = TimedConnector {
            inner: https,
            timeout: cfg.connect_timeout,
        };
        let client = || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                // hyper's default is 100 fields; a response head is bounded by its size
                // (`MAX_RESPONSE_HEAD`), and sites with many cookies and policies send more.
                .http1_max_headers(MAX_RESPONSE_FIELDS)
                .build(connector.clone())
        };
        let pools = origin_pools(cfg, crate::runtime::usable_cpus());
        Ok(Upstream {
            origin: Arc::new(HyperOrigin((0..pools).map(|_| client()).collect())),
            response_timeout: cfg.response_timeout,
            resolve,
            metrics: None,
        })
    }

    /// The `--resolve` map (shared with CONNECT tunnels).
    pub fn resolve(&self) -> &ResolveMap {
        &self.resolve
    }

    /// Send through `origin` instead of the network (the pipeline's unit tests); timeouts,
    /// limits and metrics stay as they are.
    #[cfg(test)]
    pub fn with_origin(mut self, origin: Arc<dyn Origin>) -> Self {
        self.origin = origin;
        self
    }

    /// Count every exchange (and its failure) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The per-chunk body timeout (same as the response timeout).
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Send a request and wait for the response head: at most `response_timeout` from the
    /// send, or, for a request with a body, from the body's end (a slow upload is bounded by
    /// its own stall timer, an origin that takes none of it by `response_timeout`). A failure
    /// of the client's own body is [`UpstreamError::ClientBody`], counted as no origin error.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<OriginBody>, UpstreamError> {
        let start = std::time::Instant::now();
        let upload = match req.body() {
            ProxyBody::Client(b) => Some(b.upload()),
            _ => None,
        };
        let sent = self.origin.send(req);
        let res = match &upload {
            None => tokio::time::timeout(self.response_timeout, sent)
                .await
                .unwrap_or(Err(UpstreamError::ResponseTimeout(self.response_timeout))),
            Some(up) => head_after_upload(sent, up, self.response_timeout).await,
        };
        let res = match (res, upload.and_then(|up| up.fault())) {
            (Err(_), Some(fault)) => Err(UpstreamError::ClientBody(fault)),
            (res, _) => res.and_then(checked_head),
        };
        if let Some(m) = &self.metrics {
            let error = res.as_ref().err().filter(|e| !e.is_client_fault());
            m.upstream(start.elapsed(), error.map(UpstreamError::detail));
        }
        res
    }
}

/// Wait for `sent` while `up` is forwarded: the response timeout runs from the body's end,
/// and while it streams only when the origin takes none of it ([`Upload::check`]).
async fn head_after_upload(
    sent: OriginFuture<'_>,
    up: &Upload,
    limit: Duration,
) -> Result<Response<OriginBody>, UpstreamError> {
    let mut sent = sent;
    let mut seen = up.frames();
    let wake = tokio::time::sleep(limit);
    tokio::pin!(wake);
    loop {
        tokio::select! {
            res = &mut sent => return res,
            () = &mut wake => match up.check(&mut seen, tokio::time::Instant::now(), limit) {
                Check::At(at) => wake.as_mut().reset(at),
                Check::TimedOut => return Err(UpstreamError::ResponseTimeout(limit)),
            },
        }
    }
}

/// The checks of a response head: its size, its transfer codings; framing fields it may not
/// pass on removed.
fn checked_head(mut res: Response<OriginBody>) -> Result<Response<OriginBody>, UpstreamError> {
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and hyper has
    // decoded the chunked framing; a stale Content-Length must not travel on.
    // hyper removes only `chunked`: any other coding (gzip, ...), on any of the
    // field's lines, would be passed on and stored still applied, labelled as the
    // plain body (RFC 9112 6.1, 7).
    let codings = res.headers().get_all(http::header::TRANSFER_ENCODING);
    let unsupported = codings.iter().find(|v| !only_chunked(v)).cloned();
    if codings.iter().next().is_some() {
        res.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    // RFC 9110 8.6, 15.3.5: a 204 (or 1xx) has no body, whatever length it claims;
    // passed on, the length would make the next hop read the following response.
    let status = res.status();
    if status == http::StatusCode::NO_CONTENT || status.is_informational() {
        res.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    match head_size(&res) {
        n if n > MAX_RESPONSE_HEAD => Err(UpstreamError::Protocol(format!(
            "response head of {n} bytes is over the {MAX_RESPONSE_HEAD} byte limit"
        ))),
        _ if unsupported.is_some() => Err(UpstreamError::Protocol(format!(
            "response transfer coding {:?} is not supported",
            unsupported.as_ref().map(|v| v.to_str().unwrap_or("?"))
        ))),
        _ => Ok(res),
    }
}

/// Origin connection pools for `cfg` on `cpus` CPUs: one per thread in the per-core mode, so a
/// connection's task and the requests it carries run on one thread, and a thread that is busy
/// (or stalled) holds up only its own clients' origin exchanges, never another thread's; one
/// otherwise. (Measured on 2 cores: no change in misses per second or CPU per miss either
/// way; the point is the isolation. The cost: up to that many idle connections per origin.)
fn origin_pools(cfg: &ProxyConfig, cpus: std::num::NonZeroUsize) -> usize {
    match crate::runtime::flavor(cfg.threads, cpus, cfg.scheduler) {
        crate::runtime::Flavor::PerCore(n) => n.get(),
        _ => 1,
    }
}

/// The pooled hyper client (HTTP/1.1, h2 by ALPN, rustls) as an [`Origin`]: one client (and
/// connection pool) per per-core thread, picked by [`crate::runtime::core_index`]; one in
/// every other mode.
#[derive(Debug)]
struct HyperOrigin(Vec<OriginClient>);

type OriginClient = Client<TimedConnector<HttpsConnector<Tracking<ResolvingConnector>>>, ProxyBody>;

impl Origin for HyperOrigin {
    fn send(&self, req: Request<ProxyBody>) -> OriginFuture<'_> {
        let client = &self.0[crate::runtime::core_index() % self.0.len()];
        Box::pin(async move {
            let interim = Interim::default();
            tokio::select! {
                // Sent once more when a reused connection closed before a head (`retry`).
                res = retry::send(client, req, &interim) => res
                    .map(|r| r.map(OriginBody::Hyper))
                    .map_err(|e| classify(&e)),
                () = interim.exceeded() => Err(UpstreamError::Protocol(format!(
                    "more than {MAX_INTERIM} interim (1xx) responses before a final one"
                ))),
            }
        })
    }
}

/// A `Transfer-Encoding` value that names `chunked` and nothing else.
fn only_chunked(v: &http::HeaderValue) -> bool {
    let mut codings = v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii);
    codings.all(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// Approximate size of a response head on the wire.
fn head_size<B>(res: &Response<B>) -> usize {
    res.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 16
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut chain = String::new();
    let mut timed_out = false;
    let mut tls: Option<String> = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        if tls.is_none() {
            tls = find_rustls(s).and_then(tls_verify_reason);
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&s.to_string());
        src = s.source();
    }
    if chain.is_empty() {
        chain = e.to_string();
    }
    if let Some(reason) = tls {
        return UpstreamError::Tls(reason);
    }
    if e.is_connect() {
        if timed_out {
            UpstreamError::ConnectTimeout
        } else {
            UpstreamError::Connect(chain)
        }
    } else {
        UpstreamError::Protocol(chain)
    }
}

/// A rustls error in `e`, looking through `io::Error` wrappers (whose `source()` skips the
/// wrapped error itself; hyper-rustls wraps tokio-rustls's `io::Error` in another one).
fn find_rustls<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    for _ in 0..8 {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
    None
}

/// The reason, when a rustls error is a failed verification of the origin's certificate.
fn tls_verify_reason(e: &rustls::Error) -> Option<String> {
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType => Some(e.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pool_per_per_core_thread_and_one_otherwise() {
        use crate::runtime::Scheduler;
        use std::num::NonZeroUsize;
        let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent");
        let four = NonZeroUsize::new(4).unwrap();
        for (threads, scheduler, cpus, pools) in [
            (None, Scheduler::PerCore, four, 4),
            (NonZeroUsize::new(3), Scheduler::PerCore, four, 3),
            (None, Scheduler::WorkStealing, four, 1),
            (None, Scheduler::PerCore, NonZeroUsize::MIN, 1),
        ] {
            (cfg.threads, cfg.scheduler) = (threads, scheduler);
            assert_eq!(
                super::origin_pools(&cfg, cpus),
                pools,
                "{threads:?} {scheduler:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn only_chunked_transfer_codings() {
        let cases = [
            ("chunked", true),
            ("Chunked", true),
            ("chunked , chunked", true),
            ("gzip, chunked", false),
            ("gzip", false),
            ("identity", false),
            ("chunked, identity", false),
        ];
        for (v, want) in cases {
            assert_eq!(
                only_chunked(&http::HeaderValue::from_static(v)),
                want,
                "{v}"
            );
        }
    }

    #[test]
    fn resolve_map_matches_host_and_port() {
        let m = ResolveMap::new(&[("Origin.Test".into(), 8443, "127.0.0.1".parse().unwrap())]);
        assert_eq!(
            m.lookup("origin.test", 8443),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            m.lookup("origin.test.", 8443),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(m.lookup("origin.test", 443), None);
        assert_eq!(m.lookup("other.test", 8443), None);
    }
}
