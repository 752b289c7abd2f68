//! [`ProxyConfig`] (generated from the option table in `options.rs`): its constructor with the
//! table's defaults, and the default values the table's rows and the proxy share.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{IpNet, ProxyConfig};

impl ProxyConfig {
    /// A configuration with the table's defaults for everything but the listen address and
    /// cache directory (no file, no flags, no `HOARD_*` variables).
    pub fn new(listen: SocketAddr, cache_dir: impl Into<PathBuf>) -> Self {
        ProxyConfig {
            listen,
            cache_dir: cache_dir.into(),
            ..super::options::defaults()
        }
    }

    /// The interception CA directory: `ca_dir`, else `<cache_dir>/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir
            .clone()
            .unwrap_or_else(|| self.cache_dir.join("ca"))
    }
}

/// The default random source: uniform in (0, 1].
pub fn default_random() -> f64 {
    1.0 - fastrand::f64()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_takes_the_table_defaults() {
        let c = ProxyConfig::new("127.0.0.1:1".parse().unwrap(), "/tmp/x");
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.tunnel_idle_timeout, std::time::Duration::from_secs(600));
        assert_eq!(c.allow, loopback_nets());
        assert_eq!(c.allowed_connect_ports, vec![443]);
        assert_eq!(c.mitm_cert_cache_size, 1024);
        assert!(c.rules.is_empty() && c.upstream.is_none() && c.admin.is_none());
    }
}
