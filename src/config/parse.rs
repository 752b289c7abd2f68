//! The parsers the option table names: each takes an option's text (as given on the command
//! line, in a `HOARD_*` variable, in the file with lists joined by commas, or the default)
//! and returns the value or why it was refused.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::LogFormat;
use crate::store::EvictionPolicy;

pub use super::{
    parse_bool as boolean, parse_credentials as credentials, parse_ip_list as ip_list,
};
pub use crate::http_cache::ForwardingHeaders;

/// An address like `127.0.0.1:3128`.
pub fn socket_addr(t: &str) -> Result<SocketAddr, String> {
    t.parse()
        .map_err(|_| format!("{t:?} is not an address like 127.0.0.1:3128"))
}

/// An address, or `off` (also `none`, empty) for none.
pub fn admin(a: &str) -> Result<Option<SocketAddr>, String> {
    match a.trim() {
        "" | "off" | "none" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| format!("{a:?} is not an address like 127.0.0.1:3129 (or off)")),
    }
}

/// A shared-tier Redis URL (checked), or `off` (also `none`, empty) for none.
pub fn shared_url(t: &str) -> Result<Option<String>, String> {
    match t.trim() {
        "" | "off" | "none" => Ok(None),
        u => crate::entries::shared::SharedConfig::parse_url(u)
            .map(|_| Some(u.to_string()))
            .map_err(|e| e.to_string()),
    }
}

/// A shared-tier key prefix: printable, no spaces or braces (they would break hash tags).
pub fn shared_prefix(t: &str) -> Result<String, String> {
    if t.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        Ok(t.to_string())
    } else {
        Err(format!(
            "{t:?}: printable characters only, no spaces, no braces"
        ))
    }
}

/// An access log destination (see [`crate::access_log::Destination::parse`]).
pub fn access_log(t: &str) -> Result<crate::access_log::Destination, String> {
    crate::access_log::Destination::parse(t)
}

/// A worker thread count, or `auto` (see [`crate::runtime::parse_threads`]).
pub fn threads(t: &str) -> Result<Option<std::num::NonZeroUsize>, String> {
    crate::runtime::parse_threads(t)
}

/// `per-core` or `work-stealing`.
pub fn scheduler(t: &str) -> Result<crate::runtime::Scheduler, String> {
    t.parse()
}

/// A path that must not be empty.
pub fn path(t: &str) -> Result<PathBuf, String> {
    if t.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(PathBuf::from(t))
    }
}

/// A path, or none when empty.
pub fn optional_path(t: &str) -> Result<Option<PathBuf>, String> {
    Ok((!t.is_empty()).then(|| PathBuf::from(t)))
}

/// A comma-separated list of paths, empty items dropped.
pub fn paths(t: &str) -> Result<Vec<PathBuf>, String> {
    Ok(list(t)?.into_iter().map(PathBuf::from).collect())
}

/// An `http://` or `https://` URL with a host, or none when empty.
pub fn upstream(u: &str) -> Result<Option<http::Uri>, String> {
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

/// A size in bytes (`1GiB`, `500MB`, `1024`).
pub fn size(t: &str) -> Result<u64, String> {
    super::parse_size(t).map_err(|e| e.to_string())
}

/// A size in bytes held in a `usize` (saturating).
pub fn bytes(t: &str) -> Result<usize, String> {
    size(t).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// A duration (`10s`, `5m`, `1m30s`, a number of seconds).
pub fn duration(t: &str) -> Result<Duration, String> {
    super::parse_duration(t).map_err(|e| e.to_string())
}

/// A duration that must be more than zero.
pub fn nonzero_duration(t: &str) -> Result<Duration, String> {
    match duration(t)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d => Ok(d),
    }
}

/// A duration, or `off` (or empty) for none.
pub fn off_or_duration(t: &str) -> Result<Option<Duration>, String> {
    match t.trim() {
        "off" | "" => Ok(None),
        t => duration(t).map(Some),
    }
}

/// A whole number of at least 1.
pub fn count(t: &str) -> Result<usize, String> {
    match t.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{t:?} is not a whole number")),
    }
}

/// A finite number >= 0.
pub fn nonnegative(t: &str) -> Result<f64, String> {
    t.trim()
        .parse::<f64>()
        .ok()
        .filter(|b| b.is_finite() && *b >= 0.0)
        .ok_or_else(|| format!("{t:?} must be a number >= 0"))
}

/// A non-empty token of visible ASCII (no spaces).
pub fn token(t: &str) -> Result<String, String> {
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(t.to_string())
    } else {
        Err(format!("{t:?}: expected a non-empty token without spaces"))
    }
}

/// `least-recently-used`, `least-recently-stored`, `least-frequently-used` or `none`.
pub fn eviction_policy(t: &str) -> Result<EvictionPolicy, String> {
    t.parse::<EvictionPolicy>().map_err(|_| {
        format!(
            "{t:?}: expected least-recently-used, least-recently-stored, \
             least-frequently-used or none"
        )
    })
}

/// `strip` or `pass`.
pub fn forwarding(t: &str) -> Result<ForwardingHeaders, String> {
    ForwardingHeaders::parse(t)
}

/// `text` or `json`.
pub fn log_format(t: &str) -> Result<LogFormat, String> {
    t.parse()
}

/// A comma-separated list (as a list flag or a file list arrives), empty items dropped.
pub fn list(t: &str) -> Result<Vec<String>, String> {
    Ok(t.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect())
}

/// A comma-separated list of port numbers.
pub fn ports(t: &str) -> Result<Vec<u16>, String> {
    list(t)?
        .iter()
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))
        })
        .collect()
}

/// A comma-separated list of `HOST:PORT:ADDR` entries.
pub fn resolve(t: &str) -> Result<Vec<(String, u16, IpAddr)>, String> {
    list(t)?.iter().map(|r| resolve_entry(r)).collect()
}

/// One `HOST:PORT:ADDR` entry (like curl's `--resolve`; an IPv6 `ADDR` may be bracketed); the
/// host is lower-cased.
pub fn resolve_entry(text: &str) -> Result<(String, u16, IpAddr), String> {
    let err = |why: &str| format!("{text:?}: {why} (expected HOST:PORT:ADDR)");
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
