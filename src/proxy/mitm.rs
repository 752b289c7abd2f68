//! CONNECT interception (`--mitm`): terminate the client's TLS on the upgraded CONNECT stream
//! with a leaf certificate for the requested host signed by hoard's CA, then serve the inner
//! HTTP/1.1 or h2 connection (by ALPN) through the same dispatch as plain requests, with the
//! absolute target `https://{CONNECT authority}{path}`.
//!
//! Invariants: the target of every inner request is the CONNECT authority, whatever the inner
//! `Host` or SNI says; a leaf is only ever made for one plain DNS name or IP address
//! (`hostname::check_name`: never a wildcard, whatever the CONNECT host or SNI); leaf
//! certificates are cached in memory, bounded, and renewed well before they expire; a failed
//! or abandoned handshake (a ClientHello that never comes included) ends the connection's task
//! (bounded by `header_timeout`), never the proxy; on shutdown an intercepted connection is
//! closed gracefully like the listener's (its request in flight finishes, within
//! `shutdown_timeout`) and the shutdown waits for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::LazyConfigAcceptor;

use super::ProxyConfig;
use super::activity::{Activity, GuardedBody, InFlight};
use super::ca::{CaError, CertAuthority};
use super::hostname;
use super::observed::Observed;
use super::server::{ConnLimits, ConnSlot, drive};
use super::service::State;

/// A cached leaf is replaced after this long (leaves are valid for days).
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// Interception state shared by all connections.
#[derive(Debug)]
pub struct Interceptor {
    leaves: Arc<Leaves>,
    /// Server config whose resolver picks the leaf by SNI (the common case: SNI == CONNECT host).
    by_sni: Arc<rustls::ServerConfig>,
    bypass: Vec<String>,
}

impl Interceptor {
    /// Load or create the CA (blocking file I/O) and prepare the TLS server side.
    pub fn new(cfg: &ProxyConfig) -> Result<Interceptor, CaError> {
        let ca = CertAuthority::load_or_create(&cfg.ca_dir())?;
        tracing::info!(ca = %ca.cert_path().display(), "CONNECT interception enabled");
        let leaves = Arc::new(Leaves {
            ca,
            cache: Mutex::new(HashMap::new()),
            cap: cfg.mitm_cert_cache_size.max(1),
            tick: AtomicU64::new(0),
        });
        let by_sni = server_config(Arc::new(BySni(leaves.clone())))?;
        let bypass = cfg
            .mitm_bypass
            .iter()
            .map(|p| normalize_host(p))
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Interceptor {
            leaves,
            by_sni,
            bypass,
        })
    }

    /// Is `host` to be tunnelled rather than intercepted?
    pub fn bypassed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.bypass.iter().any(|p| pattern_matches(p, &host))
    }
}

/// Lowercase, without brackets or a trailing dot.
fn normalize_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `*` matches everything; `*.example.com` matches `example.com` and every name under it;
/// anything else matches exactly.
fn pattern_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host == domain
                || (host.len() > domain.len()
                    && host.ends_with(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
        }
        None => host == pattern,
    }
}

fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CaError::Cert(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Bounded in-memory cache of leaf certificates, evicting the least recently used.
struct Leaves {
    ca: CertAuthority,
    cache: Mutex<HashMap<String, Leaf>>,
    cap: usize,
    tick: AtomicU64,
}

struct Leaf {
    key: Arc<CertifiedKey>,
    made: Instant,
    used: u64,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaves")
            .field("ca", &self.ca)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Leaves {
    /// The leaf for `host`; `None` (the handshake fails) for a name that is not one plain DNS
    /// name or IP address, whether it came from CONNECT or from the client's SNI.
    fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = normalize_host(host);
        if let Err(why) = hostname::check_name(&host) {
            tracing::info!(%host, reason = why.as_str(), "no leaf certificate for this name");
            return None;
        }
        let now = self.tick.fetch_add(1, Ordering::Relaxed);
        {
            let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = map.get_mut(&host)
                && l.made.elapsed() < LEAF_REFRESH
            {
                l.used = now;
                return Some(l.key.clone());
            }
        }
        let key = match self.ca.leaf(&host) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot make a leaf certificate");
                return None;
            }
        };
        let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.cap && !map.contains_key(&host) {
            let oldest = map
                .iter()
                .min_by_key(|(_, l)| l.used)
                .map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                map.remove(&h);
            }
        }
        map.insert(
            host,
            Leaf {
                key: key.clone(),
                made: Instant::now(),
                used: now,
            },
        );
        Some(key)
    }
}

/// Picks the leaf by SNI.
#[derive(Debug)]
struct BySni(Arc<Leaves>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.get(hello.server_name()?)
    }
}

/// Always the same leaf (no SNI, or SNI other than the CONNECT host).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// After the `200` to CONNECT: accept TLS on the upgraded stream and serve the inner
/// connection. `host` and `port` are the CONNECT target; `slot` (the client connection's
/// `max_connections` slot and shutdown watch) is held until the intercepted connection ends,
/// which the shutdown waits for.
pub fn serve(
    state: Arc<State>,
    upgrade: OnUpgrade,
    host: String,
    port: u16,
    peer: SocketAddr,
    slot: Option<ConnSlot>,
) {
    tokio::spawn(async move {
        // Without a slot (no listener: `dispatch_to` in unit tests) nothing ever shuts down.
        let (_never, stop) = match &slot {
            Some(s) => (None, s.shutdown()),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                (Some(tx), rx)
            }
        };
        let _slot = slot;
        if let Err(reason) = serve_inner(state, upgrade, &host, port, peer, stop).await {
            tracing::debug!(%peer, %host, port, %reason, "intercepted connection ended");
        }
    });
}

async fn serve_inner(
    state: Arc<State>,
    upgrade: OnUpgrade,
    host: &str,
    port: u16,
    peer: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let Some(mitm) = state.mitm.clone() else {
        return Err("interception is not enabled".into());
    };
    let upgraded = upgrade.await.map_err(|e| format!("CONNECT upgrade: {e}"))?;
    let handshake_timeout = state.cfg.header_timeout;
    let accept = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), TokioIo::new(upgraded))
            .await
            .map_err(|e| format!("TLS client hello: {e}"))?;
        let sni_is_target = start
            .client_hello()
            .server_name()
            .is_some_and(|s| normalize_host(s) == normalize_host(host));
        let config = if sni_is_target {
            mitm.by_sni.clone()
        } else {
            let key = mitm
                .leaves
                .get(host)
                .ok_or_else(|| format!("no leaf certificate for {host}"))?;
            server_config(Arc::new(Fixed(key))).map_err(|e| e.to_string())?
        };
        start
            .into_stream(config)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    };
    let tls = tokio::time::timeout(handshake_timeout, accept)
        .await
        .map_err(|_| format!("TLS handshake timed out after {handshake_timeout:?}"))??;

    let origin = if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    };
    let origin: Arc<str> = origin.into();
    let st = state.clone();
    // The same guards as the proxy's own client connections, on the decrypted bytes: the
    // framing scanner, the idle timeout, and the send stall (a client that takes nothing of a
    // ready response for idle_timeout is dropped).
    let activity = Arc::new(Activity::new());
    let svc = service_fn({
        let activity = activity.clone();
        move |mut req: http::Request<hyper::body::Incoming>| {
            let st = st.clone();
            let origin = origin.clone();
            let guard = InFlight::new(activity.clone());
            if let Some(v) = activity.framing() {
                req.extensions_mut().insert(v);
            }
            async move {
                let res = st.handle_intercepted(req, peer, &origin).await;
                Ok::<_, Infallible>(res.map(|inner| GuardedBody::new(inner, guard)))
            }
        }
    });
    let tls = Observed {
        io: tls,
        observer: activity.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.header_timeout)
        .max_buf_size(super::server::head_buffer(state.cfg.max_header_size))
        .keep_alive(true);
    super::server::configure_http2(&mut builder, &state.cfg);
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    // On shutdown, like the listener's connections: an idle one closes at once, a request
    // in flight finishes (bounded by `shutdown_timeout`), and the shutdown waits for it.
    let close = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
    drive(
        conn,
        close,
        stop,
        activity,
        ConnLimits::of(&state.cfg),
        peer,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! bypass {
        ($name:ident, $pattern:expr, $host:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    pattern_matches(&normalize_host($pattern), &normalize_host($host)),
                    $want
                );
            }
        };
    }

    bypass!(exact, "bank.example", "bank.example", true);
    bypass!(exact_case, "Bank.Example", "bank.EXAMPLE.", true);
    bypass!(exact_not_sub, "bank.example", "www.bank.example", false);
    bypass!(wildcard_sub, "*.bank.example", "www.bank.example", true);
    bypass!(wildcard_deep, "*.bank.example", "a.b.bank.example", true);
    bypass!(wildcard_apex, "*.bank.example", "bank.example", true);
    bypass!(
        wildcard_suffix_only,
        "*.bank.example",
        "evilbank.example",
        false
    );
    bypass!(star_all, "*", "anything.test", true);
    bypass!(ip, "127.0.0.1", "127.0.0.1", true);
}

#[cfg(test)]
mod leaf_names {
    use super::*;

    #[test]
    fn leaves_are_never_made_for_wildcards_or_invalid_names() {
        let dir = tempfile::tempdir().unwrap();
        let leaves = Leaves {
            ca: CertAuthority::load_or_create(dir.path()).unwrap(),
            cache: Mutex::new(HashMap::new()),
            cap: 8,
            tick: AtomicU64::new(0),
        };
        for bad in ["*.origin.test", "*", "a..origin.test", "-a.test", "127.1"] {
            assert!(leaves.get(bad).is_none(), "{bad:?}");
            assert!(leaves.ca.leaf(bad).is_err(), "{bad:?}");
        }
        for good in ["origin.test", "Origin.Test.", "127.0.0.1", "[::1]"] {
            assert!(leaves.get(good).is_some(), "{good:?}");
        }
    }
}
