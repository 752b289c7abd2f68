//! Command line: raw clap arguments, turned into a validated [`ProxyConfig`] in a second step.
//!
//! This file: the top level (`Cli`, `Command`) and `serve`'s arguments with their layering
//! into a [`Resolved`] configuration; the other subcommands' arguments are in `commands.rs`.
//!
//! Invariant: nothing here starts servers or opens the store; `main.rs` does that with the
//! values produced here.

mod commands;

pub use commands::{
    CaCmd, CheckCmd, ClearCmd, EvictCmd, ExportCmd, ImportCmd, LsCmd, StatsCmd, StoreArgs,
    TierChoice, UrlCmd, WarmCmd,
};

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
mod tests;
