//! The shared tier over TLS (`rediss://`) with a real `redis-server` answering TLS only, its
//! certificate signed by a CA made here (rcgen) that only `shared-ca-file` trusts: two hoards
//! trusting it share (one server, and a 3-master cluster whose bus is TLS too); a hoard
//! without it cannot connect, says why, and fails no request. With `tls-auth-clients yes`
//! (mutual TLS), only hoards presenting a client certificate from that CA
//! (`shared-cert-file`, `shared-key-file`) get in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tempfile::TempDir;

use super::cluster::cluster_of;
use super::proxies::{connected, counting_origin, sharing};
use super::{Redis, eventually, have_redis, tier_with};
use crate::proxy::harness::*;

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in a temp dir.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "hoard test Redis CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["hoard".to_string()]).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "hoard test client");
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        write("client.pem", client_cert.pem());
        write("client.key", client_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn redis(&self) -> Redis {
        self.redis_with(&[])
    }

    /// A TLS-only server that wants a client certificate from the CA (`client.pem`).
    fn mutual(&self, extra: &[&str]) -> Redis {
        Redis::start_mutual_tls(
            &self.path("server.pem"),
            &self.path("server.key"),
            &self.path("ca.pem"),
            (&self.path("client.pem"), &self.path("client.key")),
            extra,
        )
    }

    fn redis_with(&self, extra: &[&str]) -> Redis {
        Redis::start_tls(
            &self.path("server.pem"),
            &self.path("server.key"),
            &self.path("ca.pem"),
            extra,
        )
    }
}

async fn hoard_trusting(
    url: &str,
    ca: Option<&Path>,
) -> (hoard::proxy::ServerHandle, std::net::SocketAddr, TempDir) {
    hoard_presenting(url, ca, None).await
}

/// A hoard trusting `ca` and presenting the client certificate and key `client`.
async fn hoard_presenting(
    url: &str,
    ca: Option<&Path>,
    client: Option<(PathBuf, PathBuf)>,
) -> (hoard::proxy::ServerHandle, std::net::SocketAddr, TempDir) {
    let dir = TempDir::new().unwrap();
    let (url, ca) = (url.to_string(), ca.map(Path::to_path_buf));
    let (h, a) = start_proxy_in(dir.path(), None, move |c| {
        c.shared = Some(url);
        c.shared_ca_file = ca;
        c.shared_cert_file = client.as_ref().map(|(cert, _)| cert.clone());
        c.shared_key_file = client.map(|(_, key)| key);
        c.shared_timeout = Duration::from_millis(500);
        c.lock_timeout = Duration::from_secs(10);
    })
    .await;
    (h, a, dir)
}

/// Two hoards on `redis` that trust `ca` but cannot get in (untrusted server, or no client
/// certificate): each answers `path` from the origin, and nothing reaches Redis.
async fn two_hoards_kept_out_serve_from_the_origin(redis: &Redis, ca: Option<&Path>, path: &str) {
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_h, p, _d) = hoard_trusting(&redis.url(), ca).await;
    let (_h2, q, _d2) = hoard_trusting(&redis.url(), ca).await;
    let url = origin.url(path);
    for proxy in [p, q] {
        let r = get(proxy, &url).await;
        assert_eq!((r.status, r.text()), (200, format!("page {path}")));
        r.cache_status().assert_not_hit();
    }
    assert_eq!(origin.count("GET", path), 2, "nothing was shared");
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "nothing reached Redis");
}

/// Two hoards on the TLS cluster `nodes`, trusting `ca` and presenting `client`, started
/// with no warm-up: 30 URLs fetched through one are hits through the other, with keys on
/// every master.
async fn two_hoards_share_on_every_master(
    nodes: &[Redis],
    ca: &Path,
    client: Option<(PathBuf, PathBuf)>,
) {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let url = format!("rediss+cluster://{}", hosts.join(","));
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let (_ha, a, _da) = hoard_presenting(&url, Some(ca), client.clone()).await;
    let (_hb, b, _db) = hoard_presenting(&url, Some(ca), client).await;
    for i in 0..30 {
        let path = format!("/tls-spread{i}");
        assert_eq!(get(a, &origin.url(&path)).await.status, 200);
        get(b, &origin.url(&path)).await.cache_status().assert_hit();
        assert_eq!(origin.count("GET", &path), 1);
    }
    for n in nodes {
        let keys: u64 = n.cli(&["DBSIZE"]).parse().unwrap_or(0);
        assert!(keys > 0, "no keys on the master at port {}", n.port);
    }
}

#[tokio::test]
async fn two_hoards_over_rediss_with_a_private_ca_share_a_url() {
    if !have_redis("two_hoards_over_rediss_with_a_private_ca_share_a_url") {
        return;
    }
    let pki = Pki::new();
    let redis = pki.redis();
    assert!(redis.url().starts_with("rediss://"));
    let ca = pki.path("ca.pem");
    let (origin, _) = counting_origin(Duration::from_millis(200)).await;
    let (_ha, a, _da) = hoard_trusting(&redis.url(), Some(&ca)).await;
    let (_hb, b, _db) = hoard_trusting(&redis.url(), Some(&ca)).await;
    connected(&redis, 2).await;
    sharing(a, b, &origin).await;

    let url = origin.url("/over-tls");
    let r = get(a, &url).await;
    assert_eq!((r.status, r.text().as_str()), (200, "page /over-tls"));
    // B has a cache directory of its own: a hit there without the origin came from Redis.
    get(b, &url).await.cache_status().assert_hit();
    assert_eq!(origin.count("GET", "/over-tls"), 1, "one origin fetch");
    assert_ne!(redis.cli(&["DBSIZE"]), "0", "rows went over TLS");
}

#[tokio::test]
async fn a_hoard_without_the_ca_cannot_connect_and_serves_from_the_origin() {
    if !have_redis("a_hoard_without_the_ca_cannot_connect_and_serves_from_the_origin") {
        return;
    }
    let pki = Pki::new();
    let redis = pki.redis();

    // The tier itself says why: the server's certificate is not trusted.
    let untrusting = hoard::entries::shared::SharedTier::start(
        hoard::entries::shared::SharedConfig::new(redis.url()),
    )
    .unwrap();
    assert!(!untrusting.wait_ready(Duration::from_secs(1)).await);
    let why = untrusting.status().connect_error.unwrap_or_default();
    assert!(
        why.to_ascii_lowercase().contains("certificate"),
        "connect error: {why:?}"
    );
    // The same with the CA file connects (the check above is about trust, not the server).
    tier_with(&redis.url(), "hoard:", |c| {
        c.ca_file = Some(pki.path("ca.pem"))
    })
    .await;

    // Through a proxy: never a failed request, the origin serves each time.
    two_hoards_kept_out_serve_from_the_origin(&redis, None, "/untrusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hoards_over_a_tls_cluster_share_urls_on_every_master() {
    if !have_redis("two_hoards_over_a_tls_cluster_share_urls_on_every_master") {
        return;
    }
    let pki = Pki::new();
    let nodes = cluster_of(|extra| pki.redis_with(extra));
    two_hoards_share_on_every_master(&nodes, &pki.path("ca.pem"), None).await;
}

#[tokio::test]
async fn mutual_tls_shares_only_with_a_client_certificate() {
    if !have_redis("mutual_tls_shares_only_with_a_client_certificate") {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let redis = pki.mutual(&[]);
    let ca = pki.path("ca.pem");

    // Trusting the server is not enough: the server wants a certificate and gets none.
    let anonymous = hoard::entries::shared::SharedTier::start({
        let mut c = hoard::entries::shared::SharedConfig::new(redis.url());
        c.ca_file = Some(ca.clone());
        c
    })
    .unwrap();
    // The first attempt fails (bounded wait: the handshake may be slow on a loaded machine).
    eventually(Duration::from_secs(10), || {
        anonymous.status().connect_error.is_some()
    })
    .await;
    let s = anonymous.status();
    assert!(!s.connected && s.connect_error.is_some(), "{s:?}");
    two_hoards_kept_out_serve_from_the_origin(&redis, Some(&ca), "/no-client-cert").await;

    // With the client certificate: connected at start, and sharing.
    let (origin, _) = counting_origin(Duration::ZERO).await;
    let client = Some((cert, key));
    let (_ha, a, _da) = hoard_presenting(&redis.url(), Some(&ca), client.clone()).await;
    let (_hb, b, _db) = hoard_presenting(&redis.url(), Some(&ca), client).await;
    let url = origin.url("/client-cert");
    assert_eq!(get(a, &url).await.status, 200);
    let via_b = get(b, &url).await;
    via_b.cache_status().assert_hit();
    assert!(
        via_b.cache_status().raw.contains("shared"),
        "{:?}",
        via_b.cache_status().raw
    );
    assert_eq!(origin.count("GET", "/client-cert"), 1, "one origin fetch");
    assert_ne!(redis.cli(&["DBSIZE"]), "0", "rows went over mutual TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_a_cluster_shares_urls_on_every_master() {
    if !have_redis("mutual_tls_on_a_cluster_shares_urls_on_every_master") {
        return;
    }
    let pki = Pki::new();
    let nodes = cluster_of(|extra| pki.mutual(extra));
    let client = Some((pki.path("client.pem"), pki.path("client.key")));
    two_hoards_share_on_every_master(&nodes, &pki.path("ca.pem"), client).await;
}
