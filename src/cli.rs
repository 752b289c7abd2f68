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
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
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
    /// Never contact an origin: answer from the cache whatever the age, 504 on a miss.
    #[arg(long, env = "HOARD_OFFLINE")]
    pub offline: bool,
    /// Maximum simultaneous client connections.
    #[arg(long, env = "HOARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
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
        c.offline = self.offline;
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
