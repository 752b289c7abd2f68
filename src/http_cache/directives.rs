//! Cache-Control parsing, including the RFC 5861 extensions `stale-while-revalidate` and
//! `stale-if-error` that http-cache-semantics ignores. Invariant: parsing never fails; junk is
//! skipped and invalid numbers read as absent.

use std::time::Duration;

use http::header::{self, HeaderMap};

/// Delta-seconds larger than this are read as this (RFC 9111 1.2.2).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Directives of all `Cache-Control` field lines of one message, names lower-cased, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    directives: Vec<(String, Option<String>)>,
}

impl CacheControl {
    /// Whether the directive `name` (lower case) is present, with or without an argument.
    pub fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(n, _)| n == name)
    }

    /// The argument of the first `name` directive: `None` if absent, `Some(None)` if bare.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.directives
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The first `name` directive as delta-seconds; `None` if absent, bare or not a number.
    pub fn seconds(&self, name: &str) -> Option<Duration> {
        let v = self.get(name)??;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs = v
            .parse::<u64>()
            .unwrap_or(MAX_DELTA_SECONDS)
            .min(MAX_DELTA_SECONDS);
        Some(Duration::from_secs(secs))
    }

    /// Whether no directive was found.
    pub fn is_empty(&self) -> bool {
        self.directives.is_empty()
    }

    /// Iterates the directives in field order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.directives
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
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
fn parse_line(line: &str, out: &mut Vec<(String, Option<String>)>) {
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
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
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
        }
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '"') {
            out.push((name, value));
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
        ["Stale-While-Revalidate=\"7\" ,  STALE-IF-ERROR = 9"],
        Some(7),
        Some(9)
    );
    swr!(spaces_after_equals, ["stale-if-error= 9"], NONE, Some(9));
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
}
