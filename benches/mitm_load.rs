//! Load client for cache hits through hoard: plain HTTP (absolute-form through the forward
//! proxy) versus HTTPS intercepted with `--mitm` (CONNECT + TLS + HTTP/1.1 inside), on
//! keep-alive connections, in one run. Prints requests/s and p99 latency for both and the
//! ratio intercepted/plain.
//!
//! Bounded: a fixed number of connections (`--conns`, default 32) for a fixed time (`--secs`,
//! default 5) per mode. Origins and proxy run in this process on 127.0.0.1.
//!
//! `cargo bench --bench mitm_load -- --conns 32 --secs 5`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoard::proxy::{ProxyConfig, Server};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 1024;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let conns = arg("--conns", 32).clamp(1, 1024) as usize;
    let secs = arg("--secs", 5).clamp(1, 120);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(conns, Duration::from_secs(secs)));
}

async fn run(conns: usize, dur: Duration) {
    // Test CA and a TLS origin for origin.test.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mitm_load origin CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["origin.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut origin_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    origin_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls_origin = origin(Some(tokio_rustls::TlsAcceptor::from(Arc::new(origin_tls)))).await;
    let plain_origin = origin(None).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("origin-ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("cache"));
    cfg.mitm = true;
    cfg.resolve = vec![(
        "origin.test".into(),
        tls_origin.port(),
        "127.0.0.1".parse().unwrap(),
    )];
    cfg.extra_ca_files = vec![ca_pem];
    cfg.max_connections = 4096;
    let server = Server::bind(cfg).await.unwrap();
    let proxy = server.local_addr();
    let handle = server.spawn();
    let hoard_ca: CertificateDer<'static> = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(dir.path().join("cache/ca/hoard-ca.pem")).unwrap()
    };
    let client_tls = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(hoard_ca).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };

    let plain = Mode::Plain(format!("http://{plain_origin}/bench"));
    let https = Mode::Https {
        authority: format!("origin.test:{}", tls_origin.port()),
        tls: client_tls,
    };
    // Warm: one miss each, then they are hits.
    for m in [&plain, &https] {
        let mut c = m.open(proxy).await;
        let status = c.get(m).await;
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The modes alternate in rounds so that background load on the machine hits both alike.
    let rounds = arg("--rounds", 5).clamp(1, 100) as u32;
    println!(
        "mitm_load: {conns} keep-alive connections, {dur:?} per mode in {rounds} alternating rounds, \
         {BODY_LEN} B hits"
    );
    let (mut p, mut h) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        p.add(load(proxy, &plain, conns, dur / rounds).await);
        h.add(load(proxy, &https, conns, dur / rounds).await);
    }
    let (p, h) = (p.stats(), h.stats());
    p.print("plain HTTP hits      ");
    h.print("HTTPS intercepted hits");
    println!(
        "ratio intercepted/plain: rps {:.2}, p99 {:.2} (target rps ratio >= 0.7)",
        h.rps / p.rps,
        h.p99.as_secs_f64() / p.p99.as_secs_f64()
    );
    handle.shutdown().await;
}

#[derive(Default)]
struct Samples {
    lat: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    fn stats(mut self) -> Stats {
        let all = &mut self.lat;
        all.sort_unstable();
        let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        Stats {
            rps: all.len() as f64 / self.elapsed.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
            errors: self.errors,
            n: all.len(),
        }
    }
}

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    n: usize,
}

impl Stats {
    fn print(&self, label: &str) {
        println!(
            "{label}: {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} errors)",
            self.rps,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.n,
            self.errors
        );
    }
}

enum Mode {
    Plain(String),
    Https {
        authority: String,
        tls: Arc<rustls::ClientConfig>,
    },
}

struct Conn(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl Mode {
    async fn open(&self, proxy: SocketAddr) -> Conn {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match self {
            Mode::Plain(_) => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Conn(send)
            }
            Mode::Https { authority, tls } => {
                tcp.write_all(
                    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "CONNECT answer");
                    head.push(b[0]);
                }
                assert!(head.starts_with(b"HTTP/1.1 200"));
                let host = authority.rsplit_once(':').unwrap().0.to_string();
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(ServerName::try_from(host).unwrap(), tcp)
                    .await
                    .unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Conn(send)
            }
        }
    }
}

impl Conn {
    async fn get(&mut self, mode: &Mode) -> StatusCode {
        let req = match mode {
            Mode::Plain(url) => {
                let host = url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or("");
                Request::get(url.as_str())
                    .header("host", host)
                    .body(Empty::new())
                    .unwrap()
            }
            Mode::Https { authority, .. } => Request::get("/bench")
                .header("host", authority.as_str())
                .body(Empty::new())
                .unwrap(),
        };
        match self.0.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let cs = res.headers().get("cache-status").cloned();
                match res.into_body().collect().await.map(|b| b.to_bytes()) {
                    Ok(b) if b.len() == BODY_LEN => status,
                    Ok(b) => {
                        eprintln!("{status} {cs:?} {}", String::from_utf8_lossy(&b));
                        StatusCode::BAD_GATEWAY
                    }
                    Err(_) => StatusCode::BAD_GATEWAY,
                }
            }
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

async fn load(proxy: SocketAddr, mode: &Mode, conns: usize, dur: Duration) -> Samples {
    let mode = Arc::new(match mode {
        Mode::Plain(u) => Mode::Plain(u.clone()),
        Mode::Https { authority, tls } => Mode::Https {
            authority: authority.clone(),
            tls: tls.clone(),
        },
    });
    // Connections (and TLS handshakes) are made before the clock starts: keep-alive hits.
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(mode.open(proxy).await);
    }
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut c| {
            let mode = mode.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if c.get(&mode).await != StatusCode::OK {
                        errors += 1;
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    Samples {
        lat: all,
        errors,
        elapsed: start.elapsed(),
    }
}

/// An origin answering every path with a cacheable 1 KiB body; TLS if `tls` is given.
async fn origin(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("cache-control", "max-age=3600")
                            .body(Full::new(Bytes::from(vec![b'x'; BODY_LEN])))
                            .unwrap(),
                    )
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acc) => {
                        if let Ok(s) = acc.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    addr
}
