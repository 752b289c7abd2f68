//! Header surgery for a proxy: hop-by-hop stripping, `Via`, `Age`, and HTTP-date parsing.
//! Invariant: functions here only rewrite the header maps they are given; no clocks, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header fields that are hop-by-hop by definition (RFC 9110 7.6.1) or proxy-specific.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Request fields a client can use to make an origin build links, pick a scheme or host, or
/// route to another URL, none of which is part of the cache key: `Forwarded` (RFC 7239), its
/// `X-Forwarded-*` predecessors and the URL/method override fields of common frameworks. An
/// origin that reflects one of them into a stored page would hand one client's value to
/// everyone (cache poisoning), so the proxy removes them from client requests by default.
pub const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "x-host",
    "x-url-scheme",
    "front-end-https",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What the proxy does with the [`FORWARDING`] fields of a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingHeaders {
    /// Remove them before anything else looks at the request (the default).
    #[default]
    Strip,
    /// Forward them; a request carrying one is never answered from or stored in the cache.
    Pass,
}

impl ForwardingHeaders {
    /// The configuration spelling (`strip`, `pass`).
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardingHeaders::Strip => "strip",
            ForwardingHeaders::Pass => "pass",
        }
    }

    /// Parses the configuration spelling.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strip" => Ok(ForwardingHeaders::Strip),
            "pass" => Ok(ForwardingHeaders::Pass),
            other => Err(format!("{other:?}: expected strip or pass")),
        }
    }
}

/// What [`normalize_request`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalized {
    /// Nothing left that the cache key does not cover.
    Clean,
    /// [`FORWARDING`] fields were kept (`ForwardingHeaders::Pass`): the response may depend on
    /// them, so the request must bypass the cache.
    CarriesForwarding,
}

/// Normalises a client request's header block once, before its cache key, Vary match and
/// storability are computed: hop-by-hop fields (and those named in `Connection`) are removed,
/// so a field the origin never sees can never pick the variant others are served, and the
/// [`FORWARDING`] fields are removed or, under `ForwardingHeaders::Pass`, reported.
pub fn normalize_request(headers: &mut HeaderMap, forwarding: ForwardingHeaders) -> Normalized {
    strip_hop_by_hop(headers);
    let mut found = false;
    for name in FORWARDING {
        if headers.contains_key(*name) {
            found = true;
            if forwarding == ForwardingHeaders::Strip {
                headers.remove(*name);
            }
        }
    }
    if found && forwarding == ForwardingHeaders::Pass {
        Normalized::CarriesForwarding
    } else {
        Normalized::Clean
    }
}

/// Removes hop-by-hop header fields: the fixed list in [`HOP_BY_HOP`] plus every field named by
/// any `Connection` field line.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Appends a `Via` field line such as `1.1 hoard` for a message received with `version`.
pub fn append_via(headers: &mut HeaderMap, version: Version, pseudonym: &str) {
    let proto = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{proto} {pseudonym}")) {
        headers.append(header::VIA, v);
    }
}

/// Sets `Age` to the whole seconds of `age`, replacing any previous field lines.
pub fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only format senders may generate
/// (RFC 9110 5.6.7). Obsolete formats yield `None`, which callers treat as "no date".
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let b = s.trim().as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let day = num(5..7)?;
    let month = match &b[8..11] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = num(12..16)?;
    let (hh, mm, ss) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), valid for years >= 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(
        days * 86_400 + hh * 3600 + mm * 60 + ss,
    ))
}

/// Formats `t` as an IMF-fixdate; times before the epoch format as the epoch.
pub fn fmt_http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn normalize_strips_connection_named_and_forwarding_fields() {
        let mut h = map(&[
            ("connection", "accept-language"),
            ("accept-language", "fr"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "host=evil.example"),
            ("x-original-url", "/admin"),
            ("accept", "text/html"),
        ]);
        assert_eq!(
            normalize_request(&mut h, ForwardingHeaders::Strip),
            Normalized::Clean
        );
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn normalize_pass_keeps_forwarding_fields_and_reports_them() {
        let mut h = map(&[("x-forwarded-proto", "http"), ("accept", "*/*")]);
        assert_eq!(
            normalize_request(&mut h, ForwardingHeaders::Pass),
            Normalized::CarriesForwarding
        );
        assert!(h.contains_key("x-forwarded-proto"));
        let mut clean = map(&[("accept", "*/*")]);
        assert_eq!(
            normalize_request(&mut clean, ForwardingHeaders::Pass),
            Normalized::Clean
        );
    }

    #[test]
    fn strip_removes_fixed_and_connection_named() {
        let mut h = map(&[
            ("connection", "close, X-Foo"),
            ("connection", "x-bar"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-keep"]);
    }

    #[test]
    fn via_and_age() {
        let mut h = map(&[("via", "1.0 other")]);
        append_via(&mut h, Version::HTTP_11, "hoard");
        append_via(&mut h, Version::HTTP_2, "hoard");
        let vias: Vec<_> = h
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(vias, ["1.0 other", "1.1 hoard", "2 hoard"]);
        set_age(&mut h, Duration::from_millis(59_900));
        set_age(&mut h, Duration::from_secs(60));
        assert_eq!(h.get_all("age").iter().count(), 1);
        assert_eq!(h["age"], "60");
    }

    macro_rules! date {
        ($name:ident, $s:expr, $secs:expr) => {
            #[test]
            fn $name() {
                let expect: Option<u64> = $secs;
                assert_eq!(
                    parse_http_date($s),
                    expect.map(|s| UNIX_EPOCH + Duration::from_secs(s))
                );
                if let Some(s) = expect {
                    assert_eq!(
                        fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)),
                        $s.trim()
                    );
                }
            }
        };
    }
    date!(
        date_rfc_example,
        "Sun, 06 Nov 1994 08:49:37 GMT",
        Some(784_111_777)
    );
    date!(date_epoch, "Thu, 01 Jan 1970 00:00:00 GMT", Some(0));
    date!(
        date_leap,
        "Thu, 29 Feb 2024 12:00:00 GMT",
        Some(1_709_208_000)
    );
    date!(
        date_rfc850_unsupported,
        "Sunday, 06-Nov-94 08:49:37 GMT",
        None
    );
    date!(date_zero, "0", None);
    date!(date_bad_month, "Sun, 06 Foo 1994 08:49:37 GMT", None);
    date!(date_junk_digits, "Sun, 0x Nov 1994 08:49:37 GMT", None);
}
