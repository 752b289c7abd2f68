//! Configuration of the shared tier and validation of its Redis URL.
//!
//! Accepted URLs:
//! - `redis://[user:pass@]host[:port][/db]` and `rediss://...` (TLS) for one server;
//! - `redis+cluster://[user:pass@]h1:p1,h2:p2,...` and `rediss+cluster://...` for a cluster
//!   (the listed nodes are seeds; the client discovers the rest; no database number).
//!
//! Hosts are DNS names, IPv4 literals or bracketed IPv6 literals (`[::1]:6379`); the port
//! defaults to 6379. User and password are percent-encoded as in any URL.

use std::path::PathBuf;
use std::time::Duration;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "hoard:";
/// Default largest body written to the shared tier (8 MiB).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 * 1024 * 1024;
/// Default bound on every Redis operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest accepted `timeout`: the tier must stay a fast path, never a wait.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted `max_object_size` (Redis strings are limited to 512 MiB).
pub const MAX_OBJECT_SIZE_LIMIT: u64 = 512 * 1024 * 1024 - 4096;

/// What `hoard serve --shared ...` configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://` URL (see module docs).
    pub url: String,
    /// Prefix of every key and channel; default `hoard:`. No `{` or `}` (they would change the
    /// cluster hash tag) and no whitespace.
    pub prefix: String,
    /// Bodies larger than this are never written; default 8 MiB.
    pub max_object_size: u64,
    /// Bound on every Redis operation; default 50 ms.
    pub timeout: Duration,
    /// PEM file of CA certificates trusted for `rediss://` besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) and its private key (PEM), presented over `rediss://`
    /// (mutual TLS). Both or neither.
    pub client_identity: Option<ClientIdentity>,
    /// The file of the fleet's secret (`shared-secret-file`): rows and invalidation messages
    /// are sealed with it ([`super::seal`]); `None`: unsealed.
    pub secret_file: Option<PathBuf>,
}

/// The PEM files of a client certificate and its key (`shared-cert-file`, `shared-key-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl ClientIdentity {
    /// `Some` when both files are given, `None` when neither; one alone is an error.
    pub fn from_pair(
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Result<Option<ClientIdentity>, SharedConfigError> {
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Ok(Some(ClientIdentity {
                cert_file,
                key_file,
            })),
            (None, None) => Ok(None),
            _ => Err(SharedConfigError::ClientIdentityHalf),
        }
    }
}

impl SharedConfig {
    /// A configuration for `url` with the defaults for everything else (the URL is not
    /// validated here: [`SharedConfig::validate`] does).
    pub fn new(url: impl Into<String>) -> Self {
        SharedConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            client_identity: None,
            secret_file: None,
        }
    }

    /// Parse and check a shared-tier URL.
    pub fn parse_url(url: &str) -> Result<SharedUrl, SharedConfigError> {
        parse_url(url)
    }

    /// Check every field; returns the parsed URL.
    pub fn validate(&self) -> Result<SharedUrl, SharedConfigError> {
        let url = parse_url(&self.url)?;
        check_prefix(&self.prefix)?;
        if self.max_object_size == 0 || self.max_object_size > MAX_OBJECT_SIZE_LIMIT {
            return Err(SharedConfigError::MaxObjectSize(self.max_object_size));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(SharedConfigError::Timeout(self.timeout));
        }
        Ok(url)
    }
}

/// A validated shared-tier URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedUrl {
    /// TLS (`rediss`).
    pub tls: bool,
    /// Cluster mode (`+cluster`).
    pub cluster: bool,
    /// `(host, port)` of each listed node (one unless `cluster`); IPv6 hosts without brackets.
    pub nodes: Vec<(String, u16)>,
    /// The user-info part as written (still percent-encoded), if any.
    pub userinfo: Option<String>,
    /// Database number (always 0 for a cluster).
    pub db: i64,
}

impl SharedUrl {
    /// One `redis://` / `rediss://` URL per listed node, credentials and database included,
    /// in the form the `redis` crate parses.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(h, p)| self.node_url(h, *p))
            .collect()
    }

    /// The `redis://` / `rediss://` URL of node `host:port` of this tier (a cluster node the
    /// seeds named), credentials and database included.
    pub fn node_url(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = self
            .userinfo
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db)
    }

    /// The URL with any password replaced by `***`, for logs and `hoard config`.
    pub fn redacted(&self) -> String {
        let scheme = match (self.tls, self.cluster) {
            (false, false) => "redis",
            (true, false) => "rediss",
            (false, true) => "redis+cluster",
            (true, true) => "rediss+cluster",
        };
        let auth = match &self.userinfo {
            None => String::new(),
            Some(u) => match u.split_once(':') {
                Some((user, _)) => format!("{user}:***@"),
                None => format!("{u}@"),
            },
        };
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        let db = if self.cluster {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        format!("{scheme}://{auth}{}{db}", hosts.join(","))
    }
}

/// Why a shared-tier setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedConfigError {
    /// Not one of the four schemes.
    #[error(
        "shared URL {0:?}: scheme must be redis://, rediss://, redis+cluster:// or rediss+cluster://"
    )]
    Scheme(String),
    /// No host given.
    #[error("shared URL: no host (expected e.g. redis://127.0.0.1:6379)")]
    NoHost,
    /// A host that is not a DNS name or IP literal.
    #[error("shared URL: invalid host {0:?}")]
    Host(String),
    /// A port that is not 1..=65535.
    #[error("shared URL: invalid port {0:?} (expected 1-65535)")]
    Port(String),
    /// Several hosts without `+cluster`.
    #[error("shared URL: several hosts need redis+cluster:// (or rediss+cluster://)")]
    SeveralHosts,
    /// A database path that is not a non-negative integer.
    #[error("shared URL: invalid database {0:?} (expected /<number>)")]
    Db(String),
    /// A database number on a cluster URL.
    #[error("shared URL: a cluster has only database 0; remove {0:?}")]
    ClusterDb(String),
    /// Query strings and fragments are not supported.
    #[error("shared URL: query strings and fragments are not supported ({0:?})")]
    Query(String),
    /// Invalid percent-encoding in user or password.
    #[error("shared URL: user and password must be valid percent-encoded UTF-8")]
    UserInfo,
    /// Prefix with braces or whitespace.
    #[error("shared prefix {0:?}: must not contain '{{', '}}' or whitespace, at most 64 bytes")]
    Prefix(String),
    /// max_object_size out of range.
    #[error("shared max object size {0}: must be between 1 byte and 512 MiB - 4 KiB")]
    MaxObjectSize(u64),
    /// timeout out of range.
    #[error("shared timeout {0:?}: must be more than 0 and at most 10s")]
    Timeout(Duration),
    /// The `shared-ca-file` cannot be read or holds no certificate.
    #[error("shared CA file {path}: {1}", path = .0.display())]
    CaFile(PathBuf, String),
    /// `shared-cert-file` or `shared-key-file` cannot be read or does not parse.
    #[error("shared client certificate {path}: {1}", path = .0.display())]
    ClientIdentity(PathBuf, String),
    /// Only one of `shared-cert-file` and `shared-key-file`.
    #[error("shared-cert-file and shared-key-file go together: give both or neither")]
    ClientIdentityHalf,
    /// `shared-secret-file` cannot be read or is too short.
    #[error("{0}")]
    Secret(String),
}

fn check_prefix(p: &str) -> Result<(), SharedConfigError> {
    if p.len() > 64 || p.chars().any(|c| c == '{' || c == '}' || c.is_whitespace()) {
        return Err(SharedConfigError::Prefix(p.to_string()));
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<SharedUrl, SharedConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| SharedConfigError::Scheme(url.to_string()))?;
    let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        _ => return Err(SharedConfigError::Scheme(url.to_string())),
    };
    if let Some(i) = rest.find(['?', '#']) {
        return Err(SharedConfigError::Query(rest[i..].to_string()));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(u) = userinfo {
        for part in u.splitn(2, ':') {
            percent_decode(part).ok_or(SharedConfigError::UserInfo)?;
        }
    }
    if hosts.is_empty() {
        return Err(SharedConfigError::NoHost);
    }
    let nodes = hosts
        .split(',')
        .map(parse_host_port)
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.len() > 1 && !cluster {
        return Err(SharedConfigError::SeveralHosts);
    }
    let db_text = path.strip_prefix('/').unwrap_or(path);
    let db = if db_text.is_empty() {
        0
    } else if cluster {
        return Err(SharedConfigError::ClusterDb(path.to_string()));
    } else {
        match db_text.parse::<i64>() {
            Ok(n) if n >= 0 && db_text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(SharedConfigError::Db(db_text.to_string())),
        }
    };
    Ok(SharedUrl {
        tls,
        cluster,
        nodes,
        userinfo: userinfo.filter(|u| !u.is_empty()).map(str::to_string),
        db,
    })
}

fn parse_host_port(s: &str) -> Result<(String, u16), SharedConfigError> {
    if s.is_empty() {
        return Err(SharedConfigError::NoHost);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| SharedConfigError::Host(s.to_string()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(SharedConfigError::Host(s.to_string()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| SharedConfigError::Host(s.to_string()))?,
            ),
        };
        (h.to_string(), port)
    } else {
        let (h, p) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if !valid_host(h) {
            return Err(SharedConfigError::Host(h.to_string()));
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(SharedConfigError::Port(p.to_string())),
        },
    };
    Ok((host, port))
}

fn valid_host(h: &str) -> bool {
    if h.is_empty() || h.len() > 253 {
        return false;
    }
    h.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> SharedUrl {
        parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn accepted_urls() {
        type Case<'a> = (
            &'a str,
            bool,
            bool,
            &'a [(&'a str, u16)],
            Option<&'a str>,
            i64,
        );
        let cases: &[Case] = &[
            (
                "redis://127.0.0.1:6379",
                false,
                false,
                &[("127.0.0.1", 6379)],
                None,
                0,
            ),
            (
                "redis://localhost",
                false,
                false,
                &[("localhost", 6379)],
                None,
                0,
            ),
            (
                "redis://Cache.Example:7000/3",
                false,
                false,
                &[("cache.example", 7000)],
                None,
                3,
            ),
            (
                "redis://u:p%40ss@h:1/",
                false,
                false,
                &[("h", 1)],
                Some("u:p%40ss"),
                0,
            ),
            (
                "redis://:secret@h",
                false,
                false,
                &[("h", 6379)],
                Some(":secret"),
                0,
            ),
            (
                "rediss://[::1]:6380/2",
                true,
                false,
                &[("::1", 6380)],
                None,
                2,
            ),
            ("REDIS://h", false, false, &[("h", 6379)], None, 0),
            (
                "redis+cluster://a:7000,b:7001,[::1]:7002",
                false,
                true,
                &[("a", 7000), ("b", 7001), ("::1", 7002)],
                None,
                0,
            ),
            (
                "rediss+cluster://u:p@a:1",
                true,
                true,
                &[("a", 1)],
                Some("u:p"),
                0,
            ),
            ("redis+cluster://a:1/", false, true, &[("a", 1)], None, 0),
        ];
        for (url, tls, cluster, nodes, user, db) in cases {
            let u = ok(url);
            assert_eq!(u.tls, *tls, "{url}");
            assert_eq!(u.cluster, *cluster, "{url}");
            let want: Vec<(String, u16)> = nodes.iter().map(|(h, p)| (h.to_string(), *p)).collect();
            assert_eq!(u.nodes, want, "{url}");
            assert_eq!(u.userinfo.as_deref(), *user, "{url}");
            assert_eq!(u.db, *db, "{url}");
        }
    }

    #[test]
    fn refused_urls() {
        use SharedConfigError as E;
        type Check = fn(&E) -> bool;
        let cases: &[(&str, Check)] = &[
            ("127.0.0.1:6379", |e| matches!(e, E::Scheme(_))),
            ("http://h:1", |e| matches!(e, E::Scheme(_))),
            ("redis://", |e| matches!(e, E::NoHost)),
            ("redis://u:p@", |e| matches!(e, E::NoHost)),
            ("redis://h:0", |e| matches!(e, E::Port(_))),
            ("redis://h:65536", |e| matches!(e, E::Port(_))),
            ("redis://h:+1", |e| matches!(e, E::Port(_))),
            ("redis://h:", |e| matches!(e, E::Port(_))),
            ("redis://a:1,b:2", |e| matches!(e, E::SeveralHosts)),
            ("redis+cluster://a:1,,b:2", |e| matches!(e, E::NoHost)),
            ("redis://h/x", |e| matches!(e, E::Db(_))),
            ("redis://h/-1", |e| matches!(e, E::Db(_))),
            ("redis+cluster://a:1/1", |e| matches!(e, E::ClusterDb(_))),
            ("redis://h?timeout=1", |e| matches!(e, E::Query(_))),
            ("redis://h#x", |e| matches!(e, E::Query(_))),
            ("redis://bad host", |e| matches!(e, E::Host(_))),
            ("redis://[::1", |e| matches!(e, E::Host(_))),
            ("redis://[nothex]:1", |e| matches!(e, E::Host(_))),
            ("redis://-a.b", |e| matches!(e, E::Host(_))),
            ("redis://u:%zz@h", |e| matches!(e, E::UserInfo)),
        ];
        for (url, want) in cases {
            let e = parse_url(url).expect_err(url);
            assert!(want(&e), "{url}: {e:?}");
            assert!(e.to_string().starts_with("shared URL"), "{url}: {e}");
        }
    }

    #[test]
    fn node_urls_and_redaction() {
        let u = ok("redis+cluster://me:s%3Acret@a:7000,[::1]:7001");
        assert_eq!(
            u.node_urls(),
            vec![
                "redis://me:s%3Acret@a:7000/0".to_string(),
                "redis://me:s%3Acret@[::1]:7001/0".to_string()
            ]
        );
        assert_eq!(u.redacted(), "redis+cluster://me:***@a:7000,[::1]:7001");
        assert_eq!(ok("rediss://h/4").redacted(), "rediss://h:6379/4");
    }

    #[test]
    fn validate_other_fields() {
        let mut c = SharedConfig::new("redis://h");
        assert!(c.validate().is_ok());
        assert_eq!(c.prefix, "hoard:");
        c.prefix = "a{b}".into();
        assert!(matches!(c.validate(), Err(SharedConfigError::Prefix(_))));
        c.prefix = "team a:".into();
        assert!(matches!(c.validate(), Err(SharedConfigError::Prefix(_))));
        c.prefix = String::new();
        assert!(c.validate().is_ok(), "an empty prefix is allowed");
        c.max_object_size = 0;
        assert!(matches!(
            c.validate(),
            Err(SharedConfigError::MaxObjectSize(0))
        ));
        c.max_object_size = DEFAULT_MAX_OBJECT_SIZE;
        c.timeout = Duration::ZERO;
        assert!(matches!(c.validate(), Err(SharedConfigError::Timeout(_))));
        c.timeout = Duration::from_secs(11);
        assert!(matches!(c.validate(), Err(SharedConfigError::Timeout(_))));
    }
}
