//! The pooled client that talks to origins: HTTP/1.1, and h2 by ALPN over rustls (webpki
//! roots) for https origins. Timeouts and failures become [`UpstreamError`]s that name the
//! status the client should get (502 or 504).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use super::metrics::Metrics;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unreachable, unresolvable, TLS failure.
    #[error("cannot connect to origin: {0}")]
    Connect(String),
    /// Connecting took longer than `connect_timeout`.
    #[error("timed out connecting to origin")]
    ConnectTimeout,
    /// No response headers within `response_timeout`.
    #[error("origin did not respond within {0:?}")]
    ResponseTimeout(Duration),
    /// The origin sent something that is not HTTP, or reset the connection.
    #[error("bad response from origin: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// Short token for `Cache-Status` detail and logs.
    pub fn detail(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect-error",
            UpstreamError::ConnectTimeout => "connect-timeout",
            UpstreamError::ResponseTimeout(_) => "response-timeout",
            UpstreamError::Protocol(_) => "bad-response",
        }
    }
}

/// A pooled origin client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    response_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl Upstream {
    /// Build the client.
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Upstream {
            client,
            response_timeout,
            metrics: None,
        }
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

    /// Send a request; wait at most `response_timeout` for the response head.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        let start = std::time::Instant::now();
        let res = match tokio::time::timeout(self.response_timeout, self.client.request(req)).await
        {
            Err(_) => Err(UpstreamError::ResponseTimeout(self.response_timeout)),
            Ok(Ok(mut res)) => {
                // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and hyper has
                // decoded the chunked framing; a stale Content-Length must not travel on.
                if res.headers().contains_key(http::header::TRANSFER_ENCODING) {
                    res.headers_mut().remove(http::header::CONTENT_LENGTH);
                }
                Ok(res)
            }
            Ok(Err(e)) => Err(classify(&e)),
        };
        if let Some(m) = &self.metrics {
            m.upstream(
                start.elapsed(),
                res.as_ref().err().map(UpstreamError::detail),
            );
        }
        res
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut chain = String::new();
    let mut timed_out = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
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
