//! Command line: raw clap arguments, turned into a validated [`ProxyConfig`] in a second step.
//!
//! Invariant: nothing here starts servers or opens the store; `main.rs` does that with the
//! values produced here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError};
use crate::proxy::ProxyConfig;
use crate::store::EvictionPolicy;

/// hoard: an HTTP caching forward proxy on an embedded SQLite disk cache.
#[derive(Debug, Parser)]
#[command(name = "hoard", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Print the interception CA certificate (creating it if needed) and how to trust it.
    Ca(CaArgs),
}

/// Options of `hoard ca`.
#[derive(Debug, Args, Clone)]
pub struct CaArgs {
    /// Cache directory [default: $XDG_CACHE_HOME/hoard or ~/.cache/hoard].
    #[arg(long, env = "HOARD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Directory of the CA [default: <cache-dir>/ca].
    #[arg(long, env = "HOARD_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
}

impl CaArgs {
    /// The CA directory these options name.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir.clone().unwrap_or_else(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(config::default_cache_dir)
                .join("ca")
        })
    }
}

/// Options of `hoard serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOARD_LISTEN", default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// Cache directory [default: $XDG_CACHE_HOME/hoard or ~/.cache/hoard].
    #[arg(long, env = "HOARD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Gateway mode: send origin-form requests to this base URL (http:// or https://).
    #[arg(long, env = "HOARD_UPSTREAM")]
    pub upstream: Option<String>,
    /// Store size limit (e.g. 1GiB, 500MB).
    #[arg(long, env = "HOARD_SIZE_LIMIT", default_value = "1GiB")]
    pub size_limit: String,
    /// Eviction policy: least-recently-used, least-recently-stored, least-frequently-used, none.
    #[arg(
        long,
        env = "HOARD_EVICTION_POLICY",
        default_value = "least-recently-used"
    )]
    pub eviction_policy: String,
    /// Larger responses stream through uncached.
    #[arg(long, env = "HOARD_MAX_OBJECT_SIZE", default_value = "256MiB")]
    pub max_object_size: String,
    /// Time allowed to connect to an origin.
    #[arg(long, env = "HOARD_CONNECT_TIMEOUT", default_value = "10s")]
    pub connect_timeout: String,
    /// Time allowed for an origin's response headers, and between body chunks.
    #[arg(long, env = "HOARD_RESPONSE_TIMEOUT", default_value = "60s")]
    pub response_timeout: String,
    /// Time allowed for a client to send its request headers.
    #[arg(long, env = "HOARD_HEADER_TIMEOUT", default_value = "30s")]
    pub header_timeout: String,
    /// How long concurrent requests for one URL wait for the first one's fetch.
    #[arg(long, env = "HOARD_LOCK_TIMEOUT", default_value = "5s")]
    pub lock_timeout: String,
    /// XFetch beta: how early hot entries are refreshed in the background before they
    /// expire (0 disables; 1 is the standard setting; larger refreshes earlier).
    #[arg(long, env = "HOARD_XFETCH_BETA", default_value_t = 1.0)]
    pub xfetch_beta: f64,
    /// Serve stale entries for this long when the origin fails and the response named no
    /// stale-if-error window (RFC 5861). Off by default.
    #[arg(long, env = "HOARD_STALE_IF_ERROR")]
    pub stale_if_error: Option<String>,
    /// Maximum simultaneous client connections.
    #[arg(long, env = "HOARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Intercept CONNECT (HTTPS) with hoard's CA so HTTPS responses are cached too.
    #[arg(long, env = "HOARD_MITM")]
    pub mitm: bool,
    /// Host pattern never intercepted, always tunnelled (`host`, `*.domain`); repeatable.
    #[arg(long = "mitm-bypass", value_name = "PATTERN")]
    pub mitm_bypass: Vec<String>,
    /// Directory of the interception CA [default: <cache-dir>/ca]; created if empty.
    #[arg(long, env = "HOARD_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// PEM file of CA certificates trusted for origins besides the webpki roots; repeatable.
    #[arg(long = "extra-ca-file", value_name = "PEM")]
    pub extra_ca_files: Vec<PathBuf>,
    /// Do not verify origin TLS certificates (dangerous: anyone on the path can impersonate origins).
    #[arg(long)]
    pub insecure_upstream: bool,
    /// Map HOST:PORT to ADDR inside the proxy, like curl's --resolve; repeatable.
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Ports CONNECT may reach (ports of --resolve entries are always allowed).
    #[arg(long, value_delimiter = ',', default_value = "443")]
    pub allowed_connect_ports: Vec<u16>,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl ServeArgs {
    /// Validate into a proxy configuration.
    pub fn to_config(&self) -> Result<ProxyConfig, ConfigError> {
        let dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(config::default_cache_dir);
        let mut c = ProxyConfig::new(self.listen, dir);
        if let Some(u) = &self.upstream {
            let uri: http::Uri = u.parse().map_err(|e| ConfigError::Value {
                key: "upstream",
                reason: format!("{u:?} is not a URL: {e}"),
            })?;
            if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.host().is_none() {
                return Err(ConfigError::Value {
                    key: "upstream",
                    reason: format!("{u:?} must be an http:// or https:// URL with a host"),
                });
            }
            c.upstream = Some(uri);
        }
        c.size_limit = config::parse_size(&self.size_limit)?;
        c.eviction_policy = self
            .eviction_policy
            .parse::<EvictionPolicy>()
            .map_err(|_| ConfigError::Value {
                key: "eviction-policy",
                reason: format!(
                    "{:?}: expected least-recently-used, least-recently-stored, \
                         least-frequently-used or none",
                    self.eviction_policy
                ),
            })?;
        c.max_object_size = config::parse_size(&self.max_object_size)?;
        c.connect_timeout = config::parse_duration(&self.connect_timeout)?;
        c.response_timeout = config::parse_duration(&self.response_timeout)?;
        c.header_timeout = config::parse_duration(&self.header_timeout)?;
        c.lock_timeout = config::parse_duration(&self.lock_timeout)?;
        if !(self.xfetch_beta.is_finite() && self.xfetch_beta >= 0.0) {
            return Err(ConfigError::Value {
                key: "xfetch-beta",
                reason: format!("{} must be a number >= 0", self.xfetch_beta),
            });
        }
        c.xfetch_beta = self.xfetch_beta;
        c.stale_if_error = self
            .stale_if_error
            .as_deref()
            .map(config::parse_duration)
            .transpose()?;
        if self.max_connections == 0 {
            return Err(ConfigError::Value {
                key: "max-connections",
                reason: "must be at least 1".into(),
            });
        }
        c.max_connections = self.max_connections;
        c.mitm = self.mitm;
        c.mitm_bypass = self.mitm_bypass.clone();
        c.ca_dir = self.ca_dir.clone();
        c.extra_ca_files = self.extra_ca_files.clone();
        c.insecure_upstream = self.insecure_upstream;
        c.resolve = self
            .resolve
            .iter()
            .map(|r| config::parse_resolve(r))
            .collect::<Result<_, _>>()?;
        c.allowed_connect_ports = self.allowed_connect_ports.clone();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hoard").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn bare_hoard_serves_on_defaults() {
        let cli = parse(&[]);
        assert!(cli.command.is_none());
        let c = cli.serve.to_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(c.size_limit, 1 << 30);
        assert!(c.upstream.is_none());
    }

    #[test]
    fn serve_subcommand_takes_options() {
        let cli = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:8080",
            "--size-limit",
            "10MiB",
        ]);
        let Some(Command::Serve(a)) = cli.command else {
            panic!("expected serve")
        };
        let c = a.to_config().unwrap();
        assert_eq!(c.size_limit, 10 << 20);
        assert_eq!(c.upstream.unwrap().port_u16(), Some(8080));
    }

    #[test]
    fn mitm_options() {
        let cli = parse(&[
            "--mitm",
            "--mitm-bypass",
            "*.bank.example",
            "--mitm-bypass",
            "pinned.example",
            "--resolve",
            "origin.test:8443:127.0.0.1",
            "--allowed-connect-ports",
            "443,8443",
            "--extra-ca-file",
            "/tmp/x.pem",
        ]);
        let c = cli.serve.to_config().unwrap();
        assert!(c.mitm && !c.insecure_upstream);
        assert_eq!(c.mitm_bypass.len(), 2);
        assert_eq!(c.resolve[0].1, 8443);
        assert_eq!(c.allowed_connect_ports, vec![443, 8443]);
        assert_eq!(c.ca_dir(), c.cache_dir.join("ca"));
        let cli = parse(&["ca", "--cache-dir", "/tmp/h"]);
        let Some(Command::Ca(a)) = cli.command else {
            panic!("expected ca")
        };
        assert_eq!(a.ca_dir(), PathBuf::from("/tmp/h/ca"));
    }

    #[test]
    fn bad_resolve_is_refused() {
        let cli = parse(&["--resolve", "origin.test:443"]);
        assert!(cli.serve.to_config().is_err());
    }

    #[test]
    fn bad_upstream_is_refused() {
        let cli = parse(&["--upstream", "ftp://x"]);
        assert!(cli.serve.to_config().is_err());
    }

    #[test]
    fn bad_policy_is_refused() {
        let cli = parse(&["--eviction-policy", "random"]);
        assert!(cli.serve.to_config().is_err());
    }
}
