//! Configuration: command line, environment and file, validated into plain values for the proxy.
//!
//! Every option of `hoard serve` is declared once, in the table of `options.rs`: its name (the
//! file key and the `--flag`), its `HOARD_*` variable (derived from the name), its default, its
//! parser, its doc text, how `hoard config` prints it and the [`ProxyConfig`] field it fills.
//! The clap arguments ([`Given`]), the file's key list ([`FILE_KEYS`]), the layering
//! ([`resolve`]), [`Effective`] and [`ProxyConfig`] with its defaults are generated from it
//! (the machinery is in `table.rs`).
//!
//! - `options.rs`: the table.
//! - `table.rs`: what a row declares ([`Opt`], [`Kind`]), the `options_table!` macro, the clap
//!   arguments and the layering flag > `HOARD_*` > file > default.
//! - `parse.rs`: one parser per kind of value, `&str -> Result<T, String>`.
//! - `show.rs`: how `hoard config` prints values.
//! - `file.rs`: the TOML file, with the line of each key for errors.
//! - `proxy.rs`: [`ProxyConfig::new`] (defaults from the table) and the default lists.
//!
//! Invariant: everything here is parsing and validation; nothing touches sockets or the store.
//! The proxy receives a finished [`ProxyConfig`].

mod file;
mod options;
mod parse;
mod proxy;
mod show;
mod table;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use file::{ConfigFile, FileValue, default_config_path, load_file};
pub use options::{Effective, FILE_KEYS, OPTIONS, ProxyConfig, resolve};
pub use proxy::{default_random, loopback_nets};
pub use show::EffectiveRule;
pub use table::{Given, Kind, Opt};

/// A value in the configuration could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size such as `1GiB` or `512k` did not parse.
    #[error(
        "invalid size {0:?}: expected a number with an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)"
    )]
    Size(String),
    /// A duration such as `10s` or `5m` did not parse.
    #[error("invalid duration {0:?}: expected a number with a unit (ms, s, m, h, d), e.g. 30s")]
    Duration(String),
    /// Some other value was out of range or malformed.
    #[error("invalid value for {key}: {reason}")]
    Value {
        /// The option name.
        key: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A value given on the command line or in a `HOARD_*` environment variable was refused.
    #[error("invalid --{key} (command line or {env}): {reason}")]
    Flag {
        /// The option name (`size-limit`).
        key: String,
        /// Its environment variable (`HOARD_SIZE_LIMIT`).
        env: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration file has a syntax error, an unknown key or a bad value.
    #[error("{path}:{line}: {key}: {reason}")]
    File {
        /// The file.
        path: String,
        /// 1-based line of the key or value.
        line: usize,
        /// The key (or `syntax` for a parse error without a key).
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// Parse a byte size: `1024`, `64k`, `64KiB`, `1.5GB`, `256 MiB`. Units are binary (K = 1024)
/// for `K`, `KiB`, and decimal for `KB` as in most tools that distinguish them.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        _ => return Err(err()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err());
    }
    Ok(v.round() as u64)
}

/// Parse a duration: `250ms`, `30s`, `5m`, `2h`, `7d`, or a combination like `1m30s`.
/// A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(err())
        };
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, after) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| err())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let secs = match unit.trim() {
            "us" | "µs" => 0.000_001,
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hours" => 3600.0,
            "d" | "days" => 86400.0,
            _ => return Err(err()),
        };
        total += n * secs;
        rest = next.trim_start();
    }
    if !total.is_finite() || total < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// The default cache directory: `$XDG_CACHE_HOME/hoard`, else `~/.cache/hoard`, else `./hoard-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hoard");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("hoard");
    }
    PathBuf::from("hoard-cache")
}

/// Parse a `--resolve` entry `HOST:PORT:ADDR` (like curl's; an IPv6 `ADDR` may be bracketed).
pub fn parse_resolve(text: &str) -> Result<(String, u16, IpAddr), ConfigError> {
    parse::resolve_entry(text).map_err(|reason| ConfigError::Value {
        key: "resolve",
        reason,
    })
}

/// An IP network (`127.0.0.0/8`, `::1`, `10.1.2.3`) for client allow lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        Ok(IpNet { addr, prefix })
    }
}

/// Parse a comma-separated allow list; empty text is an empty list.
pub fn parse_ip_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Parse a comma-separated list of `user:password` pairs (Basic proxy credentials); empty
/// text is an empty list (no authentication).
pub fn parse_credentials(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(':') {
            Some((user, _)) if !user.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                Ok(s.to_string())
            }
            _ => Err(format!(
                "{:?}: expected user:password (printable ASCII, user not empty)",
                s.split(':').next().unwrap_or("")
            )),
        })
        .collect()
}

/// Parse `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?}: expected true or false")),
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?}: expected text or json")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries() {
        let (h, p, a) = parse_resolve("Origin.Test:8443:127.0.0.1").unwrap();
        assert_eq!(
            (h.as_str(), p, a.to_string().as_str()),
            ("origin.test", 8443, "127.0.0.1")
        );
        let (_, _, a) = parse_resolve("x:443:[::1]").unwrap();
        assert_eq!(a.to_string(), "::1");
        assert!(parse_resolve("x:443").is_err());
        assert!(parse_resolve("x:http:127.0.0.1").is_err());
        assert!(parse_resolve("x:443:nope").is_err());
    }

    macro_rules! size {
        ($name:ident, $text:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(parse_size($text), $want);
            }
        };
    }
    size!(size_plain, "1024", Ok(1024));
    size!(size_k, "64k", Ok(65536));
    size!(size_kib, "64KiB", Ok(65536));
    size!(size_kb, "64KB", Ok(64000));
    size!(size_gib_space, "1 GiB", Ok(1 << 30));
    size!(size_fraction, "1.5M", Ok(1572864));
    size!(
        size_bad_unit,
        "12 parsecs",
        Err(ConfigError::Size("12 parsecs".into()))
    );
    size!(size_empty, "", Err(ConfigError::Size("".into())));
    size!(size_neg, "-1", Err(ConfigError::Size("-1".into())));

    macro_rules! dur {
        ($name:ident, $text:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(parse_duration($text), $want);
            }
        };
    }
    dur!(dur_bare, "30", Ok(Duration::from_secs(30)));
    dur!(dur_ms, "250ms", Ok(Duration::from_millis(250)));
    dur!(dur_us, "200us", Ok(Duration::from_micros(200)));
    dur!(dur_micro_sign, "50µs", Ok(Duration::from_micros(50)));
    dur!(dur_zero, "0", Ok(Duration::ZERO));
    dur!(dur_min, "5m", Ok(Duration::from_secs(300)));
    dur!(dur_combo, "1m30s", Ok(Duration::from_secs(90)));
    dur!(dur_day, "7d", Ok(Duration::from_secs(7 * 86400)));
    dur!(dur_bad, "soon", Err(ConfigError::Duration("soon".into())));
    dur!(dur_bad_unit, "5y", Err(ConfigError::Duration("5y".into())));

    #[test]
    fn ip_nets() {
        let cases = [
            ("127.0.0.0/8", "127.9.9.9", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("::1", "::1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("::/0", "10.0.0.1", false),
        ];
        for (net, ip, want) in cases {
            let n: IpNet = net.parse().unwrap();
            assert_eq!(n.contains(ip.parse().unwrap()), want, "{net} {ip}");
        }
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("host".parse::<IpNet>().is_err());
        assert_eq!(parse_ip_list("").unwrap(), vec![]);
    }
}
