//! Cache-Control parsing, including the RFC 5861 extensions `stale-while-revalidate` and
//! `stale-if-error` that http-cache-semantics ignores. Invariant: parsing never fails; junk is
//! skipped and invalid numbers read as absent.

use std::time::Duration;

use http::header::{self, HeaderMap};

/// Delta-seconds larger than this are read as this (RFC 9111 1.2.2).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Directives of all `Cache-Control` field lines of one message, names lower-cased (directive
/// names are case-insensitive, RFC 9111 5.2), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    directives: Vec<Directive>,
}

/// One `name[=value]` item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    name: String,
    value: Option<String>,
    /// Whitespace around `=` (`max-age =60`, `max-age= 60`): not `token [ "=" ( token /
    /// quoted-string ) ]` (RFC 9111 5.2), so its argument is never a valid delta-seconds.
    malformed: bool,
}

/// A delta-seconds directive (RFC 9111 1.2.2) as found in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// The directive does not occur.
    Absent,
    /// The first occurrence with a valid argument (clamped to 2^31).
    Valid(Duration),
    /// The directive occurs, but no occurrence has a valid argument (`max-age=100a`,
    /// `max-age=a100`, `max-age=3600.5`, `max-age= 60`, bare `max-age`).
    Invalid,
}

impl Delta {
    /// The valid value, if any.
    pub fn valid(self) -> Option<Duration> {
        match self {
            Delta::Valid(d) => Some(d),
            _ => None,
        }
    }
}

/// A delta-seconds argument: digits only (quotes already removed), clamped to 2^31.
fn delta_seconds(v: &str) -> Option<Duration> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = v
        .parse::<u64>()
        .unwrap_or(MAX_DELTA_SECONDS)
        .min(MAX_DELTA_SECONDS);
    Some(Duration::from_secs(secs))
}

impl CacheControl {
    /// Whether the directive `name` (lower case) is present, with or without an argument.
    pub fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|d| d.name == name)
    }

    /// Whether `name` is present without an argument (`no-cache`, not `no-cache="x"`), or with
    /// one that names no field (`private=`, `private=""`, `no-cache=", "`): a qualified
    /// `private`/`no-cache` that withholds nothing is read as the unqualified one, never as
    /// "share everything".
    pub fn has_bare(&self, name: &str) -> bool {
        self.directives.iter().any(|d| {
            d.name == name
                && d.value
                    .as_deref()
                    .is_none_or(|v| v.split(',').all(|f| f.trim().is_empty()))
        })
    }

    /// The argument of the first `name` directive: `None` if absent, `Some(None)` if bare.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_deref())
    }

    /// `name` as delta-seconds: the first occurrence with a valid argument (RFC 9111 4.2.1:
    /// with several, the first is used), [`Delta::Invalid`] when it occurs but never validly.
    pub fn delta(&self, name: &str) -> Delta {
        let mut seen = false;
        for d in self.directives.iter().filter(|d| d.name == name) {
            seen = true;
            if d.malformed {
                continue;
            }
            if let Some(v) = d.value.as_deref().and_then(delta_seconds) {
                return Delta::Valid(v);
            }
        }
        if seen { Delta::Invalid } else { Delta::Absent }
    }

    /// `name` as delta-seconds; `None` if absent or never valid (see [`delta`](Self::delta)).
    pub fn seconds(&self, name: &str) -> Option<Duration> {
        self.delta(name).valid()
    }

    /// Whether no directive was found.
    pub fn is_empty(&self) -> bool {
        self.directives.is_empty()
    }

    /// Iterates the directives in field order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.directives
            .iter()
            .map(|d| (d.name.as_str(), d.value.as_deref()))
    }
}

/// Parses every `Cache-Control` field line of `headers`.
pub fn parse_cache_control(headers: &HeaderMap) -> CacheControl {
    let mut out = CacheControl::default();
    for line in headers.get_all(header::CACHE_CONTROL) {
        parse_line(
            &String::from_utf8_lossy(line.as_bytes()),
            &mut out.directives,
        );
    }
    out
}

/// Splits one field line into `name[=value]` items, honouring quoted strings.
fn parse_line(line: &str, out: &mut Vec<Directive>) {
    let mut chars = line.chars().peekable();
    loop {
        // name
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut value = None;
        let mut malformed = name.ends_with([' ', '\t']);
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                malformed = true;
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => v.extend(chars.next()),
                        c => v.push(c),
                    }
                }
                // skip junk up to the next comma
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim().to_owned();
            }
            value = Some(v);
        } else {
            // A bare name: trailing whitespace is only the OWS before the comma.
            malformed = false;
        }
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '"') {
            out.push(Directive {
                name,
                value,
                malformed,
            });
        }
        if chars.next().is_none() {
            break;
        }
    }
}

/// RFC 5861 windows during which a stale response may still be served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness5861 {
    /// `stale-while-revalidate=N` on the response: serve stale while revalidating in the background.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N` on the response: serve stale when the origin errs.
    pub stale_if_error: Option<Duration>,
}

impl Freshness5861 {
    /// Reads both extensions from the response's Cache-Control field lines.
    pub fn from_response(res: &HeaderMap) -> Self {
        let cc = parse_cache_control(res);
        Self {
            stale_while_revalidate: cc.seconds("stale-while-revalidate"),
            stale_if_error: cc.seconds("stale-if-error"),
        }
    }
}

/// The request's `stale-if-error=N` (RFC 5861 4): the client accepts a stale response on error.
pub fn request_stale_if_error(req: &HeaderMap) -> Option<Duration> {
    parse_cache_control(req).seconds("stale-if-error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    macro_rules! swr {
        ($name:ident, [$($l:expr),*], $swr:expr, $sie:expr) => {
            #[test]
            fn $name() {
                let f = Freshness5861::from_response(&cc(&[$($l),*]));
                assert_eq!(f.stale_while_revalidate, $swr.map(Duration::from_secs), "swr");
                assert_eq!(f.stale_if_error, $sie.map(Duration::from_secs), "sie");
            }
        };
    }
    const NONE: Option<u64> = None;
    swr!(
        rfc5861_example,
        ["max-age=600, stale-while-revalidate=30"],
        Some(30),
        NONE
    );
    swr!(
        both_two_lines,
        ["max-age=1, stale-if-error=60", "stale-while-revalidate=5"],
        Some(5),
        Some(60)
    );
    swr!(
        quoted_and_case,
        ["Stale-While-Revalidate=\"7\" ,  STALE-IF-ERROR=9"],
        Some(7),
        Some(9)
    );
    // RFC 9111 5.2: `token [ "=" ( token / quoted-string ) ]`, no whitespace around `=`.
    swr!(spaces_after_equals, ["stale-if-error= 9"], NONE, NONE);
    swr!(spaces_before_equals, ["stale-if-error =9"], NONE, NONE);
    swr!(
        invalid_numbers_ignored,
        ["stale-while-revalidate=-1, stale-if-error=1e3"],
        NONE,
        NONE
    );
    swr!(
        bare_ignored,
        ["stale-while-revalidate, stale-if-error="],
        NONE,
        NONE
    );
    swr!(
        junk_tolerated,
        [",,;;, =x, stale-if-error=4,\"oops"],
        NONE,
        Some(4)
    );
    swr!(
        huge_clamped,
        ["stale-if-error=99999999999999999999999"],
        NONE,
        Some(1u64 << 31)
    );
    swr!(none_present, ["max-age=60, public"], NONE, NONE);

    #[test]
    fn generic_parse() {
        let c = parse_cache_control(&cc(&[
            "Public, max-age=\"60\", no-cache=\"Set-Cookie, X\"",
            "s-maxage=5",
        ]));
        assert!(c.has("public"));
        assert_eq!(c.seconds("max-age"), Some(Duration::from_secs(60)));
        assert_eq!(c.get("no-cache"), Some(Some("Set-Cookie, X")));
        assert_eq!(c.seconds("s-maxage"), Some(Duration::from_secs(5)));
        assert_eq!(c.get("private"), None);
        assert_eq!(c.iter().count(), 4);
    }

    #[test]
    fn request_sie() {
        assert_eq!(
            request_stale_if_error(&cc(&["stale-if-error=30"])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(request_stale_if_error(&cc(&["max-stale"])), None);
    }

    macro_rules! delta {
        ($name:ident, [$($l:expr),*], $directive:expr, $expect:expr) => {
            #[test]
            fn $name() {
                assert_eq!(parse_cache_control(&cc(&[$($l),*])).delta($directive), $expect);
            }
        };
    }
    fn valid(s: u64) -> Delta {
        Delta::Valid(Duration::from_secs(s))
    }
    // RFC 9111 5.2: directive names are case-insensitive.
    delta!(
        rfc9111_5_2_case_insensitive_max_age,
        ["MaX-AgE=60"],
        "max-age",
        valid(60)
    );
    delta!(
        rfc9111_5_2_case_insensitive_s_maxage,
        ["S-MAXAGE=5"],
        "s-maxage",
        valid(5)
    );
    // RFC 9111 1.2.2: delta-seconds is 1*DIGIT; anything else is invalid.
    delta!(
        rfc9111_1_2_2_trailing_alpha,
        ["max-age=100a"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_leading_alpha,
        ["max-age=a100"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_decimal,
        ["max-age=3600.5"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_decimal_zero,
        ["max-age=3600.0"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_negative,
        ["max-age=-1"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_single_quoted,
        ["max-age='60'"],
        "max-age",
        Delta::Invalid
    );
    delta!(rfc9111_1_2_2_bare, ["max-age"], "max-age", Delta::Invalid);
    delta!(rfc9111_1_2_2_empty, ["max-age="], "max-age", Delta::Invalid);
    delta!(
        rfc9111_5_2_space_before_equals,
        ["max-age =60"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_5_2_space_after_equals,
        ["max-age= 60"],
        "max-age",
        Delta::Invalid
    );
    delta!(
        rfc9111_1_2_2_leading_zero,
        ["max-age=003600"],
        "max-age",
        valid(3600)
    );
    delta!(rfc9111_5_2_quoted, ["max-age=\"60\""], "max-age", valid(60));
    delta!(
        rfc9111_1_2_2_clamped,
        ["max-age=99999999999999999999"],
        "max-age",
        valid(1 << 31)
    );
    delta!(
        rfc9111_5_2_ows_before_comma,
        ["max-age=60 , public"],
        "max-age",
        valid(60)
    );
    delta!(rfc9111_5_2_absent, ["public"], "max-age", Delta::Absent);
    delta!(
        rfc9111_5_2_quoted_not_a_directive,
        ["x=\"max-age=3600\", max-age=1"],
        "max-age",
        valid(1)
    );
    delta!(
        rfc9111_5_2_quoted_not_a_directive_rev,
        ["max-age=1, x=\"max-age=3600\""],
        "max-age",
        valid(1)
    );
    // RFC 9111 4.2.1: with several occurrences the first (valid) one is used.
    delta!(
        rfc9111_4_2_1_first_of_two_same_line,
        ["max-age=1800, max-age=1"],
        "max-age",
        valid(1800)
    );
    delta!(
        rfc9111_4_2_1_first_of_two_lines,
        ["max-age=1", "max-age=1800"],
        "max-age",
        valid(1)
    );
    delta!(
        rfc9111_4_2_1_first_valid,
        ["max-age=1x, max-age=30"],
        "max-age",
        valid(30)
    );

    #[test]
    fn rfc9111_5_2_bare_and_qualified() {
        let c = parse_cache_control(&cc(&["No-Cache=\"Set-Cookie\", PRIVATE"]));
        assert!(c.has("no-cache") && !c.has_bare("no-cache"));
        assert!(c.has_bare("private"));
    }
}
