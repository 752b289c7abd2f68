//! Configuration: command line, environment and file, validated into plain values for the proxy.
//!
//! Invariant: everything here is parsing and validation; nothing touches sockets or the store.
//! The proxy receives a finished [`crate::proxy::ProxyConfig`].

use std::path::PathBuf;
use std::time::Duration;

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
