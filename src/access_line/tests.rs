//! The hand-written access line against what tracing's fmt layer writes for the same event
//! (text and JSON, production layer set-up from `logging::fmt_layer`), hostile values, the
//! per-second timestamp cache and integer formatting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// One row: the fields that vary (the others are fixed in [`line`]).
struct Case {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    cache_status: &'static str,
    bytes: Option<u64>,
    intercepted: bool,
    peer: &'static str,
}

const fn case(name: &'static str, method: &'static str, uri: &'static str) -> Case {
    Case {
        name,
        method,
        uri,
        cache_status: "hoard; hit; ttl=3582",
        bytes: Some(1024),
        intercepted: false,
        peer: "127.0.0.1:44234",
    }
}

/// Rows where the new formatter must write exactly what the fmt layer wrote.
const SAME_AS_FMT_LAYER: &[Case] = &[
    case("plain_hit", "GET", "/1k"),
    Case {
        bytes: None,
        cache_status: "hoard; fwd=uri-miss; stored",
        ..case(
            "absolute_url_unknown_length",
            "GET",
            "http://origin.test:8080/a/b?x=1&y=%20",
        )
    },
    Case {
        bytes: Some(0),
        intercepted: true,
        peer: "[::1]:5",
        ..case("head_intercepted_v6", "HEAD", "https://h.test/p?q")
    },
    Case {
        peer: "[fe80::1%2]:80",
        ..case("connect_authority_scoped_v6", "CONNECT", "h.test:443")
    },
    case("asterisk", "OPTIONS", "*"),
    case("extension_method", "PURGE", "/x"),
    case(
        "quotes_braces_pipes_backslashes",
        "GET",
        "/q\"a\"{d}|e^\\?c={d}|e^`\\",
    ),
    case(
        "quote_then_fake_field",
        "GET",
        "/a\"status=500&cache_status=\"forged\"",
    ),
    case(
        "non_ascii_printable",
        "GET",
        "/caf\u{e9}?\u{1F600}=\u{4e2d}",
    ),
    Case {
        cache_status: "hoard; detail=\"a \\\"b\\\"\"",
        ..case("cache_status_quoted", "GET", "/")
    },
    Case {
        cache_status: "tab\there nl\nthere esc\u{1b}[31m",
        ..case("cache_status_controls", "GET", "/")
    },
];

/// Rows where the fmt layer wrote a hostile character raw and the new formatter escapes it:
/// (case, what the text line's `uri=` holds).
const ESCAPED: &[(Case, &str)] = &[
    (case("csi_c1", "GET", "/a\u{9b}31mred"), "/a\\u{9b}31mred"),
    (case("nel_c1", "GET", "/a\u{85}b"), "/a\\u{85}b"),
    (
        case("line_separators", "GET", "/a\u{2028}b?\u{2029}c"),
        "/a\\u{2028}b?\\u{2029}c",
    ),
    (
        case("query_c1_and_ascii", "GET", "/p?x=\u{80}&y=\u{9f}{"),
        "/p?x=\\u{80}&y=\\u{9f}{",
    ),
];

/// The fixed fields and the row's.
fn line<'a>(c: &'a Case, method: &'a Method, uri: &'a Uri) -> AccessLine<'a> {
    AccessLine {
        peer: c.peer.parse().unwrap(),
        method,
        uri,
        status: 200,
        cache_status: c.cache_status,
        bytes: c.bytes,
        upstream_us: 0,
        intercepted: c.intercepted,
        elapsed_us: 17,
    }
}

fn parts(c: &Case) -> (Method, Uri) {
    let m = Method::from_bytes(c.method.as_bytes()).unwrap();
    let u: Uri = c
        .uri
        .parse()
        .unwrap_or_else(|e| panic!("{}: {:?} is no Uri: {e}", c.name, c.uri));
    (m, u)
}

/// What the production fmt layer writes for `l`'s tracing event.
fn fmt_layer_line(l: &AccessLine<'_>, format: LogFormat) -> String {
    use tracing_subscriber::layer::SubscriberExt as _;
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let make = move || Capture(sink.clone());
    let sub = tracing_subscriber::registry().with(crate::logging::fmt_layer(format, false, make));
    tracing::subscriber::with_default(sub, || event(l));
    let bytes = out.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The instant of an RFC 3339 UTC timestamp with microseconds, `2026-12-01T15:01:59.871019Z`.
fn parse_stamp(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    let date = time::Date::from_calendar_date(
        n(0..4) as i32,
        time::Month::try_from(n(5..7) as u8).unwrap(),
        n(8..10) as u8,
    )
    .unwrap();
    let t = date
        .with_hms_micro(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8, n(20..26))
        .unwrap()
        .assume_utc();
    assert_eq!(&s[26..27], "Z", "{s}");
    UNIX_EPOCH
        + Duration::from_secs(t.unix_timestamp() as u64)
        + Duration::from_micros(u64::from(t.microsecond()))
}

/// The timestamp the fmt layer put in its line.
fn stamp_of(fmt_line: &str, format: LogFormat) -> SystemTime {
    match format {
        LogFormat::Text => parse_stamp(&fmt_line[..27]),
        LogFormat::Json => {
            let v: serde_json::Value = serde_json::from_str(fmt_line).unwrap();
            parse_stamp(v["timestamp"].as_str().unwrap())
        }
    }
}

fn ours(l: &AccessLine<'_>, format: LogFormat, now: SystemTime) -> String {
    let mut out = Vec::new();
    format_line(&mut out, &mut Clock::new(), l, format, now);
    String::from_utf8(out).unwrap()
}

/// One line, ending in its only line break, with nothing a line reader splits on.
fn assert_one_line(name: &str, s: &str) {
    assert!(s.ends_with('\n'), "{name}: {s:?}");
    let body = &s[..s.len() - 1];
    assert_eq!(body.lines().count(), 1, "{name}: more than one line: {s:?}");
    assert!(
        !body.contains([
            '\n', '\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{1b}', '\u{9b}'
        ]),
        "{name}: raw break or escape in {s:?}"
    );
}

#[test]
fn text_and_json_lines_equal_the_fmt_layer_byte_for_byte() {
    for c in SAME_AS_FMT_LAYER {
        let (m, u) = parts(c);
        let l = line(c, &m, &u);
        for format in [LogFormat::Text, LogFormat::Json] {
            let want = fmt_layer_line(&l, format);
            let got = ours(&l, format, stamp_of(&want, format));
            assert_eq!(got, want, "{} {format:?}", c.name);
            assert_one_line(c.name, &got);
        }
    }
}

#[test]
fn json_lines_parse_back_to_the_fields() {
    let now = UNIX_EPOCH + Duration::from_micros(1_764_601_319_871_019);
    let all = SAME_AS_FMT_LAYER
        .iter()
        .chain(ESCAPED.iter().map(|(c, _)| c));
    for c in all {
        let (m, u) = parts(c);
        let got = ours(&line(c, &m, &u), LogFormat::Json, now);
        assert_one_line(c.name, &got);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["timestamp"], "2025-12-01T15:01:59.871019Z", "{}", c.name);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "hoard::access");
        assert_eq!(v["peer"], c.peer.parse::<SocketAddr>().unwrap().to_string());
        assert_eq!(v["method"], c.method, "{}", c.name);
        assert_eq!(v["uri"], u.to_string(), "{}", c.name);
        assert_eq!(v["status"], 200);
        assert_eq!(v["cache_status"], c.cache_status, "{}", c.name);
        assert_eq!(
            v.get("bytes").and_then(|b| b.as_u64()),
            c.bytes,
            "{}",
            c.name
        );
        assert_eq!(v["upstream_us"], 0);
        assert_eq!(v["intercepted"], c.intercepted);
        assert_eq!(v["elapsed_us"], 17);
    }
}

#[test]
fn hostile_uris_are_escaped_where_the_fmt_layer_wrote_them_raw() {
    for (c, want_uri) in ESCAPED {
        let (m, u) = parts(c);
        let l = line(c, &m, &u);
        let fmt = fmt_layer_line(&l, LogFormat::Text);
        let got = ours(&l, LogFormat::Text, stamp_of(&fmt, LogFormat::Text));
        assert_one_line(c.name, &got);
        let want = fmt.replacen(&format!("uri={} ", c.uri), &format!("uri={want_uri} "), 1);
        assert_ne!(want, fmt, "{}: the fmt layer already escaped it", c.name);
        assert_eq!(got, want, "{}", c.name);
        // JSON: the same string to a JSON reader, only `\u` escapes in the bytes.
        let fmt = fmt_layer_line(&l, LogFormat::Json);
        let got = ours(&l, LogFormat::Json, stamp_of(&fmt, LogFormat::Json));
        assert_one_line(c.name, &got);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&got).unwrap(),
            serde_json::from_str::<serde_json::Value>(&fmt).unwrap(),
            "{}",
            c.name
        );
    }
}

#[test]
fn the_cached_second_follows_the_clock() {
    let mut clock = Clock::new();
    let at = |us: u64| UNIX_EPOCH + Duration::from_micros(us);
    for (now, want) in [
        (at(0), "1970-01-01T00:00:00.000000Z"),
        (at(1_764_601_319_000_001), "2025-12-01T15:01:59.000001Z"),
        (at(1_764_601_319_999_999), "2025-12-01T15:01:59.999999Z"),
        (at(1_764_601_320_000_000), "2025-12-01T15:02:00.000000Z"),
        (at(1_764_633_599_500_000), "2025-12-01T23:59:59.500000Z"),
        (at(1_764_633_600_000_000), "2025-12-02T00:00:00.000000Z"),
        (at(1_709_164_800_123_456), "2024-02-29T00:00:00.123456Z"),
        (at(1_764_601_319_000_001), "2025-12-01T15:01:59.000001Z"),
    ] {
        let mut out = Vec::new();
        clock.write(&mut out, now);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn integers() {
    for (n, want) in [
        (0, "0"),
        (7, "7"),
        (10, "10"),
        (65535, "65535"),
        (u64::MAX, "18446744073709551615"),
    ] {
        let mut out = Vec::new();
        push_u64(&mut out, n);
        assert_eq!(out, want.as_bytes());
    }
    for (n, want) in [(0, "000000"), (1, "000001"), (999_999, "999999")] {
        let mut out = b"x".to_vec();
        push_padded(&mut out, n, 6);
        assert_eq!(out, format!("x{want}").as_bytes());
    }
}

#[test]
fn a_line_reuses_its_buffer() {
    let c = &SAME_AS_FMT_LAYER[0];
    let (m, u) = parts(c);
    let l = line(c, &m, &u);
    let mut out = Vec::with_capacity(512);
    let mut clock = Clock::new();
    let ptr = out.as_ptr();
    for format in [LogFormat::Text, LogFormat::Json, LogFormat::Text] {
        out.clear();
        format_line(&mut out, &mut clock, &l, format, SystemTime::now());
        assert_eq!(out.as_ptr(), ptr, "{format:?} reallocated");
    }
}

/// Instants within a second of the anchor are dated from it, exactly; later or earlier ones
/// read the system clock again.
#[test]
fn wall_dates_instants_from_an_anchor_read_at_most_once_a_second() {
    let mut wall = Wall::new();
    let t0 = Instant::now();
    let before = SystemTime::now();
    let w0 = wall.at(t0);
    assert!(
        w0 >= before && w0 <= SystemTime::now(),
        "the first instant reads the clock"
    );
    for ms in [0, 1, 500, 999] {
        let d = Duration::from_millis(ms);
        assert_eq!(wall.at(t0 + d), w0 + d, "{ms} ms after the anchor");
    }
    // A second past the anchor: a fresh reading (not w0 + 5 s, which lies in the future).
    let later = t0 + Duration::from_secs(5);
    let (lo, w1, hi) = (SystemTime::now(), wall.at(later), SystemTime::now());
    assert!(w1 >= lo && w1 <= hi, "re-anchored at a second past: {w1:?}");
    assert_eq!(
        wall.at(later + Duration::from_millis(10)),
        w1 + Duration::from_millis(10)
    );
    // An instant before the anchor: read again, never a time computed backwards past it.
    let (lo, w2, hi) = (SystemTime::now(), wall.at(t0), SystemTime::now());
    assert!(
        w2 >= lo && w2 <= hi,
        "re-anchored for an earlier instant: {w2:?}"
    );
}
