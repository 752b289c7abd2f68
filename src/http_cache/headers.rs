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

/// Request fields a client can use to make an origin build links, pick a scheme or host, route
/// to another URL or method, or believe it comes from another address or an authenticated
/// user, none of which is part of the cache key: `Forwarded` (RFC 7239), every `X-Forwarded-*`
/// field ([`FORWARDING_PREFIX`]), the client-address fields of load balancers and CDNs, the
/// identity fields of authenticating proxies, and the URL/method override fields of common
/// frameworks. An origin that reflects one of them into a stored page would hand one
/// client's value to everyone (cache poisoning), so the proxy removes them from client
/// requests by default.
pub const FORWARDING: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    // Client addresses.
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-remote-addr",
    "x-remote-ip",
    "x-originating-ip",
    // URL, host and scheme rewrites.
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-rewrite-url",
    "x-override-url",
    "x-envoy-original-path",
    "x-host",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
    // Method overrides.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    // Identities asserted by an authenticating proxy in front of the origin.
    "remote-user",
    "x-remote-user",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
];

/// Every field whose name starts with this is a [`FORWARDING`] field too (`X-Forwarded-For`,
/// `-Host`, `-Proto`, `-Uri`, `-User`, `-Client-Cert`, ...).
pub const FORWARDING_PREFIX: &str = "x-forwarded-";

/// Whether `name` (lower case, as `http` stores it) is a [`FORWARDING`] field.
pub fn is_forwarding(name: &str) -> bool {
    name.starts_with(FORWARDING_PREFIX) || FORWARDING.contains(&name)
}

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
/// [`FORWARDING`] fields are removed or, under `ForwardingHeaders::Pass`, reported. Several
/// `Cookie` field lines (HTTP/2 clients split them) become one, joined with `"; "`.
pub fn normalize_request(headers: &mut HeaderMap, forwarding: ForwardingHeaders) -> Normalized {
    strip_hop_by_hop(headers);
    join_cookie_lines(headers);
    // One pass over the names present (a request carries a handful), not a hash lookup per
    // listed name.
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_forwarding(n.as_str()))
        .cloned()
        .collect();
    if found.is_empty() {
        return Normalized::Clean;
    }
    match forwarding {
        ForwardingHeaders::Pass => Normalized::CarriesForwarding,
        ForwardingHeaders::Strip => {
            for name in found {
                headers.remove(name);
            }
            Normalized::Clean
        }
    }
}

/// RFC 9113 8.2.3: cookie-pairs an HTTP/2 client sends as several `Cookie` fields "MUST be
/// concatenated into a single octet string using the two-octet delimiter of 0x3b, 0x20" before
/// an HTTP/1.1 hop (an origin reads one `Cookie` line, RFC 6265 5.4). Done once for every
/// request, so a response varying on `Cookie` matches the same way whatever the protocol.
fn join_cookie_lines(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(header::COOKIE) {
        let line = line.as_bytes().trim_ascii();
        if line.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(line);
    }
    // Joined from valid field values with "; ": still a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes hop-by-hop header fields: the fixed list in [`HOP_BY_HOP`] plus every field named by
/// any `Connection` field line.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present; `Vec::new` allocates nothing when none is found.
    let mut drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| HOP_BY_HOP.contains(&n.as_str()))
        .cloned()
        .collect();
    if drop.is_empty() {
        return;
    }
    drop.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for name in drop {
        headers.remove(name);
    }
}

/// Appends a `Via` field line such as `1.1 hoard` for a message received with `version`.
pub fn append_via(headers: &mut HeaderMap, version: Version, pseudonym: &str) {
    if let Some(v) = via_value(version, pseudonym) {
        headers.append(header::VIA, v);
    }
}

/// The `Via` field value for a message received with `version` (`None` for a pseudonym that
/// is not a valid field value). Made once and cloned where every answer carries the same one:
/// a clone shares its bytes.
pub fn via_value(version: Version, pseudonym: &str) -> Option<HeaderValue> {
    let proto = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    HeaderValue::from_str(&format!("{proto} {pseudonym}")).ok()
}

/// Sets `Age` to the whole seconds of `age`, replacing any previous field lines.
pub fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(header::AGE, seconds_value(age.as_secs()));
}

/// Ages below this many seconds are served from a table made once ([`seconds_value`]).
const AGE_TABLE: u64 = 4096;

/// `n` as a decimal field value. Values below [`AGE_TABLE`] (an hour and eight minutes of
/// `Age`) are clones of a table made once, so a hit's `Age` allocates nothing.
pub fn seconds_value(n: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if n < AGE_TABLE => {
            TABLE.get_or_init(|| (0..AGE_TABLE).map(HeaderValue::from).collect())[i].clone()
        }
        _ => HeaderValue::from(n),
    }
}

/// `n` in decimal, written into `buf` (no allocation).
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Parses an HTTP-date in any of the three formats of RFC 9110 5.6.7: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and
/// ANSI C asctime (`Sun Nov  6 08:49:37 1994`). The grammar is case-sensitive and exact: a
/// wrong zone, a missing comma, extra spaces, a one-digit hour or several dates yield `None`,
/// which callers treat as invalid (an invalid `Expires` means already expired, RFC 9111 5.3).
/// A two-digit RFC 850 year is read in 1970..=2069 (the 50-years-ahead rule of RFC 9110
/// 5.6.7, without a clock). Dates before 1970 yield `None`; far-future dates (up to year 9999)
/// never overflow.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim_matches(|c| c == ' ' || c == '\t');
    let b = s.as_bytes();
    if b.len() == 29 && b[3] == b',' {
        parse_imf_fixdate(b)
    } else if b.len() == 24 && b[3] == b' ' {
        parse_asctime(b)
    } else {
        parse_rfc850(b)
    }
}

/// Broken-down parts of an HTTP-date, checked and turned into a time by [`to_time`].
struct Civil {
    year: u64,
    month: u64,
    day: u64,
    hms: (u64, u64, u64),
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn month(b: &[u8]) -> Option<u64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    MONTHS.iter().position(|m| *m == b).map(|i| i as u64 + 1)
}

fn short_day(b: &[u8]) -> bool {
    [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"]
        .iter()
        .any(|d| d.as_slice() == b)
}

fn long_day(b: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [
        b"Monday",
        b"Tuesday",
        b"Wednesday",
        b"Thursday",
        b"Friday",
        b"Saturday",
        b"Sunday",
    ];
    DAYS.contains(&b)
}

/// `HH:MM:SS`, two digits each.
fn time_of_day(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(b: &[u8]) -> Option<SystemTime> {
    if !short_day(&b[0..3]) || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    to_time(Civil {
        day: digits(&b[5..7])?,
        month: month(&b[8..11])?,
        year: digits(&b[12..16])?,
        hms: time_of_day(&b[17..25])?,
    })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850(b: &[u8]) -> Option<SystemTime> {
    let comma = b.iter().position(|c| *c == b',')?;
    if !long_day(&b[..comma]) {
        return None;
    }
    let rest = &b[comma..];
    // ", DD-Mon-YY HH:MM:SS GMT"
    if rest.len() != 24 || &rest[..2] != b", " || rest[4] != b'-' || rest[8] != b'-' {
        return None;
    }
    if rest[11] != b' ' || &rest[20..] != b" GMT" {
        return None;
    }
    let yy = digits(&rest[9..11])?;
    to_time(Civil {
        day: digits(&rest[2..4])?,
        month: month(&rest[5..8])?,
        year: if yy < 70 { 2000 + yy } else { 1900 + yy },
        hms: time_of_day(&rest[12..20])?,
    })
}

/// `Sun Nov  6 08:49:37 1994` (day padded with a space) or `Sun Nov 16 08:49:37 1994`
fn parse_asctime(b: &[u8]) -> Option<SystemTime> {
    if !short_day(&b[0..3]) || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    let day = match (b[8], b[9]) {
        (b' ', d) => digits(&[d])?,
        (_, _) => digits(&b[8..10])?,
    };
    to_time(Civil {
        day,
        month: month(&b[4..7])?,
        year: digits(&b[20..24])?,
        hms: time_of_day(&b[11..19])?,
    })
}

fn to_time(c: Civil) -> Option<SystemTime> {
    let Civil {
        year,
        month,
        day,
        hms: (hh, mm, ss),
    } = c;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if !(1..=max_day).contains(&day) || year < 1970 || hh > 23 || mm > 59 || ss > 60 {
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

    use crate::http_cache::testing::header_map as map;

    #[test]
    fn normalize_strips_connection_named_and_forwarding_fields() {
        let mut h = map(&[
            ("connection", "accept-language"),
            ("accept-language", "fr"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "host=evil.example"),
            ("x-original-url", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-user", "admin"),
            ("x-real-ip", "10.0.0.1"),
            ("true-client-ip", "10.0.0.1"),
            ("x-envoy-original-path", "/admin"),
            ("remote-user", "admin"),
            ("accept", "text/html"),
            ("x-forwardedfor", "not one of them"),
        ]);
        assert_eq!(
            normalize_request(&mut h, ForwardingHeaders::Strip),
            Normalized::Clean
        );
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-forwardedfor"]);
    }

    /// RFC 9113 8.2.3: split `Cookie` fields become one line joined with "; ".
    #[test]
    fn rfc9113_8_2_3_cookie_lines_are_joined() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["a=1"], Some("a=1")),
            (&["a=1", "b=2"], Some("a=1; b=2")),
            (&["a=1", " ", "b=2; c=3"], Some("a=1; b=2; c=3")),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("cookie", *l)).collect();
            let mut h = map(&pairs);
            normalize_request(&mut h, ForwardingHeaders::Strip);
            let got: Vec<&str> = h
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{lines:?}");
        }
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
        // Field order across different names carries no meaning (RFC 9110 5.3).
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
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

    #[test]
    fn seconds_and_decimals_inside_and_past_the_table() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 4095, 4096, 86_400, u64::MAX] {
            assert_eq!(seconds_value(n), n.to_string().as_str(), "{n}");
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
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
    date!(date_zero, "0", None);
    date!(date_bad_month, "Sun, 06 Foo 1994 08:49:37 GMT", None);
    date!(date_junk_digits, "Sun, 0x Nov 1994 08:49:37 GMT", None);

    /// RFC 9110 5.6.7: the three formats, and what is not an HTTP-date. `Some(secs)` after
    /// the epoch, `None` for invalid (an `Expires` that is invalid means already expired).
    #[test]
    fn rfc9110_5_6_7_http_date_formats() {
        let cases: &[(&str, Option<u64>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(784_111_777)),
            ("Sun Nov  6 08:49:37 1994", Some(784_111_777)),
            ("Wed Nov 16 08:49:37 1994", Some(784_111_777 + 10 * 86_400)),
            ("Thursday, 01-Jan-70 00:00:00 GMT", Some(0)),
            ("Friday, 01-Jan-38 00:00:00 GMT", Some(2_145_916_800)),
            // 32-bit boundary and far future: no overflow
            ("Tue, 19 Jan 2038 03:14:07 GMT", Some(2_147_483_647)),
            ("Tue, 19 Jan 2038 03:14:08 GMT", Some(2_147_483_648)),
            ("Sun, 07 Feb 2106 06:28:16 GMT", Some(4_294_967_296)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(253_402_300_799)),
            ("  Sun, 06 Nov 1994 08:49:37 GMT ", Some(784_111_777)),
            // invalid: zone, case, forms, punctuation, several dates
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sun, 06 Nov 1994 08:49:37 gMT", None),
            ("Sun, 06 Nov 1994 08:49:37 +0000", None),
            ("SUN, 06 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 NOV 1994 08:49:37 GMT", None),
            ("Sun 06 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 94 08:49:37 GMT", None),
            ("Sun, 06  Nov  1994 08:49:37 GMT", None),
            ("Sun, 06-Nov-1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08.49.37 GMT", None),
            ("Sun, 06 Nov 1994 8:49:37 GMT", None),
            ("Sun, 31 Feb 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 24:00:00 GMT", None),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
                None,
            ),
            ("Sunday, 06-Nov-94 08:49:37 UTC", None),
            ("Sun, 06-Nov-94 08:49:37 GMT", None),
            ("Sun Nov 6 08:49:37 1994", None),
            ("Sun Nov  6 08:49:37 94", None),
            ("Wed, 31 Dec 1969 23:59:59 GMT", None),
            ("0", None),
            ("-1", None),
            ("", None),
        ];
        for (s, expect) in cases {
            assert_eq!(
                parse_http_date(s),
                expect.map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
                "{s:?}"
            );
        }
    }
}
