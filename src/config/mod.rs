//! Configuration: command line, environment and file, validated into plain values for the proxy.
//!
//! Invariant: everything here is parsing and validation; nothing touches sockets or the store.
//! The proxy receives a finished [`crate::proxy::ProxyConfig`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::http_cache::{IgnoreQuery, Pattern, Rule};

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
pub fn parse_resolve(text: &str) -> Result<(String, u16, std::net::IpAddr), ConfigError> {
    let err = |why: &str| ConfigError::Value {
        key: "resolve",
        reason: format!("{text:?}: {why} (expected HOST:PORT:ADDR)"),
    };
    let mut parts = text.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err("missing field"));
    };
    if host.is_empty() {
        return Err(err("empty host"));
    }
    let port: u16 = port.parse().map_err(|_| err("bad port"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr = addr.parse().map_err(|_| err("bad address"))?;
    Ok((host.to_ascii_lowercase(), port, addr))
}

/// Every key the configuration file accepts, in the order of `config/hoard.toml`.
///
/// The file is flat top-level keys; room is kept for a `[[rules]]` array of tables
/// (development-caching rules), which would follow the plain keys.
pub const FILE_KEYS: &[&str] = &[
    "listen",
    "cache-dir",
    "upstream",
    "size-limit",
    "eviction-policy",
    "max-object-size",
    "statistics",
    "xfetch-beta",
    "stale-if-error",
    "stale-while-revalidate",
    "offline",
    "connect-timeout",
    "response-timeout",
    "body-timeout",
    "header-timeout",
    "idle-timeout",
    "tunnel-idle-timeout",
    "lock-timeout",
    "shutdown-timeout",
    "max-connections",
    "max-header-size",
    "memory-cache-size",
    "memory-cache-ttl",
    "pseudonym",
    "forwarding-headers",
    "allow",
    "proxy-auth",
    "purge-allow",
    "admin",
    "admin-allow",
    "log-format",
    "mitm",
    "mitm-bypass",
    "ca-dir",
    "extra-ca-files",
    "insecure-upstream",
    "resolve",
    "allowed-connect-ports",
];

/// A value as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileValue {
    /// A string.
    Str(String),
    /// An integer (sizes in bytes, durations in seconds, counts).
    Int(i64),
    /// A float, as written.
    Float(String),
    /// A boolean.
    Bool(bool),
    /// An array of strings.
    List(Vec<String>),
}

impl FileValue {
    /// The value as the text a command-line flag would carry (lists joined by commas).
    pub fn as_text(&self) -> String {
        match self {
            FileValue::Str(s) => s.clone(),
            FileValue::Int(n) => n.to_string(),
            FileValue::Float(f) => f.clone(),
            FileValue::Bool(b) => b.to_string(),
            FileValue::List(v) => v.join(","),
        }
    }
}

/// A parsed configuration file: known keys only, each with the line it is on.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    entries: BTreeMap<String, (FileValue, usize)>,
    /// The `[[rules]]` tables, in order (first match wins).
    pub rules: Vec<Rule>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl ConfigFile {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        ConfigFile::parse(path, &src)
    }

    /// Parse `src` (the contents of `path`): syntax errors, unknown keys and values of the
    /// wrong type are errors naming the file, the line and the key.
    pub fn parse(path: &Path, src: &str) -> Result<ConfigFile, ConfigError> {
        let err = |offset: usize, key: &str, reason: String| ConfigError::File {
            path: path.display().to_string(),
            line: line_of(src, offset),
            key: key.to_string(),
            reason,
        };
        let table = DeTable::parse(src).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line_text = src[..offset.min(src.len())]
                .rsplit('\n')
                .next()
                .unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "syntax".to_string());
            err(offset, &key, e.message().trim().to_string())
        })?;
        let mut entries = BTreeMap::new();
        let mut rules = Vec::new();
        for (k, v) in table.get_ref() {
            let key: &str = k.get_ref();
            let at = k.span().start;
            if key == "rules" {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(err(at, key, "expected [[rules]] tables".to_string()));
                };
                for (i, item) in items.iter().enumerate() {
                    let DeValue::Table(t) = item.get_ref() else {
                        return Err(err(item.span().start, key, "expected a table".to_string()));
                    };
                    rules.push(parse_rule(i, t, item.span().start, &err)?);
                }
                continue;
            }
            if !FILE_KEYS.contains(&key) {
                return Err(err(
                    at,
                    key,
                    "unknown key (config/hoard.toml lists every option)".to_string(),
                ));
            }
            let value = match v.get_ref() {
                DeValue::String(s) => FileValue::Str(s.to_string()),
                DeValue::Integer(i) => FileValue::Int(
                    i64::from_str_radix(i.as_str(), i.radix())
                        .map_err(|e| err(v.span().start, key, e.to_string()))?,
                ),
                DeValue::Float(f) => FileValue::Float(f.as_str().to_string()),
                DeValue::Boolean(b) => FileValue::Bool(*b),
                DeValue::Array(a) => FileValue::List(
                    a.iter()
                        .map(|x| match x.get_ref() {
                            DeValue::String(s) => Ok(s.to_string()),
                            other => Err(err(
                                x.span().start,
                                key,
                                format!("expected a list of strings, found a {}", other.type_str()),
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(err(
                        v.span().start,
                        key,
                        format!(
                            "expected a string or a number, found a {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            entries.insert(key.to_string(), (value, line_of(src, at)));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            entries,
            rules,
        })
    }

    /// The value of `key` and its line, if the file sets it.
    pub fn get(&self, key: &str) -> Option<&(FileValue, usize)> {
        self.entries.get(key)
    }

    /// An error about `key` at `line` of this file.
    pub fn error(&self, key: &str, line: usize, reason: String) -> ConfigError {
        ConfigError::File {
            path: self.path.display().to_string(),
            line,
            key: key.to_string(),
            reason,
        }
    }
}

/// Parse one `[[rules]]` table (the `index`-th). Keys: `name`, `host`, `path`, `ttl`,
/// `ignore_query` (true or a list of parameter patterns), `bypass`, `cache_methods`,
/// `max_body`, `share_auth`.
fn parse_rule(
    index: usize,
    t: &DeTable<'_>,
    at: usize,
    err: &dyn Fn(usize, &str, String) -> ConfigError,
) -> Result<Rule, ConfigError> {
    let text = |v: &DeValue<'_>| match v {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    };
    let get = |name: &str| {
        t.iter()
            .find(|(k, _)| k.get_ref().as_ref() as &str == name)
            .map(|(k, v)| (k.span().start, v))
    };
    for (k, _) in t.iter() {
        let key: &str = k.get_ref();
        if !RULE_KEYS.contains(&key) {
            return Err(err(
                k.span().start,
                &format!("rules.{key}"),
                format!(
                    "unknown rule key (expected one of {})",
                    RULE_KEYS.join(", ")
                ),
            ));
        }
    }
    let string = |name: &str, default: &str| -> Result<String, ConfigError> {
        match get(name) {
            None => Ok(default.to_string()),
            Some((pos, v)) => text(v.get_ref()).ok_or_else(|| {
                err(
                    pos,
                    &format!("rules.{name}"),
                    "expected a string".to_string(),
                )
            }),
        }
    };
    let boolean = |name: &str| -> Result<bool, ConfigError> {
        match get(name) {
            None => Ok(false),
            Some((_, v)) if matches!(v.get_ref(), DeValue::Boolean(_)) => {
                Ok(matches!(v.get_ref(), DeValue::Boolean(true)))
            }
            Some((pos, _)) => Err(err(
                pos,
                &format!("rules.{name}"),
                "expected true or false".into(),
            )),
        }
    };
    let strings = |name: &str| -> Result<Vec<(usize, String)>, ConfigError> {
        match get(name) {
            None => Ok(Vec::new()),
            Some((pos, v)) => match v.get_ref() {
                DeValue::Array(a) => a
                    .iter()
                    .map(|x| {
                        text(x.get_ref())
                            .map(|s| (x.span().start, s))
                            .ok_or_else(|| {
                                err(
                                    pos,
                                    &format!("rules.{name}"),
                                    "expected a list of strings".into(),
                                )
                            })
                    })
                    .collect(),
                _ => Err(err(
                    pos,
                    &format!("rules.{name}"),
                    "expected a list of strings".into(),
                )),
            },
        }
    };
    let name = string("name", &format!("rule{}", index + 1))?;
    let host = string("host", "*")?;
    let path = string("path", "*")?;
    let bad = |key: &str, e: String| {
        let pos = get(key).map_or(at, |(p, _)| p);
        err(pos, &format!("rules.{key}"), e)
    };
    let mut rule = Rule::new(&name, &host, &path).map_err(|e| {
        let key = if Pattern::new(&host).is_err() {
            "host"
        } else {
            "path"
        };
        bad(key, e.to_string())
    })?;
    if get("ttl").is_some() {
        let t = string("ttl", "")?;
        rule.ttl = Some(parse_duration(&t).map_err(|e| bad("ttl", e.to_string()))?);
    }
    if let Some((pos, v)) = get("ignore_query") {
        rule.ignore_query = match v.get_ref() {
            DeValue::Boolean(true) => IgnoreQuery::All,
            DeValue::Boolean(false) => IgnoreQuery::None,
            DeValue::Array(_) => IgnoreQuery::Params(
                strings("ignore_query")?
                    .into_iter()
                    .map(|(p, s)| {
                        Pattern::new(&s).map_err(|e| err(p, "rules.ignore_query", e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(err(
                    pos,
                    "rules.ignore_query",
                    "expected true or a list of parameter patterns".into(),
                ));
            }
        };
    }
    rule.bypass = boolean("bypass")?;
    rule.share_auth = boolean("share_auth")?;
    for (p, m) in strings("cache_methods")? {
        let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| err(p, "rules.cache_methods", format!("{m:?} is not a method")))?;
        rule.cache_methods.push(method);
    }
    if get("max_body").is_some() {
        let m = match get("max_body").map(|(_, v)| v.get_ref()) {
            Some(DeValue::Integer(i)) => i.as_str().to_string(),
            _ => string("max_body", "")?,
        };
        rule.max_body = parse_size(&m).map_err(|e| bad("max_body", e.to_string()))? as usize;
    }
    rule.validate()
        .map_err(|e| err(at, "rules", format!("rule {name:?}: {e}")))?;
    Ok(rule)
}

const RULE_KEYS: &[&str] = &[
    "name",
    "host",
    "path",
    "ttl",
    "ignore_query",
    "bypass",
    "cache_methods",
    "max_body",
    "share_auth",
];

/// The default configuration file: `$XDG_CONFIG_HOME/hoard/hoard.toml`, else
/// `~/.config/hoard/hoard.toml`; `None` when that file does not exist.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    let p = base.join("hoard").join("hoard.toml");
    p.is_file().then_some(p)
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
    dur!(dur_min, "5m", Ok(Duration::from_secs(300)));
    dur!(dur_combo, "1m30s", Ok(Duration::from_secs(90)));
    dur!(dur_day, "7d", Ok(Duration::from_secs(7 * 86400)));
    dur!(dur_bad, "soon", Err(ConfigError::Duration("soon".into())));
    dur!(dur_bad_unit, "5y", Err(ConfigError::Duration("5y".into())));
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn parse(src: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/etc/h.toml"), src)
    }

    fn file_err(line: usize, key: &str) -> impl Fn(&ConfigError) -> bool + '_ {
        move |e| matches!(e, ConfigError::File { line: l, key: k, path, .. } if *l == line && k == key && path == "/etc/h.toml")
    }

    #[test]
    fn rules_parse_in_order() {
        let f = parse(
            "listen = \"127.0.0.1:1\"\n\n[[rules]]\nname = \"api\"\nhost = \"api.local\"\npath = \"/v1/*\"\nttl = \"10m\"\nignore_query = [\"utm_*\", \"ts\"]\n\n[[rules]]\nhost = \"*.bank.example\"\nbypass = true\n\n[[rules]]\nname = \"gql\"\npath = \"/graphql\"\nttl = \"1m\"\ncache_methods = [\"post\"]\nmax_body = \"64KiB\"\nshare_auth = true\nignore_query = true\n",
        )
        .unwrap();
        assert_eq!(f.rules.len(), 3);
        let api = &f.rules[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.ttl, Some(Duration::from_secs(600)));
        assert_eq!(
            api.ignore_query,
            IgnoreQuery::Params(vec![
                Pattern::new("utm_*").unwrap(),
                Pattern::new("ts").unwrap()
            ])
        );
        assert!(f.rules[1].bypass);
        assert_eq!(f.rules[1].name, "rule2");
        assert_eq!(f.rules[1].path.as_str(), "*");
        let gql = &f.rules[2];
        assert_eq!(gql.cache_methods, vec![http::Method::POST]);
        assert_eq!(gql.max_body, 65536);
        assert!(gql.share_auth);
        assert_eq!(gql.ignore_query, IgnoreQuery::All);
    }

    #[test]
    fn rule_errors_name_line_and_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("[[rules]]\nhost = \"a\"\nttl = \"soon\"\n", 3, "rules.ttl"),
            ("[[rules]]\nhots = \"a\"\n", 2, "rules.hots"),
            ("[[rules]]\n\nbypass = \"yes\"\n", 3, "rules.bypass"),
            ("[[rules]]\npath = \"a b\"\n", 2, "rules.path"),
            ("[[rules]]\ncache_methods = [\"POST\"]\n", 1, "rules"),
            ("[[rules]]\nignore_query = 5\n", 2, "rules.ignore_query"),
        ];
        for (src, line, key) in cases {
            let e = parse(src).unwrap_err();
            assert!(file_err(*line, key)(&e), "{src:?}: {e:?}");
        }
    }

    #[test]
    fn known_keys_parse_with_lines() {
        let f = parse("# c\nlisten = \"127.0.0.1:1\"\n\nmax-connections = 5\nstatistics = false\npurge-allow = [\"::1\", \"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(
            f.get("listen").unwrap(),
            &(FileValue::Str("127.0.0.1:1".into()), 2)
        );
        assert_eq!(f.get("max-connections").unwrap(), &(FileValue::Int(5), 4));
        assert_eq!(f.get("statistics").unwrap().0.as_text(), "false");
        assert_eq!(f.get("purge-allow").unwrap().0.as_text(), "::1,10.0.0.0/8");
        assert!(f.get("upstream").is_none());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, usize, &str)] = &[
            ("listen = \"x\"\nsize-limt = \"1G\"\n", 2, "size-limt"),
            ("\n\nadmin = [1]\n", 3, "admin"),
            ("listen = \"x\"\nsize-limit = 1979-05-27\n", 2, "size-limit"),
            ("a\n", 1, "syntax"),
            ("listen = \"x\"\nlock-timeout = \n", 2, "lock-timeout"),
        ];
        for (src, line, key) in cases {
            let e = parse(src).unwrap_err();
            assert!(file_err(*line, key)(&e), "{src:?}: {e:?}");
        }
    }

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
