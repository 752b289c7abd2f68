//! Which host names hoard tunnels to, intercepts and issues leaf certificates for: a DNS name
//! (labels of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 in all, one trailing dot
//! allowed, not ending in an all-digit label) or an IP literal (IPv4 dotted quad; IPv6 in
//! brackets in a CONNECT authority); and the port of an authority a client sends (digits only,
//! no sign, no leading zero: `check_authority_port`).
//!
//! Invariant: a name that passes is matched by no certificate name but itself: no `*`, no
//! empty label, nothing a resolver would read as a number (`127.1`, `0x7f.1`).
//! Underscores are accepted: real hosts use them (`my_bucket.s3.example`), DNS allows them,
//! and in a certificate they match only themselves.

use std::net::{IpAddr, Ipv6Addr};

/// Why a host name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    /// No name at all.
    Empty,
    /// Over 253 bytes.
    TooLong,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label over 63 bytes.
    LongLabel,
    /// A wildcard (`*`).
    Wildcard,
    /// A byte other than a letter, digit, `-` or `_`.
    BadChar,
    /// A label starting or ending with `-`.
    Hyphen,
    /// The last label is all digits (or hex): not an IPv4 address, not a DNS name.
    Numeric,
    /// `[...]` that is not an IPv6 address.
    BadIpv6,
    /// A port with a byte other than a digit (`+443`, `-1`, ` 80`): RFC 3986 3.2.3 `*DIGIT`.
    PortNotDigits,
    /// A port with a leading zero (`0443`): refused, so one port has one spelling.
    PortLeadingZero,
    /// A port above 65535.
    PortRange,
}

impl BadHost {
    /// Why, for response bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BadHost::Empty => "empty host",
            BadHost::TooLong => "longer than 253 bytes",
            BadHost::EmptyLabel => "empty label",
            BadHost::LongLabel => "label longer than 63 bytes",
            BadHost::Wildcard => "wildcard",
            BadHost::BadChar => "character other than a letter, digit, '-' or '_'",
            BadHost::Hyphen => "label starting or ending with '-'",
            BadHost::Numeric => "numeric last label that is not an IPv4 address",
            BadHost::BadIpv6 => "bracketed address that is not IPv6",
            BadHost::PortNotDigits => "port with a character other than a digit",
            BadHost::PortLeadingZero => "port with a leading zero",
            BadHost::PortRange => "port above 65535",
        }
    }
}

impl std::fmt::Display for BadHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host of a CONNECT authority as `http::Uri::host` gives it (IPv6 in brackets).
pub fn check_authority_host(host: &str) -> Result<(), BadHost> {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(BadHost::BadIpv6),
        };
    }
    if host.contains(':') {
        return Err(BadHost::BadChar);
    }
    check_name(host)
}

/// The port of an authority (`host:port`, `[v6]:port`, `user@host:port`), as `http::Uri`
/// keeps it: RFC 3986 `port = *DIGIT`, where `http` would read `+443` as 443 and `0443` as
/// 443 too. No port, or an empty one (`host:`), passes; whether one is required is the
/// caller's.
pub fn check_authority_port(authority: &str) -> Result<(), BadHost> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => hostport,
    };
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return Ok(());
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadHost::PortNotDigits);
    }
    if port.len() > 1 && port.starts_with('0') {
        return Err(BadHost::PortLeadingZero);
    }
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(BadHost::PortRange);
    }
    Ok(())
}

/// A name as a certificate is issued for: an IP address (IPv6 without brackets) or a DNS name.
pub fn check_name(host: &str) -> Result<(), BadHost> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(BadHost::Empty);
    }
    if name.len() > 253 {
        return Err(BadHost::TooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(BadHost::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(BadHost::LongLabel);
        }
        if label.contains('*') {
            return Err(BadHost::Wildcard);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BadHost::BadChar);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(BadHost::Hyphen);
        }
        last = label;
    }
    // `127.1`, `1.2.3.4.5`, `0x7f.1`: inet_aton-style numbers, never top-level domains.
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err(BadHost::Numeric);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_hosts() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.test", ["abcdefghi"; 25].join("."));
        let max_name = format!("{}.tests", vec!["a".repeat(61); 4].join("."));
        assert_eq!(max_name.len(), 253);
        for (host, want) in [
            ("example.com", Ok(())),
            ("Example.COM.", Ok(())),
            ("my_bucket.s3.example", Ok(())),
            ("xn--bcher-kva.example", Ok(())),
            ("localhost", Ok(())),
            ("127.0.0.1", Ok(())),
            ("[::1]", Ok(())),
            ("[2001:db8::1]", Ok(())),
            (max_name.as_str(), Ok(())),
            ("*.example.com", Err(BadHost::Wildcard)),
            ("*", Err(BadHost::Wildcard)),
            ("a*.example.com", Err(BadHost::Wildcard)),
            ("", Err(BadHost::Empty)),
            (".", Err(BadHost::Empty)),
            ("a..b", Err(BadHost::EmptyLabel)),
            (".example.com", Err(BadHost::EmptyLabel)),
            ("example.com..", Err(BadHost::EmptyLabel)),
            (long_label.as_str(), Err(BadHost::LongLabel)),
            (long_name.as_str(), Err(BadHost::TooLong)),
            ("-a.example", Err(BadHost::Hyphen)),
            ("a-.example", Err(BadHost::Hyphen)),
            ("a b.example", Err(BadHost::BadChar)),
            ("a%2e.example", Err(BadHost::BadChar)),
            ("exa\u{e9}mple.com", Err(BadHost::BadChar)),
            ("127.1", Err(BadHost::Numeric)),
            ("1.2.3.4.5", Err(BadHost::Numeric)),
            ("010.0.0.1", Err(BadHost::Numeric)),
            ("0x7f.0x1", Err(BadHost::Numeric)),
            ("[::1", Err(BadHost::BadIpv6)),
            ("[example.com]", Err(BadHost::BadIpv6)),
            ("::1", Err(BadHost::BadChar)),
        ] {
            assert_eq!(check_authority_host(host), want, "{host:?}");
        }
    }

    #[test]
    fn authority_ports() {
        for (authority, want) in [
            ("example.com:443", Ok(())),
            ("example.com", Ok(())),
            ("example.com:", Ok(())),
            ("[::1]:8080", Ok(())),
            ("[::1]", Ok(())),
            ("user:pw@example.com:80", Ok(())),
            ("example.com:0", Ok(())),
            ("example.com:65535", Ok(())),
            ("example.com:+443", Err(BadHost::PortNotDigits)),
            ("example.com:-443", Err(BadHost::PortNotDigits)),
            ("example.com: 443", Err(BadHost::PortNotDigits)),
            ("example.com:4a3", Err(BadHost::PortNotDigits)),
            ("[::1]:+80", Err(BadHost::PortNotDigits)),
            ("user@example.com:+80", Err(BadHost::PortNotDigits)),
            ("example.com:0443", Err(BadHost::PortLeadingZero)),
            ("good.test:036589", Err(BadHost::PortLeadingZero)),
            ("example.com:00", Err(BadHost::PortLeadingZero)),
            ("[::1]:080", Err(BadHost::PortLeadingZero)),
            ("example.com:65536", Err(BadHost::PortRange)),
            ("example.com:99999999999", Err(BadHost::PortRange)),
        ] {
            assert_eq!(check_authority_port(authority), want, "{authority:?}");
        }
    }

    #[test]
    fn certificate_names() {
        assert_eq!(check_name("::1"), Ok(()));
        assert_eq!(check_name("origin.test"), Ok(()));
        assert_eq!(check_name("*.origin.test"), Err(BadHost::Wildcard));
        assert_eq!(check_name("[::1]"), Err(BadHost::BadChar));
    }
}
