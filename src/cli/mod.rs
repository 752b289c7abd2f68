//! Command line: raw clap arguments, turned into a validated [`ProxyConfig`] in a second step.
//!
//! Invariant: nothing here starts servers or opens the store; `main.rs` does that with the
//! values produced here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, ConfigError, ConfigFile, Effective, Given, LogFormat, ProxyConfig, load_file,
};

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
            Some(Command::Expire(s)) => s.config = cfg,
            Some(Command::Clear(c)) => c.store.config = cfg,
            Some(Command::Check(c)) => c.store.config = cfg,
            Some(Command::Ca(c)) => c.store.config = cfg,
            Some(Command::Export(c)) => c.store.config = cfg,
            Some(Command::Import(c)) => c.store.config = cfg,
            Some(Command::Warm(_)) => {}
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
    /// Remove every entry (of the local tier; `--tier` for the shared one).
    Clear(ClearCmd),
    /// Check the store (integrity, rows against value files, counters); exit 1 on problems.
    Check(CheckCmd),
    /// Print the interception CA certificate (creating it if needed) and how to trust it.
    Ca(CaCmd),
    /// Write stored responses to a HAR 1.2 file.
    Export(ExportCmd),
    /// Store the responses of a HAR file (e.g. saved from a browser's devtools).
    Import(ImportCmd),
    /// Fetch a list of URLs through a running proxy so they are stored (exit 1 if any failed).
    Warm(WarmCmd),
}

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

/// Options of `hoard serve`. Every value is optional here: what is not given on the command
/// line or in a `HOARD_*` variable comes from the configuration file, else the default
/// (applied in [`ServeArgs::resolve_with`]).
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Configuration file (set from the global `--config`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// One flag (and `HOARD_*` variable) per option of the table in `config/options.rs`.
    #[command(flatten)]
    pub given: Given,
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
        let (proxy, effective) = config::resolve(&self.given, file)?;
        Ok(Resolved {
            log_format: proxy.log_format,
            proxy,
            effective,
            file: file.map(|f| f.path.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EvictionPolicy;
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

    #[test]
    fn clap_arguments_are_the_option_table() {
        let cmd = <Cli as clap::CommandFactory>::command();
        cmd.clone().debug_assert();
        for o in config::OPTIONS {
            let a = cmd
                .get_arguments()
                .find(|a| a.get_id() == o.key)
                .unwrap_or_else(|| panic!("no argument for {}", o.key));
            assert_eq!(a.get_long(), Some(o.flag));
            assert_eq!(a.get_env(), Some(std::ffi::OsStr::new(o.env)));
        }
        let serve = cmd.find_subcommand("serve").unwrap();
        assert!(
            serve
                .get_arguments()
                .any(|a| a.get_id() == "tunnel-idle-timeout")
        );
        let c = parse(&["--extra-ca-file", "/a.pem,/b.pem", "--extra-ca-file=/c.pem"]);
        let r = c.serve.resolve_with(None).unwrap();
        assert_eq!(r.effective.extra_ca_files, ["/a.pem", "/b.pem", "/c.pem"]);
        let e = parse(&["--tunnel-idle-timeout", "0s"])
            .serve
            .resolve_with(None);
        assert_eq!(
            e.unwrap_err().to_string(),
            "invalid --tunnel-idle-timeout (command line or HOARD_TUNNEL_IDLE_TIMEOUT): \
             must be more than 0"
        );
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
