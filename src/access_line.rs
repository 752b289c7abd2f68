//! The access line of one request: its fields ([`AccessLine`]), a hand-written formatter for
//! them (text or JSON, the bytes tracing's fmt layer writes for the same `hoard::access`
//! event), and [`emit`], which formats straight into the access log's buffer when
//! [`install`]ed (`serve`) and falls back to that tracing event otherwise.
//!
//! Invariants:
//! - A line is one `\n`-terminated line: no value can carry a line break, a Unicode line
//!   separator or a terminal control into it (text escapes them as `\x1b` / `\u{85}`, JSON as
//!   `\u001b` / `\u0085`); everything else is what the fmt layer writes, byte for byte.
//! - Formatting allocates nothing per line: a per-thread scratch buffer, the timestamp's date
//!   and time of day cached per thread for the current second, integers by hand.
//! - Time is a parameter of [`format_line`]; [`emit`] derives it from the monotonic instant
//!   its caller already read, reading the system clock at most once a second per thread
//!   ([`Wall`]).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Uri};

use crate::access_log::{self, AccessLog};
use crate::config::LogFormat;

/// One request's access line.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// Request method.
    pub method: &'a Method,
    /// Request target as received.
    pub uri: &'a Uri,
    /// Response status.
    pub status: u16,
    /// The `Cache-Status` value.
    pub cache_status: &'a str,
    /// Body length when known in advance (absent from the line otherwise).
    pub bytes: Option<u64>,
    /// Time waiting for origin response heads in this request.
    pub upstream_us: u64,
    /// Inside an intercepted CONNECT.
    pub intercepted: bool,
    /// Time to the response head.
    pub elapsed_us: u64,
}

/// The direct writer, when installed: lines skip tracing.
static DIRECT: OnceLock<Direct> = OnceLock::new();

struct Direct {
    log: AccessLog,
    format: LogFormat,
}

thread_local! {
    /// A request thread's line buffer, timestamp cache and wall-clock anchor.
    static SCRATCH: RefCell<(Vec<u8>, Clock, Wall)> =
        const { RefCell::new((Vec::new(), Clock::new(), Wall::new())) };
}

/// Send access lines straight to `log` in `format` from now on (once per process, by
/// `logging::init`; `false` when already installed).
pub fn install(log: AccessLog, format: LogFormat) -> bool {
    DIRECT.set(Direct { log, format }).is_ok()
}

/// Write one access line stamped `at` (the instant the caller took the response's time
/// from): formatted here into the access log's buffer when [`install`]ed, else as the
/// `hoard::access` tracing event (subcommands, tests, a terminal with colours).
pub fn emit(line: &AccessLine<'_>, at: Instant) {
    let Some(d) = DIRECT.get() else {
        return event(line);
    };
    SCRATCH.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return; // re-entered from within formatting: cannot happen, never panic for a log
        };
        let (buf, clock, wall) = &mut *s;
        let now = wall.at(at);
        buf.clear();
        format_line(buf, clock, line, d.format, now);
        d.log.push(buf);
    });
}

/// How long a wall-clock reading anchors the times derived from later instants.
const WALL_ANCHOR: Duration = Duration::from_secs(1);

/// Wall-clock time of a monotonic instant: the system clock read at an anchor instant plus
/// the monotonic time since, re-anchored once [`WALL_ANCHOR`] has passed (or for an instant
/// before the anchor). A line's timestamp then costs no clock read of its own (on some
/// virtual machines a read is a noticeable part of a hit), and a step of the system clock
/// shows in the log within a second.
#[derive(Debug, Clone, Copy)]
pub struct Wall {
    anchor: Option<(Instant, SystemTime)>,
}

impl Default for Wall {
    fn default() -> Self {
        Wall::new()
    }
}

impl Wall {
    /// No anchor yet: the first instant reads the system clock.
    pub const fn new() -> Wall {
        Wall { anchor: None }
    }

    /// The wall-clock time of `at` (an instant of the recent past or now).
    pub fn at(&mut self, at: Instant) -> SystemTime {
        if let Some((a, wall)) = self.anchor
            && let Some(since) = at.checked_duration_since(a)
            && since < WALL_ANCHOR
        {
            return wall + since;
        }
        let wall = SystemTime::now();
        self.anchor = Some((at, wall));
        wall
    }
}

/// The line as a tracing event (target [`access_log::TARGET`]); the fmt layer formats it.
pub fn event(line: &AccessLine<'_>) {
    tracing::info!(
        target: access_log::TARGET,
        peer = %line.peer,
        method = %line.method,
        uri = %line.uri,
        status = line.status,
        cache_status = line.cache_status,
        bytes = line.bytes,
        upstream_us = line.upstream_us,
        intercepted = line.intercepted,
        elapsed_us = line.elapsed_us,
    );
}

/// The date and time of day of one second, as the timestamp writes them
/// (`2026-12-01T15:01:59`); recomputed when the second changes.
#[derive(Debug, Clone)]
pub struct Clock {
    secs: u64,
    text: [u8; 19],
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock that has seen no second yet.
    pub const fn new() -> Clock {
        Clock {
            secs: u64::MAX,
            text: [0; 19],
        }
    }

    /// Append `now` as RFC 3339 UTC with microseconds (`2026-12-01T15:01:59.871019Z`).
    fn write(&mut self, out: &mut Vec<u8>, now: SystemTime) {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if d.as_secs() != self.secs {
            self.secs = d.as_secs();
            let t = i64::try_from(self.secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut w = &mut self.text[..];
            // Writing 19 bytes into 19: cannot fail for years 0..=9999 (all `time` makes).
            let _ = write!(
                w,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        push_padded(out, u64::from(d.subsec_micros()), 6);
        out.push(b'Z');
    }
}

/// Append `line` in `format`, stamped `now`, ending in `\n`. The two formats are written out
/// field by field on purpose: a shared table of fields written through function pointers
/// measured about 1.5x slower (`cargo bench --bench access_line`, on a loaded machine).
pub fn format_line(
    out: &mut Vec<u8>,
    clock: &mut Clock,
    line: &AccessLine<'_>,
    format: LogFormat,
    now: SystemTime,
) {
    match format {
        LogFormat::Text => {
            clock.write(out, now);
            out.extend_from_slice(b"  INFO hoard::access: peer=");
            push_peer(out, line.peer);
            out.extend_from_slice(b" method=");
            push_text(out, line.method.as_str());
            out.extend_from_slice(b" uri=");
            for part in uri_parts(line.uri) {
                push_text(out, part);
            }
            out.extend_from_slice(b" status=");
            push_u64(out, u64::from(line.status));
            out.extend_from_slice(b" cache_status=");
            push_debug_str(out, line.cache_status);
            if let Some(b) = line.bytes {
                out.extend_from_slice(b" bytes=");
                push_u64(out, b);
            }
            out.extend_from_slice(b" upstream_us=");
            push_u64(out, line.upstream_us);
            out.extend_from_slice(b" intercepted=");
            out.extend_from_slice(if line.intercepted { b"true" } else { b"false" });
            out.extend_from_slice(b" elapsed_us=");
            push_u64(out, line.elapsed_us);
            out.push(b'\n');
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.write(out, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"peer\":\"");
            push_peer(out, line.peer);
            out.extend_from_slice(b"\",\"method\":\"");
            push_json(out, line.method.as_str());
            out.extend_from_slice(b"\",\"uri\":\"");
            for part in uri_parts(line.uri) {
                push_json(out, part);
            }
            out.extend_from_slice(b"\",\"status\":");
            push_u64(out, u64::from(line.status));
            out.extend_from_slice(b",\"cache_status\":\"");
            push_json(out, line.cache_status);
            out.push(b'"');
            if let Some(b) = line.bytes {
                out.extend_from_slice(b",\"bytes\":");
                push_u64(out, b);
            }
            out.extend_from_slice(b",\"upstream_us\":");
            push_u64(out, line.upstream_us);
            out.extend_from_slice(b",\"intercepted\":");
            out.extend_from_slice(if line.intercepted { b"true" } else { b"false" });
            out.extend_from_slice(b",\"elapsed_us\":");
            push_u64(out, line.elapsed_us);
            out.extend_from_slice(b",\"target\":\"hoard::access\"}\n");
        }
    }
}

/// The pieces `Uri`'s `Display` writes, in order.
fn uri_parts(uri: &Uri) -> [&str; 6] {
    let (scheme, sep) = match uri.scheme_str() {
        Some(s) => (s, "://"),
        None => ("", ""),
    };
    let authority = uri.authority().map_or("", |a| a.as_str());
    let (q, query) = match uri.query() {
        Some(q) => ("?", q),
        None => ("", ""),
    };
    [scheme, sep, authority, uri.path(), q, query]
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` in exactly `width` digits (`n < 10^width`), zero-padded.
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for d in out[start..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn push_peer(out: &mut Vec<u8>, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(a) => {
            for (i, o) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
            out.push(b':');
            push_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// A character no line may carry raw: C0 controls, DEL, C1 controls (terminal escapes such
/// as CSI, and NEL), and the Unicode line and paragraph separators.
fn is_hostile(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{2028}' | '\u{2029}')
}

/// A text value as `Display` writes it, hostile characters escaped (`\x1b`, `\u{85}`).
fn push_text(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        if !is_hostile(c) {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        } else if c < '\x20' || c == '\x7f' {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// A string as `str`'s `Debug` writes it (quoted, escaped), the text format of `&str` fields.
fn push_debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// The inside of a JSON string as serde_json writes it, plus DEL, C1 controls and U+2028/9
/// as `\u` escapes (the same value to any JSON reader, never a line break to a line reader).
fn push_json(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\x08' => b"\\b",
            '\x0c' => b"\\f",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if is_hostile(c) => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        start = i + c.len_utf8();
        if short.is_empty() {
            let n = c as usize;
            out.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[(n >> shift) & 0xf]);
            }
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

#[cfg(test)]
mod tests;
