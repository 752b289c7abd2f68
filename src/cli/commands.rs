//! The arguments of the subcommands other than `serve` and `config`: where the store is
//! (`StoreArgs`, shared by all), and each subcommand's own flags.
//!
//! Invariant: only argument shapes and the look-ups of the store and CA directories live
//! here; what a subcommand does is `ops`' and `main.rs`'s.

use std::path::PathBuf;

use clap::Args;

use crate::config::{self, ConfigError, load_file};

/// `hoard warm URLS.txt`.
#[derive(Debug, Args, Clone)]
pub struct WarmCmd {
    /// File with one URL per line (`#` comments and blank lines ignored), or `-` for stdin.
    #[arg(value_name = "URLS")]
    pub list: PathBuf,
    /// The running proxy.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3128")]
    pub proxy: http::Uri,
    /// Requests in flight at most.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Time allowed per URL (head and body).
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_ttl)]
    pub timeout: std::time::Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hoard export --har FILE`.
#[derive(Debug, Args, Clone)]
pub struct ExportCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The HAR file to write.
    #[arg(long, value_name = "FILE")]
    pub har: PathBuf,
    /// Only this host (`host` for every port, `host:port` for one).
    #[arg(long)]
    pub host: Option<String>,
    /// Only URLs starting with this prefix (e.g. http://example.com/docs/).
    #[arg(long, value_name = "URL")]
    pub prefix: Option<String>,
}

/// `hoard import --har FILE`.
#[derive(Debug, Args, Clone)]
pub struct ImportCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The HAR file to read.
    #[arg(long, value_name = "FILE")]
    pub har: PathBuf,
    /// Keep the responses fresh for this long from now, whatever their headers say.
    #[arg(long, value_name = "D", value_parser = parse_ttl)]
    pub ttl: Option<std::time::Duration>,
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

/// `hoard ca`.
#[derive(Debug, Args, Clone)]
pub struct CaCmd {
    /// Store location (the CA defaults to `<cache-dir>/ca`).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Directory of the CA [default: ca-dir of the config file, else <cache-dir>/ca].
    #[arg(long, env = "HOARD_CA_DIR", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
}

impl CaCmd {
    /// The CA directory: flag or environment, else the file's `ca-dir`, else `<cache-dir>/ca`.
    pub fn resolve_ca_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(d) = &self.ca_dir {
            return Ok(d.clone());
        }
        let file = load_file(self.store.config.as_deref())?;
        if let Some((v, _)) = file.as_ref().and_then(|f| f.get("ca-dir")) {
            return Ok(PathBuf::from(v.as_text()));
        }
        Ok(self.store.resolve_cache_dir()?.join("ca"))
    }
}

/// Where the store is, for every subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// Configuration file (set from the global `--config`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Cache directory [default: cache-dir of the config file, else $XDG_CACHE_HOME/hoard or ~/.cache/hoard].
    #[arg(long, env = "HOARD_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print JSON instead of text for people.
    #[arg(long)]
    pub json: bool,
}

impl StoreArgs {
    /// The cache directory: flag or environment, else the file's `cache-dir`, else the default.
    pub fn resolve_cache_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(d) = &self.cache_dir {
            return Ok(d.clone());
        }
        let file = load_file(self.config.as_deref())?;
        Ok(match file.as_ref().and_then(|f| f.get("cache-dir")) {
            Some((v, _)) => PathBuf::from(v.as_text()),
            None => config::default_cache_dir(),
        })
    }
}

/// `hoard stats`.
#[derive(Debug, Args, Clone)]
pub struct StatsCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// How many hosts to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// `hoard ls`.
#[derive(Debug, Args, Clone)]
pub struct LsCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this host (`host` for every port, `host:port` for one).
    #[arg(long)]
    pub host: Option<String>,
    /// Which tier to list: this machine's store, the shared tier (`shared` configured), or both.
    #[arg(long, value_enum, default_value_t = TierChoice::Local)]
    pub tier: TierChoice,
}

/// Which tier `ls`, `evict` and `clear` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierChoice {
    /// This machine's store (the cache directory).
    Local,
    /// The shared tier (the Redis named by `shared` / `HOARD_SHARED`).
    Shared,
    /// Both.
    All,
}

impl TierChoice {
    /// Acts on the local store.
    pub fn local(self) -> bool {
        self != TierChoice::Shared
    }
    /// Acts on the shared tier.
    pub fn shared(self) -> bool {
        self != TierChoice::Local
    }
}

/// `hoard clear`.
#[derive(Debug, Args, Clone)]
pub struct ClearCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Which tier to clear: this machine's store, the shared tier, or both.
    #[arg(long, value_enum, default_value_t = TierChoice::Local)]
    pub tier: TierChoice,
}

/// `hoard show URL`, `hoard purge URL`.
#[derive(Debug, Args, Clone)]
pub struct UrlCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Absolute URL, e.g. http://example.com/x.
    pub url: String,
}

/// `hoard evict`.
#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["host", "tag"])))]
pub struct EvictCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Every URL of this host, http and https (`host` for every port, `host:port` for one).
    #[arg(long)]
    pub host: Option<String>,
    /// Every row with this tag (the proxy tags rows with `GET <url>`).
    #[arg(long)]
    pub tag: Option<String>,
    /// Which tier to evict from: this machine's store, the shared tier, or both.
    #[arg(long, value_enum, default_value_t = TierChoice::Local)]
    pub tier: TierChoice,
}

/// `hoard check`.
#[derive(Debug, Args, Clone)]
pub struct CheckCmd {
    /// Store location and output format.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Repair what was found (remove faulty rows and orphan files, fix counters).
    #[arg(long)]
    pub fix: bool,
}
