//! Command line: raw clap arguments, turned into a validated [`ProxyConfig`] in a second step.
//!
//! Invariant: nothing here starts servers or opens the store; `main.rs` does that with the
//! values produced here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, ConfigFile, LogFormat};
use crate::http_cache::ForwardingHeaders;
use crate::proxy::ProxyConfig;
use crate::store::EvictionPolicy;

/// hoard: an HTTP caching forward proxy on an embedded SQLite disk cache.
///
/// Exit codes: 0 success; 1 nothing found (purge, evict, show) or problems left (check);
/// 2 usage or configuration error; 3 runtime failure (store unreadable, address in use).
#[derive(Debug, Parser)]
#[command(name = "hoard", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Configuration file [default: $XDG_CONFIG_HOME/hoard/hoard.toml or ~/.config/hoard/hoard.toml, if it exists].
    #[arg(long, env = "HOARD_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// Parse the command line, handing the global `--config` to the chosen command.
    /// Serve options belong after `serve` (or with no subcommand at all): `hoard --size-limit
    /// 1G stats`, which would otherwise be silently ignored, is a usage error.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = <Cli as CommandFactory>::command();
        let m = cmd.get_matches_mut();
        let misplaced = m.subcommand_name().is_some()
            && cmd.get_arguments().any(|a| {
                let id = a.get_id().as_str();
                !matches!(id, "config" | "verbose" | "quiet")
                    && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            });
        if misplaced {
            cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                "serve options go after `serve` (or use no subcommand), e.g. hoard serve --listen ADDR",
            )
            .exit();
        }
        let mut cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
        cli.propagate_config();
        cli
    }

    /// Copy the global `--config` into the command's arguments.
    pub fn propagate_config(&mut self) {
        let cfg = self.config.clone();
        self.serve.config = cfg.clone();
        match &mut self.command {
            Some(Command::Serve(a)) => a.config = cfg,
            Some(Command::Config(c)) => c.serve.config = cfg,
            Some(Command::Stats(c)) => c.store.config = cfg,
            Some(Command::Ls(c)) => c.store.config = cfg,
            Some(Command::Show(c)) | Some(Command::Purge(c)) => c.store.config = cfg,
            Some(Command::Evict(c)) => c.store.config = cfg,
            Some(Command::Expire(s)) | Some(Command::Clear(s)) => s.config = cfg,
            Some(Command::Check(c)) => c.store.config = cfg,
            Some(Command::Ca(c)) => c.store.config = cfg,
            None => {}
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Print the effective configuration (flags > HOARD_* environment > file > defaults) as TOML.
    Config(ConfigCmd),
    /// Entries, bytes, size limit, hit ratio and the hosts using the most space.
    Stats(StatsCmd),
    /// List stored URLs.
    Ls(LsCmd),
    /// Show the stored response of a URL and the Cache-Status it would get now.
    Show(UrlCmd),
    /// Remove every stored variant of a URL (exit 1 if nothing was stored).
    Purge(UrlCmd),
    /// Remove every URL of a host, or every row with a tag (exit 1 if nothing was removed).
    Evict(EvictCmd),
    /// Remove entries whose store expiry has passed.
    Expire(StoreArgs),
    /// Remove every entry.
    Clear(StoreArgs),
    /// Check the store (integrity, rows against value files, counters); exit 1 on problems.
    Check(CheckCmd),
    /// Print the interception CA certificate (creating it if needed) and how to trust it.
    Ca(CaCmd),
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

/// `hoard config`.
#[derive(Debug, Args, Clone)]
pub struct ConfigCmd {
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
    /// The serve options, to see their effect.
    #[command(flatten)]
    pub serve: ServeArgs,
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

/// Options of `hoard serve`. Every value is optional here: what is not given on the command
/// line or in a `HOARD_*` variable comes from the configuration file, else the default
/// (applied in [`ServeArgs::resolve_with`]).
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Configuration file (set from the global `--config`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:3128].
    #[arg(long, env = "HOARD_LISTEN")]
    pub listen: Option<String>,
    /// Cache directory [default: $XDG_CACHE_HOME/hoard or ~/.cache/hoard].
    #[arg(long, env = "HOARD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Gateway mode: send origin-form requests to this base URL (http:// or https://).
    #[arg(long, env = "HOARD_UPSTREAM")]
    pub upstream: Option<String>,
    /// Store size limit, e.g. 1GiB, 500MB [default: 1GiB].
    #[arg(long, env = "HOARD_SIZE_LIMIT")]
    pub size_limit: Option<String>,
    /// Eviction policy: least-recently-used, least-recently-stored, least-frequently-used, none [default: least-recently-used].
    #[arg(long, env = "HOARD_EVICTION_POLICY")]
    pub eviction_policy: Option<String>,
    /// Larger responses stream through uncached [default: 256MiB].
    #[arg(long, env = "HOARD_MAX_OBJECT_SIZE")]
    pub max_object_size: Option<String>,
    /// Count store hits and misses, shown by `hoard stats` (true/false) [default: true].
    #[arg(long, env = "HOARD_STATISTICS")]
    pub statistics: Option<String>,
    /// XFetch beta: how early hot entries are refreshed in the background before they
    /// expire (0 disables; 1 is the standard setting; larger refreshes earlier) [default: 1].
    #[arg(long, env = "HOARD_XFETCH_BETA")]
    pub xfetch_beta: Option<String>,
    /// Serve stale entries for this long when the origin fails and the response named no
    /// stale-if-error window (RFC 5861); off disables [default: off].
    #[arg(long, env = "HOARD_STALE_IF_ERROR")]
    pub stale_if_error: Option<String>,
    /// Serve a stale entry for up to this long past its expiry while one background
    /// revalidation runs, when the response named no stale-while-revalidate window (like
    /// nginx's `proxy_cache_use_stale updating`; beyond what RFC 9111 lets a cache do on its
    /// own, so off by default; never for must-revalidate / no-cache responses) [default: off].
    #[arg(long, env = "HOARD_STALE_WHILE_REVALIDATE")]
    pub stale_while_revalidate: Option<String>,
    /// Never contact an origin: answer from the cache whatever the age, 504 on a miss
    /// (`--offline` or `--offline=false`) [default: false].
    #[arg(long, env = "HOARD_OFFLINE", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub offline: Option<String>,
    /// Time allowed to connect to an origin [default: 10s].
    #[arg(long, env = "HOARD_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Time allowed for an origin's response headers, and between body chunks [default: 60s].
    #[arg(long, env = "HOARD_RESPONSE_TIMEOUT")]
    pub response_timeout: Option<String>,
    /// Time allowed for a client to send its request headers [default: 30s].
    #[arg(long, env = "HOARD_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Close client connections idle (no request in flight, no bytes moving) this long [default: 60s].
    #[arg(long, env = "HOARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Close CONNECT tunnels with no bytes moving either way this long [default: 10m].
    #[arg(long, env = "HOARD_TUNNEL_IDLE_TIMEOUT")]
    pub tunnel_idle_timeout: Option<String>,
    /// Time allowed for a whole origin response body; off: only the per-chunk response timeout [default: 10m].
    #[arg(long, env = "HOARD_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// How long concurrent requests for one URL wait for the first one's fetch [default: 5s].
    #[arg(long, env = "HOARD_LOCK_TIMEOUT")]
    pub lock_timeout: Option<String>,
    /// How long in-flight requests may run after a shutdown signal [default: 10s].
    #[arg(long, env = "HOARD_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// Maximum simultaneous client connections [default: 10000].
    #[arg(long, env = "HOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Largest request header block accepted [default: 64KiB].
    #[arg(long, env = "HOARD_MAX_HEADER_SIZE")]
    pub max_header_size: Option<String>,
    /// Memory for hot entries in front of the store, 0 disables [default: 128MiB].
    #[arg(long, env = "HOARD_MEMORY_CACHE_SIZE")]
    pub memory_cache_size: Option<String>,
    /// Longest a row held in memory is used before re-reading the store; writes through the
    /// store by hoard processes are seen at once regardless (except on btrfs/ZFS, or when
    /// cache.gen cannot be opened: then this bounds them) [default: 1s].
    #[arg(long, env = "HOARD_MEMORY_CACHE_TTL")]
    pub memory_cache_ttl: Option<String>,
    /// Name used in Via headers [default: hoard].
    #[arg(long, env = "HOARD_PSEUDONYM")]
    pub pseudonym: Option<String>,
    /// Client-sent Forwarded / X-Forwarded-* / X-Original-URL fields: strip (removed before
    /// caching) or pass (forwarded; such requests bypass the cache) [default: strip].
    #[arg(long, env = "HOARD_FORWARDING_HEADERS")]
    pub forwarding_headers: Option<String>,
    /// Clients allowed to send PURGE, comma-separated IPs or networks; empty: nobody [default: 127.0.0.0/8,::1].
    #[arg(long, env = "HOARD_PURGE_ALLOW")]
    pub purge_allow: Option<String>,
    /// Clients allowed to use the proxy, comma-separated IPs or networks; others get 403 [default: 127.0.0.0/8,::1].
    #[arg(long, env = "HOARD_ALLOW")]
    pub allow: Option<String>,
    /// Require Proxy-Authorization: Basic with one of these comma-separated user:password pairs; empty: none [default: none].
    #[arg(long, env = "HOARD_PROXY_AUTH")]
    pub proxy_auth: Option<String>,
    /// Admin server address for /metrics and /healthz, e.g. 127.0.0.1:3129; off: disabled [default: off].
    #[arg(long, env = "HOARD_ADMIN")]
    pub admin: Option<String>,
    /// Clients the admin server answers, comma-separated IPs or networks; others are closed [default: 127.0.0.0/8,::1].
    #[arg(long, env = "HOARD_ADMIN_ALLOW")]
    pub admin_allow: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "HOARD_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Access log destination: a file (appended to, reopened on SIGHUP), stderr, or off;
    /// written by its own thread, lines dropped (and counted) rather than a request ever
    /// waiting [default: stderr]. Read by main.rs (`access_log::Destination::parse`).
    #[arg(long, env = "HOARD_ACCESS_LOG", value_name = "PATH")]
    pub access_log: Option<String>,
    /// Worker threads of the runtime, or auto (the CPUs hoard may run on, honouring taskset)
    /// [default: auto]. Read by main.rs (`runtime::parse_threads`).
    #[arg(long, env = "HOARD_THREADS", value_name = "N")]
    pub threads: Option<String>,
    /// Intercept CONNECT (HTTPS) with hoard's CA so HTTPS responses are cached too
    /// (`--mitm` or `--mitm=false`) [default: false].
    #[arg(long, env = "HOARD_MITM", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub mitm: Option<String>,
    /// Host pattern never intercepted, always tunnelled (`host`, `*.domain`); repeatable or comma-separated.
    #[arg(
        long = "mitm-bypass",
        env = "HOARD_MITM_BYPASS",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub mitm_bypass: Vec<String>,
    /// Directory of the interception CA; created there if absent [default: <cache-dir>/ca].
    #[arg(long, env = "HOARD_CA_DIR", value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// PEM file of CA certificates trusted for origins besides the webpki roots; repeatable.
    #[arg(
        long = "extra-ca-file",
        env = "HOARD_EXTRA_CA_FILES",
        value_name = "PEM",
        value_delimiter = ','
    )]
    pub extra_ca_files: Vec<String>,
    /// Do not verify origin TLS certificates (dangerous) [default: false].
    #[arg(long, env = "HOARD_INSECURE_UPSTREAM", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub insecure_upstream: Option<String>,
    /// Connect to ADDR for HOST:PORT, like curl's --resolve; repeatable.
    #[arg(
        long,
        env = "HOARD_RESOLVE",
        value_name = "HOST:PORT:ADDR",
        value_delimiter = ','
    )]
    pub resolve: Vec<String>,
    /// Ports CONNECT may reach for any host, comma-separated; a --resolve entry also opens its own HOST:PORT [default: 443].
    #[arg(long, env = "HOARD_ALLOWED_CONNECT_PORTS")]
    pub allowed_connect_ports: Option<String>,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The configuration after layering, validated.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the proxy runs with.
    pub proxy: ProxyConfig,
    /// Log line format.
    pub log_format: LogFormat,
    /// The same values as text, for `hoard config`.
    pub effective: Effective,
    /// The configuration file used, if any.
    pub file: Option<PathBuf>,
}

/// The effective configuration in the configuration file's own terms (`hoard config`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct Effective {
    pub listen: String,
    pub cache_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub size_limit: String,
    pub eviction_policy: String,
    pub max_object_size: String,
    pub statistics: bool,
    pub xfetch_beta: f64,
    pub stale_if_error: String,
    pub stale_while_revalidate: String,
    pub offline: bool,
    pub connect_timeout: String,
    pub response_timeout: String,
    pub header_timeout: String,
    pub idle_timeout: String,
    pub tunnel_idle_timeout: String,
    pub body_timeout: String,
    pub lock_timeout: String,
    pub shutdown_timeout: String,
    pub max_connections: u64,
    pub max_header_size: String,
    pub memory_cache_size: String,
    pub memory_cache_ttl: String,
    pub pseudonym: String,
    pub forwarding_headers: String,
    pub purge_allow: Vec<String>,
    pub allow: Vec<String>,
    /// `user:***`: passwords are never printed.
    pub proxy_auth: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    pub admin_allow: Vec<String>,
    pub log_format: LogFormat,
    pub mitm: bool,
    pub mitm_bypass: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_dir: Option<String>,
    pub extra_ca_files: Vec<String>,
    pub insecure_upstream: bool,
    pub resolve: Vec<String>,
    pub allowed_connect_ports: Vec<String>,
    /// Development-caching rules from the file (`[[rules]]`), first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<EffectiveRule>,
}

/// One rule as `hoard config` prints it (the configuration file's own keys).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[allow(missing_docs)]
pub struct EffectiveRule {
    pub name: String,
    pub host: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_query: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bypass: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_methods: Vec<String>,
    pub max_body: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub share_auth: bool,
}

impl From<&crate::http_cache::Rule> for EffectiveRule {
    fn from(r: &crate::http_cache::Rule) -> Self {
        use crate::http_cache::IgnoreQuery;
        EffectiveRule {
            name: r.name.clone(),
            host: r.host.to_string(),
            path: r.path.to_string(),
            ttl: r.ttl.map(|d| format!("{}s", d.as_secs_f64())),
            ignore_query: match &r.ignore_query {
                IgnoreQuery::None => None,
                IgnoreQuery::All => Some(serde_json::Value::Bool(true)),
                IgnoreQuery::Params(p) => Some(serde_json::Value::Array(
                    p.iter()
                        .map(|x| serde_json::Value::String(x.to_string()))
                        .collect(),
                )),
            },
            bypass: r.bypass,
            cache_methods: r.cache_methods.iter().map(ToString::to_string).collect(),
            max_body: r.max_body as u64,
            share_auth: r.share_auth,
        }
    }
}

/// Load `explicit`, else the default file if it exists.
pub fn load_file(explicit: Option<&std::path::Path>) -> Result<Option<ConfigFile>, ConfigError> {
    match explicit {
        Some(p) => ConfigFile::load(p).map(Some),
        None => config::default_config_path()
            .map(|p| ConfigFile::load(&p))
            .transpose(),
    }
}

/// Picks each value from the first layer that has it: command line or environment (clap has
/// merged those, flag first), then the file, then the default.
struct Layers<'a> {
    file: Option<&'a ConfigFile>,
}

impl Layers<'_> {
    fn pick<T>(
        &self,
        key: &str,
        given: Option<&str>,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(T, String), ConfigError> {
        if let Some(v) = given {
            return parse(v)
                .map(|t| (t, v.to_string()))
                .map_err(|reason| ConfigError::Flag {
                    key: key.to_string(),
                    env: format!("HOARD_{}", key.to_ascii_uppercase().replace('-', "_")),
                    reason,
                });
        }
        if let Some(f) = self.file
            && let Some((v, line)) = f.get(key)
        {
            let text = v.as_text();
            return parse(&text)
                .map(|t| (t, text))
                .map_err(|reason| f.error(key, *line, reason));
        }
        parse(default)
            .map(|t| (t, default.to_string()))
            .map_err(|reason| ConfigError::Value {
                key: "default",
                reason,
            })
    }
}

fn size(t: &str) -> Result<u64, String> {
    config::parse_size(t).map_err(|e| e.to_string())
}

/// A duration that must be more than zero.
fn nonzero_duration(t: &str) -> Result<std::time::Duration, String> {
    match duration(t)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d => Ok(d),
    }
}

fn duration(t: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(t).map_err(|e| e.to_string())
}

fn upstream(u: &str) -> Result<Option<http::Uri>, String> {
    if u.is_empty() {
        return Ok(None);
    }
    let uri: http::Uri = u.parse().map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.host().is_none() {
        return Err(format!(
            "{u:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(Some(uri))
}

/// A comma-separated list (as a list flag or a file list arrives), empty items dropped.
fn list(t: &str) -> Result<Vec<String>, String> {
    Ok(t.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect())
}

/// A repeatable flag as one comma-separated value, `None` when not given.
fn joined(v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v.join(","))
}

fn admin(a: &str) -> Result<Option<SocketAddr>, String> {
    match a.trim() {
        "" | "off" | "none" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| format!("{a:?} is not an address like 127.0.0.1:3129 (or off)")),
    }
}

impl ServeArgs {
    /// Load the configuration file (`--config`, else the default path if it exists) and resolve.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let file = load_file(self.config.as_deref())?;
        self.resolve_with(file.as_ref())
    }

    /// Validate into a proxy configuration (same as [`resolve`](Self::resolve)).
    pub fn to_config(&self) -> Result<ProxyConfig, ConfigError> {
        self.resolve().map(|r| r.proxy)
    }

    /// Layer these values over `file` and the defaults, and validate.
    pub fn resolve_with(&self, file: Option<&ConfigFile>) -> Result<Resolved, ConfigError> {
        let l = Layers { file };
        let (listen, listen_s) =
            l.pick("listen", self.listen.as_deref(), "127.0.0.1:3128", |t| {
                t.parse::<SocketAddr>()
                    .map_err(|_| format!("{t:?} is not an address like 127.0.0.1:3128"))
            })?;
        let default_dir = config::default_cache_dir().display().to_string();
        let cli_dir = self.cache_dir.as_ref().map(|p| p.display().to_string());
        let (cache_dir, _) = l.pick("cache-dir", cli_dir.as_deref(), &default_dir, |t| {
            if t.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(PathBuf::from(t))
            }
        })?;
        let (up, up_s) = l.pick("upstream", self.upstream.as_deref(), "", upstream)?;
        let mut c = ProxyConfig::new(listen, cache_dir.clone());
        c.upstream = up;
        let size_limit;
        (c.size_limit, size_limit) =
            l.pick("size-limit", self.size_limit.as_deref(), "1GiB", size)?;
        let eviction_policy;
        (c.eviction_policy, eviction_policy) = l.pick(
            "eviction-policy",
            self.eviction_policy.as_deref(),
            "least-recently-used",
            |t| {
                t.parse::<EvictionPolicy>().map_err(|_| {
                    format!(
                        "{t:?}: expected least-recently-used, least-recently-stored, \
                         least-frequently-used or none"
                    )
                })
            },
        )?;
        let max_object_size;
        (c.max_object_size, max_object_size) = l.pick(
            "max-object-size",
            self.max_object_size.as_deref(),
            "256MiB",
            size,
        )?;
        (c.statistics, _) = l.pick(
            "statistics",
            self.statistics.as_deref(),
            "true",
            config::parse_bool,
        )?;
        (c.xfetch_beta, _) = l.pick("xfetch-beta", self.xfetch_beta.as_deref(), "1", |t| {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|b| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| format!("{t:?} must be a number >= 0"))
        })?;
        let stale_if_error;
        (c.stale_if_error, stale_if_error) = l.pick(
            "stale-if-error",
            self.stale_if_error.as_deref(),
            "off",
            |t| match t.trim() {
                "off" | "" => Ok(None),
                t => duration(t).map(Some),
            },
        )?;
        let stale_while_revalidate;
        (c.stale_while_revalidate, stale_while_revalidate) = l.pick(
            "stale-while-revalidate",
            self.stale_while_revalidate.as_deref(),
            "off",
            |t| match t.trim() {
                "off" | "" => Ok(None),
                t => duration(t).map(Some),
            },
        )?;
        (c.offline, _) = l.pick(
            "offline",
            self.offline.as_deref(),
            "false",
            config::parse_bool,
        )?;
        let connect_timeout;
        (c.connect_timeout, connect_timeout) = l.pick(
            "connect-timeout",
            self.connect_timeout.as_deref(),
            "10s",
            duration,
        )?;
        let response_timeout;
        (c.response_timeout, response_timeout) = l.pick(
            "response-timeout",
            self.response_timeout.as_deref(),
            "60s",
            duration,
        )?;
        let header_timeout;
        (c.header_timeout, header_timeout) = l.pick(
            "header-timeout",
            self.header_timeout.as_deref(),
            "30s",
            duration,
        )?;
        let idle_timeout;
        (c.idle_timeout, idle_timeout) = l.pick(
            "idle-timeout",
            self.idle_timeout.as_deref(),
            "60s",
            nonzero_duration,
        )?;
        let tunnel_idle_timeout;
        (c.tunnel_idle_timeout, tunnel_idle_timeout) = l.pick(
            "tunnel-idle-timeout",
            self.tunnel_idle_timeout.as_deref(),
            "10m",
            nonzero_duration,
        )?;
        let body_timeout;
        (c.body_timeout, body_timeout) = l.pick(
            "body-timeout",
            self.body_timeout.as_deref(),
            "10m",
            |t| match t.trim() {
                "off" | "" => Ok(None),
                t => duration(t).map(Some),
            },
        )?;
        let lock_timeout;
        (c.lock_timeout, lock_timeout) =
            l.pick("lock-timeout", self.lock_timeout.as_deref(), "5s", duration)?;
        let shutdown_timeout;
        (c.shutdown_timeout, shutdown_timeout) = l.pick(
            "shutdown-timeout",
            self.shutdown_timeout.as_deref(),
            "10s",
            duration,
        )?;
        (c.max_connections, _) = l.pick(
            "max-connections",
            self.max_connections.as_deref(),
            "10000",
            |t| match t.trim().parse::<usize>() {
                Ok(0) => Err("must be at least 1".to_string()),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("{t:?} is not a whole number")),
            },
        )?;
        let max_header_size;
        let header_bytes;
        (header_bytes, max_header_size) = l.pick(
            "max-header-size",
            self.max_header_size.as_deref(),
            "64KiB",
            size,
        )?;
        c.max_header_size = usize::try_from(header_bytes).unwrap_or(usize::MAX);
        let memory_cache_size;
        let mem;
        (mem, memory_cache_size) = l.pick(
            "memory-cache-size",
            self.memory_cache_size.as_deref(),
            "128MiB",
            size,
        )?;
        c.memory_cache_size = usize::try_from(mem).unwrap_or(usize::MAX);
        let memory_cache_ttl;
        (c.memory_cache_ttl, memory_cache_ttl) = l.pick(
            "memory-cache-ttl",
            self.memory_cache_ttl.as_deref(),
            "1s",
            duration,
        )?;
        (c.pseudonym, _) = l.pick("pseudonym", self.pseudonym.as_deref(), "hoard", |t| {
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(t.to_string())
            } else {
                Err(format!("{t:?}: expected a non-empty token without spaces"))
            }
        })?;
        (c.forwarding_headers, _) = l.pick(
            "forwarding-headers",
            self.forwarding_headers.as_deref(),
            "strip",
            ForwardingHeaders::parse,
        )?;
        (c.purge_allow, _) = l.pick(
            "purge-allow",
            self.purge_allow.as_deref(),
            "127.0.0.0/8,::1",
            config::parse_ip_list,
        )?;
        (c.allow, _) = l.pick(
            "allow",
            self.allow.as_deref(),
            "127.0.0.0/8,::1",
            config::parse_ip_list,
        )?;
        (c.proxy_auth, _) = l.pick(
            "proxy-auth",
            self.proxy_auth.as_deref(),
            "",
            config::parse_credentials,
        )?;
        let admin_s;
        (c.admin, admin_s) = l.pick("admin", self.admin.as_deref(), "off", admin)?;
        (c.admin_allow, _) = l.pick(
            "admin-allow",
            self.admin_allow.as_deref(),
            "127.0.0.0/8,::1",
            config::parse_ip_list,
        )?;
        let (log_format, _) = l.pick("log-format", self.log_format.as_deref(), "text", |t| {
            t.parse::<LogFormat>()
        })?;
        (c.mitm, _) = l.pick("mitm", self.mitm.as_deref(), "false", config::parse_bool)?;
        (c.mitm_bypass, _) = l.pick(
            "mitm-bypass",
            joined(&self.mitm_bypass).as_deref(),
            "",
            list,
        )?;
        let cli_ca = self.ca_dir.as_ref().map(|p| p.display().to_string());
        (c.ca_dir, _) = l.pick("ca-dir", cli_ca.as_deref(), "", |t| {
            Ok((!t.is_empty()).then(|| PathBuf::from(t)))
        })?;
        let extra_ca_files;
        (extra_ca_files, _) = l.pick(
            "extra-ca-files",
            joined(&self.extra_ca_files).as_deref(),
            "",
            list,
        )?;
        c.extra_ca_files = extra_ca_files.iter().map(PathBuf::from).collect();
        (c.insecure_upstream, _) = l.pick(
            "insecure-upstream",
            self.insecure_upstream.as_deref(),
            "false",
            config::parse_bool,
        )?;
        let resolve;
        (resolve, _) = l.pick("resolve", joined(&self.resolve).as_deref(), "", list)?;
        c.resolve = resolve
            .iter()
            .map(|r| config::parse_resolve(r).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|reason| ConfigError::Value {
                key: "resolve",
                reason,
            })?;
        (c.allowed_connect_ports, _) = l.pick(
            "allowed-connect-ports",
            self.allowed_connect_ports.as_deref(),
            "443",
            |t| {
                list(t)?
                    .iter()
                    .map(|p| {
                        p.parse::<u16>()
                            .map_err(|_| format!("{p:?} is not a port number"))
                    })
                    .collect()
            },
        )?;
        let effective = Effective {
            listen: listen_s,
            cache_dir: cache_dir.display().to_string(),
            upstream: c.upstream.as_ref().map(|_| up_s),
            size_limit,
            eviction_policy,
            max_object_size,
            statistics: c.statistics,
            xfetch_beta: c.xfetch_beta,
            stale_if_error,
            stale_while_revalidate,
            offline: c.offline,
            connect_timeout,
            response_timeout,
            header_timeout,
            idle_timeout,
            tunnel_idle_timeout,
            body_timeout,
            lock_timeout,
            shutdown_timeout,
            max_connections: c.max_connections as u64,
            max_header_size,
            memory_cache_size,
            memory_cache_ttl,
            pseudonym: c.pseudonym.clone(),
            forwarding_headers: c.forwarding_headers.as_str().to_string(),
            purge_allow: c.purge_allow.iter().map(ToString::to_string).collect(),
            allow: c.allow.iter().map(ToString::to_string).collect(),
            proxy_auth: c
                .proxy_auth
                .iter()
                .map(|p| format!("{}:***", p.split(':').next().unwrap_or("")))
                .collect(),
            admin: c.admin.map(|_| admin_s),
            admin_allow: c.admin_allow.iter().map(ToString::to_string).collect(),
            log_format,
            mitm: c.mitm,
            mitm_bypass: c.mitm_bypass.clone(),
            ca_dir: c.ca_dir.as_ref().map(|p| p.display().to_string()),
            extra_ca_files,
            insecure_upstream: c.insecure_upstream,
            resolve,
            allowed_connect_ports: c
                .allowed_connect_ports
                .iter()
                .map(ToString::to_string)
                .collect(),
            rules: Vec::new(),
        };
        c.rules = file.map(|f| f.rules.clone()).unwrap_or_default();
        let mut effective = effective;
        effective.rules = c.rules.iter().map(EffectiveRule::from).collect();
        Ok(Resolved {
            proxy: c,
            log_format,
            effective,
            file: file.map(|f| f.path.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hoard").chain(args.iter().copied())).unwrap()
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("/etc/hoard.toml"), text).unwrap()
    }

    #[test]
    fn defaults_without_file_or_flags() {
        let r = ServeArgs::default().resolve_with(None).unwrap();
        let c = &r.proxy;
        assert_eq!(c.listen, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(c.size_limit, 1 << 30);
        assert_eq!(c.eviction_policy, EvictionPolicy::LeastRecentlyUsed);
        assert!(c.upstream.is_none() && c.admin.is_none() && !c.offline);
        assert!(c.statistics);
        assert_eq!(c.purge_allow, crate::proxy::loopback_nets());
        assert_eq!(r.log_format, LogFormat::Text);
        assert_eq!(r.effective.size_limit, "1GiB");
    }

    #[test]
    fn bad_access_options_are_errors() {
        for args in [
            &["--proxy-auth", "nocolon"][..],
            &["--proxy-auth", ":pw"],
            &["--allow", "10.0.0.0/40"],
            &["--idle-timeout", "0s"],
        ] {
            assert!(parse(args).serve.resolve_with(None).is_err(), "{args:?}");
        }
    }

    #[test]
    fn exposure_warning_only_for_non_loopback_listen_with_default_allow() {
        let r = ServeArgs::default().resolve_with(None).unwrap();
        assert!(crate::proxy::exposure_warning(&r.proxy).is_none());
        let mut c = r.proxy.clone();
        c.listen = "0.0.0.0:3128".parse().unwrap();
        assert!(crate::proxy::exposure_warning(&c).is_some());
        c.allow = crate::config::parse_ip_list("10.0.0.0/8").unwrap();
        assert!(crate::proxy::exposure_warning(&c).is_none());
    }

    #[test]
    fn mitm_options_from_flags_and_file() {
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
        let c = cli.serve.resolve_with(None).unwrap().proxy;
        assert!(c.mitm && !c.insecure_upstream);
        assert_eq!(c.mitm_bypass, vec!["*.bank.example", "pinned.example"]);
        assert_eq!(c.resolve[0].1, 8443);
        assert_eq!(c.allowed_connect_ports, vec![443, 8443]);
        assert_eq!(c.extra_ca_files, vec![PathBuf::from("/tmp/x.pem")]);
        assert_eq!(c.ca_dir(), c.cache_dir.join("ca"));
        let f = file(
            "mitm = true\nmitm-bypass = [\"a.example\"]\nresolve = [\"o.test:9443:127.0.0.1\"]\n",
        );
        let c = ServeArgs::default().resolve_with(Some(&f)).unwrap().proxy;
        assert!(c.mitm);
        assert_eq!(c.mitm_bypass, vec!["a.example"]);
        assert_eq!(c.resolve[0].1, 9443);
        assert!(
            parse(&["--resolve", "o.test:443"])
                .serve
                .resolve_with(None)
                .is_err()
        );
        let cli = parse(&["ca", "--cache-dir", "/tmp/h"]);
        let Some(Command::Ca(a)) = cli.command else {
            panic!("expected ca")
        };
        assert_eq!(a.resolve_ca_dir().unwrap(), PathBuf::from("/tmp/h/ca"));
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
            "--offline",
        ]);
        let Some(Command::Serve(a)) = cli.command else {
            panic!("expected serve")
        };
        let c = a.resolve_with(None).unwrap().proxy;
        assert_eq!(c.size_limit, 10 << 20);
        assert_eq!(c.upstream.unwrap().port_u16(), Some(8080));
        assert!(c.offline);
    }

    /// (flag args, file text) -> effective value of one key.
    macro_rules! layered {
        ($name:ident, $args:expr, $file:expr, $get:expr, $want:expr) => {
            #[test]
            fn $name() {
                let cli = parse($args);
                let f = $file.map(file);
                let r = cli.serve.resolve_with(f.as_ref()).unwrap();
                assert_eq!($get(&r), $want);
            }
        };
    }
    layered!(
        tunnel_idle_timeout_from_the_file,
        &[],
        Some("tunnel-idle-timeout = \"90s\""),
        |r: &Resolved| r.proxy.tunnel_idle_timeout,
        Duration::from_secs(90)
    );
    layered!(
        idle_timeout_flag,
        &["--idle-timeout", "5s"],
        Some("idle-timeout = \"1m\""),
        |r: &Resolved| r.proxy.idle_timeout,
        Duration::from_secs(5)
    );
    layered!(
        body_timeout_off_in_file,
        &[],
        Some("body-timeout = \"off\""),
        |r: &Resolved| r.proxy.body_timeout,
        None
    );
    layered!(
        body_timeout_default,
        &[],
        None::<&str>,
        |r: &Resolved| r.proxy.body_timeout,
        Some(Duration::from_secs(600))
    );
    layered!(
        allow_list_in_file,
        &[],
        Some("allow = [\"10.0.0.0/8\", \"::1\"]"),
        |r: &Resolved| r.effective.allow.clone(),
        vec!["10.0.0.0/8".to_string(), "::1/128".to_string()]
    );
    layered!(
        proxy_auth_flag_is_redacted_in_effective,
        &["--proxy-auth", "alice:s3cret,bob:pw"],
        None::<&str>,
        |r: &Resolved| (r.proxy.proxy_auth.len(), r.effective.proxy_auth.join(",")),
        (2, "alice:***,bob:***".to_string())
    );
    layered!(
        file_over_default,
        &[],
        Some("size-limit = \"2GiB\""),
        |r: &Resolved| r.proxy.size_limit,
        2 << 30
    );
    layered!(
        flag_over_file,
        &["--size-limit", "3GiB"],
        Some("size-limit = \"2GiB\""),
        |r: &Resolved| r.proxy.size_limit,
        3 << 30
    );
    layered!(
        int_size_in_file,
        &[],
        Some("max-object-size = 1024"),
        |r: &Resolved| r.proxy.max_object_size,
        1024
    );
    layered!(
        int_duration_in_file,
        &[],
        Some("lock-timeout = 2"),
        |r: &Resolved| r.proxy.lock_timeout,
        Duration::from_secs(2)
    );
    layered!(
        offline_flag_false_over_file,
        &["--offline=false"],
        Some("offline = true"),
        |r: &Resolved| r.proxy.offline,
        false
    );
    layered!(
        offline_in_file,
        &[],
        Some("offline = true"),
        |r: &Resolved| r.proxy.offline,
        true
    );
    layered!(
        empty_purge_list,
        &[],
        Some("purge-allow = []"),
        |r: &Resolved| r.proxy.purge_allow.len(),
        0
    );
    layered!(
        admin_off,
        &["--admin", "off"],
        Some("admin = \"127.0.0.1:1\""),
        |r: &Resolved| r.proxy.admin,
        None
    );
    layered!(
        admin_in_file,
        &[],
        Some("admin = \"127.0.0.1:1\""),
        |r: &Resolved| r.proxy.admin,
        Some("127.0.0.1:1".parse().unwrap())
    );
    layered!(
        admin_allow_default_is_loopback,
        &[],
        None::<&str>,
        |r: &Resolved| (r.proxy.admin_allow.clone(), r.effective.admin_allow.clone()),
        (
            crate::proxy::loopback_nets(),
            vec!["127.0.0.0/8".to_string(), "::1/128".to_string()]
        )
    );
    layered!(
        admin_allow_flag_over_file,
        &["--admin-allow", "10.0.0.0/8"],
        Some("admin-allow = [\"192.168.0.0/16\"]"),
        |r: &Resolved| r.effective.admin_allow.clone(),
        vec!["10.0.0.0/8".to_string()]
    );
    layered!(
        admin_allow_in_file,
        &[],
        Some("admin-allow = [\"192.168.0.0/16\", \"::1\"]"),
        |r: &Resolved| r.effective.admin_allow.clone(),
        vec!["192.168.0.0/16".to_string(), "::1/128".to_string()]
    );
    layered!(
        json_logs,
        &["--log-format", "json"],
        None::<&str>,
        |r: &Resolved| r.log_format,
        LogFormat::Json
    );
    layered!(
        xfetch_float_in_file,
        &[],
        Some("xfetch-beta = 2.5"),
        |r: &Resolved| r.proxy.xfetch_beta,
        2.5
    );
    layered!(
        stale_while_revalidate_in_file,
        &[],
        Some("stale-while-revalidate = \"2s\""),
        |r: &Resolved| r.proxy.stale_while_revalidate,
        Some(Duration::from_secs(2))
    );
    layered!(
        stale_if_error_in_file,
        &[],
        Some("stale-if-error = \"1m\""),
        |r: &Resolved| r.proxy.stale_if_error,
        Some(Duration::from_secs(60))
    );

    /// (flag args, file text) -> error naming what.
    macro_rules! refused {
        ($name:ident, $args:expr, $file:expr, $want:expr) => {
            #[test]
            fn $name() {
                let cli = parse($args);
                let f = $file.map(file);
                let e = cli.serve.resolve_with(f.as_ref()).unwrap_err().to_string();
                assert!(e.contains($want), "{e}");
            }
        };
    }
    refused!(
        bad_upstream_flag,
        &["--upstream", "ftp://x"],
        None::<&str>,
        "invalid --upstream (command line or HOARD_UPSTREAM)"
    );
    refused!(
        bad_policy_flag,
        &["--eviction-policy", "random"],
        None::<&str>,
        "--eviction-policy"
    );
    refused!(
        bad_policy_file,
        &[],
        Some("\neviction-policy = \"random\""),
        "/etc/hoard.toml:2: eviction-policy:"
    );
    refused!(
        zero_connections_file,
        &[],
        Some("max-connections = 0"),
        "/etc/hoard.toml:1: max-connections: must be at least 1"
    );
    refused!(
        negative_beta,
        &["--xfetch-beta=-1"],
        None::<&str>,
        "--xfetch-beta"
    );
    refused!(
        bad_bool_file,
        &[],
        Some("statistics = \"maybe\""),
        "/etc/hoard.toml:1: statistics:"
    );
    refused!(
        bad_admin_allow_flag,
        &["--admin-allow", "10.0.0.0/40"],
        None::<&str>,
        "--admin-allow"
    );
}
