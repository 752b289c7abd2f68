//! Integration tests of CONNECT interception: a loopback TLS origin with certificates from a
//! test CA, reached under the name `origin.test` through `--resolve`; clients going through
//! hoard with CONNECT and trusting hoard's CA (hand-made h1/h2 client, reqwest, curl).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hoard::proxy::{ProxyConfig, Server, ServerHandle};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tempfile::TempDir;

use crate::support;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod browser;
mod ca_files;
mod connect_hosts;
mod intercept;
mod python;
mod robustness;
mod shutdown;
mod wget;

/// The name tests use for their origin.
pub const ORIGIN_HOST: &str = "origin.test";

/// A throwaway CA for test origins, and the PEM file holding its certificate.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem_path: PathBuf,
    pub der: CertificateDer<'static>,
    _dir: TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hoard test origin CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("test-ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        TestCa {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
            pem_path,
            _dir: dir,
        }
    }

    /// A server config for `origin.test` and 127.0.0.1, ALPN h2 + http/1.1.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec![ORIGIN_HOST.into(), "127.0.0.1".into()]).unwrap();
        params.use_authority_key_identifier_extension = true;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

/// A loopback HTTPS origin counting the requests it answers: the shared test origin
/// (`tests/support`) over TLS with a certificate from the test CA.
pub struct Origin(support::Origin);

impl std::ops::Deref for Origin {
    type Target = support::Origin;
    fn deref(&self) -> &support::Origin {
        &self.0
    }
}

impl Origin {
    pub fn count(&self) -> usize {
        self.hits()
    }

    /// Paths: `/slow*` waits 300 ms; `/nostore*` is `no-store`; anything else `max-age=60`
    /// (other methods than GET: `no-store`). Bodies say the path, the method and the HTTP
    /// version the origin saw, and the request body's length.
    pub async fn start(ca: &TestCa) -> Origin {
        Origin(support::Origin::start_tls(ca.server_config(), |_, req| origin_answer(req)).await)
    }
}

fn origin_answer(req: &Request<Bytes>) -> support::Act {
    let path = req.uri().path();
    let method = req.method();
    let delay = if path.starts_with("/slow") {
        Duration::from_millis(300)
    } else {
        Duration::ZERO
    };
    let cc = if path.starts_with("/nostore") || method != http::Method::GET {
        "no-store"
    } else {
        "max-age=60"
    };
    let body = format!(
        "{method} {path} {:?} body={}",
        req.version(),
        req.body().len()
    );
    support::Act::Reply(
        delay,
        support::reply(
            200,
            &[("cache-control", cc), ("content-type", "text/plain")],
            body,
        ),
    )
}

/// A running proxy with its cache directory.
pub struct Proxy {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub dir: Arc<TempDir>,
}

impl Proxy {
    /// A proxy with `--mitm`, `--resolve origin.test:PORT:127.0.0.1` and the test CA trusted.
    pub fn config(dir: &TempDir, ca: &TestCa, origin: &Origin) -> ProxyConfig {
        let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
        cfg.mitm = true;
        cfg.resolve = vec![(
            ORIGIN_HOST.to_string(),
            origin.addr.port(),
            "127.0.0.1".parse().unwrap(),
        )];
        cfg.extra_ca_files = vec![ca.pem_path.clone()];
        cfg
    }

    pub async fn start(cfg: ProxyConfig, dir: Arc<TempDir>) -> Proxy {
        let server = Server::bind(cfg).await.unwrap();
        let addr = server.local_addr();
        Proxy {
            handle: Some(server.spawn()),
            addr,
            dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// hoard's CA certificate (as clients must trust it).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca").join("hoard-ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(self.ca_pem_path()).unwrap()
    }
}

/// Everything a test usually needs: test CA, origin, proxy.
pub struct Setup {
    pub ca: TestCa,
    pub origin: Origin,
    pub proxy: Proxy,
}

impl Setup {
    pub async fn new() -> Setup {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut ProxyConfig)) -> Setup {
        let ca = TestCa::new();
        let origin = Origin::start(&ca).await;
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut cfg = Proxy::config(&dir, &ca, &origin);
        tweak(&mut cfg);
        let proxy = Proxy::start(cfg, dir).await;
        Setup { ca, origin, proxy }
    }

    /// `origin.test:PORT`.
    pub fn authority(&self) -> String {
        format!("{ORIGIN_HOST}:{}", self.origin.addr.port())
    }
}

/// Send `CONNECT authority` to the proxy; return the stream after a 2xx, or the status line.
pub async fn connect(proxy: SocketAddr, authority: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if !matches!(s.read(&mut b).await, Ok(1)) {
            return Err(String::from_utf8_lossy(&head).into_owned());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// A client config trusting only `root`, offering `alpn`.
pub fn client_config(root: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

/// One response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }
}

/// A client connection inside a CONNECT tunnel through the proxy, over TLS, h1 or h2 by ALPN.
pub enum Inner {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Inner {
    /// CONNECT, TLS handshake trusting `root` with SNI `host`, then h2 if `h2` (else h1).
    pub async fn open(
        proxy: SocketAddr,
        authority: &str,
        root: CertificateDer<'static>,
        h2: bool,
    ) -> Result<Inner, String> {
        let tcp = connect(proxy, authority).await?;
        let host = authority.rsplit_once(':').unwrap().0.to_string();
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tokio_rustls::TlsConnector::from(client_config(root, alpn))
            .connect(ServerName::try_from(host).unwrap(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        assert_eq!(negotiated_h2, h2, "ALPN");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Inner::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Inner::H1(send))
        }
    }

    pub async fn get(&mut self, authority: &str, path: &str) -> Got {
        self.send("GET", authority, path, Bytes::new()).await
    }

    pub async fn send(&mut self, method: &str, authority: &str, path: &str, body: Bytes) -> Got {
        let (uri, h2) = match self {
            Inner::H1(_) => (path.to_string(), false),
            Inner::H2(_) => (format!("https://{authority}{path}"), true),
        };
        let mut b = Request::builder().method(method).uri(uri);
        if !h2 {
            b = b.header("host", authority);
        }
        let req = b.body(Full::new(body)).unwrap();
        let res = match self {
            Inner::H1(s) => s.send_request(req).await.unwrap(),
            Inner::H2(s) => s.send_request(req).await.unwrap(),
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
