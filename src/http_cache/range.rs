//! Byte ranges (RFC 9110 14) and partial content (RFC 9111 3.3, 3.4): `Range`, `If-Range` and
//! `Content-Range` parsing, whether two partial responses are the same representation, and the
//! combination of stored pieces with a new one.
//!
//! Invariant: pure; [`Pieces`] are always sorted, disjoint and non-adjacent, and the stored
//! value of a partial entry is exactly their bytes, in order.

use std::time::Duration;

use http::header::{self, HeaderMap};

use super::entry::StoredHead;
use super::headers::parse_http_date;

/// One byte range of a `Range` header (RFC 9110 14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (`last` absent: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// First and last byte positions within a body of `len` bytes; `None` if unsatisfiable.
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(first, _) if first >= len => None,
            ByteRange::From(first, last) => Some((first, last.map_or(len - 1, |l| l.min(len - 1)))),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(_) if len == 0 => None,
            ByteRange::Suffix(n) => Some((len.saturating_sub(n), len - 1)),
        }
    }
}

/// A `Range: bytes=...` header with exactly one valid range; anything else is `None` (the
/// request then goes to the origin).
pub fn parse_byte_range(h: &HeaderMap) -> Option<ByteRange> {
    let mut values = h.get_all(header::RANGE).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (unit, spec) = v.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(ByteRange::Suffix(digits(b)?)),
        (false, true) => Some(ByteRange::From(digits(a)?, None)),
        (false, false) => {
            let (first, last) = (digits(a)?, digits(b)?);
            (first <= last).then_some(ByteRange::From(first, Some(last)))
        }
        (true, true) => None,
    }
}

/// A non-empty run of ASCII digits (surrounding whitespace allowed) as a number.
fn digits(t: &str) -> Option<u64> {
    let t = t.trim();
    (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

/// `If-Range` (RFC 9110 13.1.5): absent, or a strong ETag equal to the stored one, or a date
/// equal to the stored Last-Modified.
pub fn if_range_matches(req: &HeaderMap, head: &StoredHead) -> bool {
    let Some(v) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return head
            .etag()
            .and_then(|e| e.to_str().ok())
            .is_some_and(|e| e.trim() == v);
    }
    if v.starts_with("W/") {
        return false;
    }
    head.last_modified()
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.trim() == v)
}

/// The one `Content-Range: bytes first-last/complete` of a single-part 206 (RFC 9110 14.4),
/// with the complete length known (`/*` is `None`: such a part cannot be placed for later).
pub fn parse_content_range(h: &HeaderMap) -> Option<ContentRange> {
    let mut values = h.get_all(header::CONTENT_RANGE).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, complete) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (first, last, complete) = (digits(a)?, digits(b)?, digits(complete)?);
    (first <= last && last < complete).then_some(ContentRange {
        first,
        last,
        complete,
    })
}

/// A parsed `Content-Range` of one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte position.
    pub first: u64,
    /// Last byte position (inclusive).
    pub last: u64,
    /// The complete representation's length.
    pub complete: u64,
}

impl ContentRange {
    /// The part as a half-open [`Piece`].
    pub fn piece(self) -> Piece {
        Piece {
            start: self.first,
            end: self.last + 1,
        }
    }
}

/// RFC 9111 3.4: may two partial responses be combined? Only when both carry the same strong
/// validator: equal strong ETags, or (neither has an ETag) equal `Last-Modified` dates that are
/// strong by RFC 9110 8.8.2.2 (each response's `Date` at least 60 s after it).
pub fn same_representation(stored: &HeaderMap, new: &HeaderMap) -> bool {
    let etag = |h: &HeaderMap| {
        h.get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_owned())
    };
    match (etag(stored), etag(new)) {
        (Some(a), Some(b)) => a.starts_with('"') && a == b,
        (None, None) => {
            let lm = |h: &HeaderMap| strong_last_modified(h);
            matches!((lm(stored), lm(new)), (Some(a), Some(b)) if a == b)
        }
        _ => false,
    }
}

/// `Last-Modified` when it is a strong validator: `Date` at least 60 s later (RFC 9110 8.8.2.2).
fn strong_last_modified(h: &HeaderMap) -> Option<std::time::SystemTime> {
    let date = |name| {
        h.get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .and_then(parse_http_date)
    };
    let (lm, d) = (date(header::LAST_MODIFIED)?, date(header::DATE)?);
    (d.duration_since(lm).ok()? >= Duration::from_secs(60)).then_some(lm)
}

/// A stored byte span `[start, end)` of the complete representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First byte position.
    pub start: u64,
    /// One past the last byte position.
    pub end: u64,
}

impl Piece {
    /// Its length in bytes.
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// True when empty (never stored).
    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

/// Where a byte of a combined value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The stored value, from this offset.
    Stored(u64),
    /// The new part's body, from this offset.
    New(u64),
}

/// The pieces of a partial entry, sorted, disjoint and non-adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces(Vec<Piece>);

impl Pieces {
    /// Pieces from a list, or `None` unless sorted, non-empty each, disjoint and non-adjacent.
    pub fn new(list: Vec<Piece>) -> Option<Pieces> {
        let ordered =
            list.iter().all(|p| !p.is_empty()) && list.windows(2).all(|w| w[0].end < w[1].start);
        ordered.then_some(Pieces(list))
    }

    /// The pieces.
    pub fn as_slice(&self) -> &[Piece] {
        &self.0
    }

    /// Bytes stored in all.
    pub fn stored_len(&self) -> u64 {
        self.0.iter().map(|p| p.len()).sum()
    }

    /// Does one piece span all of `[0, complete)`?
    pub fn is_complete(&self, complete: u64) -> bool {
        matches!(self.0.as_slice(), [p] if p.start == 0 && p.end == complete)
    }

    /// Offset in the stored value of the bytes `first..=last`, when one piece holds them all.
    pub fn locate(&self, first: u64, last: u64) -> Option<u64> {
        let mut offset = 0;
        for p in &self.0 {
            if p.start <= first && last < p.end {
                return Some(offset + first - p.start);
            }
            offset += p.len();
        }
        None
    }

    /// Combine with a new part (RFC 9111 3.4): the union of the spans, and how to build the
    /// new value, segment by segment (`(source, len)`), bytes of `new` winning where both
    /// hold them.
    pub fn combine(&self, new: Piece) -> (Pieces, Vec<(Source, u64)>) {
        // Union: sorted by start, overlapping or adjacent spans merged.
        let mut all: Vec<Piece> = self.0.clone();
        all.push(new);
        all.sort_by_key(|p| p.start);
        let mut union: Vec<Piece> = Vec::with_capacity(all.len());
        for p in all {
            match union.last_mut() {
                Some(u) if p.start <= u.end => u.end = u.end.max(p.end),
                _ => union.push(p),
            }
        }
        // Stored pieces with their offsets in the stored value.
        let mut stored = Vec::with_capacity(self.0.len());
        let mut off = 0;
        for p in &self.0 {
            stored.push((*p, off));
            off += p.len();
        }
        let mut plan: Vec<(Source, u64)> = Vec::new();
        let mut push = |src: Source, len: u64| match (plan.last_mut(), src) {
            (Some((Source::Stored(a), l)), Source::Stored(b)) if *a + *l == b => *l += len,
            (Some((Source::New(a), l)), Source::New(b)) if *a + *l == b => *l += len,
            _ => plan.push((src, len)),
        };
        for u in &union {
            let mut at = u.start;
            while at < u.end {
                if new.start <= at && at < new.end {
                    let stop = new.end.min(u.end);
                    push(Source::New(at - new.start), stop - at);
                    at = stop;
                    continue;
                }
                // Not in the new part: inside a stored piece (the union says so).
                let Some(&(p, base)) = stored.iter().find(|(p, _)| p.start <= at && at < p.end)
                else {
                    unreachable!("a union span is covered by the pieces it was made of");
                };
                let mut stop = p.end.min(u.end);
                if new.start > at {
                    stop = stop.min(new.start);
                }
                push(Source::Stored(base + at - p.start), stop - at);
                at = stop;
            }
        }
        (Pieces(union), plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    macro_rules! range {
        ($name:ident, $value:expr, $expect:expr) => {
            #[test]
            fn $name() {
                assert_eq!(parse_byte_range(&headers(&[("range", $value)])), $expect);
            }
        };
    }
    range!(
        range_first_last,
        "bytes=0-99",
        Some(ByteRange::From(0, Some(99)))
    );
    range!(
        range_open_end,
        "bytes=100-",
        Some(ByteRange::From(100, None))
    );
    range!(range_suffix, "bytes=-10", Some(ByteRange::Suffix(10)));
    range!(
        range_spaces_and_case,
        "BYTES = 5-6",
        Some(ByteRange::From(5, Some(6)))
    );
    range!(range_several_refused, "bytes=0-1,5-6", None);
    range!(range_reversed_refused, "bytes=9-1", None);
    range!(range_other_unit_refused, "items=0-1", None);
    range!(range_empty_refused, "bytes=-", None);
    range!(range_letters_refused, "bytes=a-b", None);

    #[test]
    fn resolves_against_the_length() {
        assert_eq!(ByteRange::From(0, Some(99)).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::From(50, None).resolve(50), None);
        assert_eq!(ByteRange::From(10, None).resolve(50), Some((10, 49)));
        assert_eq!(ByteRange::Suffix(10).resolve(50), Some((40, 49)));
        assert_eq!(ByteRange::Suffix(100).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::Suffix(0).resolve(50), None);
    }

    macro_rules! content_range {
        ($name:ident, $value:expr, $expect:expr) => {
            #[test]
            fn $name() {
                let got = parse_content_range(&headers(&[("content-range", $value)]));
                assert_eq!(got.map(|c| (c.first, c.last, c.complete)), $expect);
            }
        };
    }
    content_range!(
        rfc9110_14_4_content_range_plain,
        "bytes 0-9/100",
        Some((0, 9, 100))
    );
    content_range!(
        rfc9110_14_4_content_range_last_byte,
        "bytes 99-99/100",
        Some((99, 99, 100))
    );
    content_range!(
        rfc9110_14_4_content_range_unknown_length,
        "bytes 0-9/*",
        None
    );
    content_range!(rfc9110_14_4_content_range_past_end, "bytes 0-100/100", None);
    content_range!(rfc9110_14_4_content_range_reversed, "bytes 9-0/100", None);
    content_range!(rfc9110_14_4_content_range_unsatisfied, "bytes */100", None);
    content_range!(rfc9110_14_4_content_range_other_unit, "items 0-9/100", None);

    const OLD: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
    const LATER: &str = "Mon, 01 Jan 2024 00:05:00 GMT";
    const SOON: &str = "Mon, 01 Jan 2024 00:00:30 GMT";

    macro_rules! same {
        ($name:ident, $a:expr, $b:expr, $expect:expr) => {
            #[test]
            fn $name() {
                assert_eq!(same_representation(&headers($a), &headers($b)), $expect);
            }
        };
    }
    same!(
        rfc9111_3_4_same_strong_etag,
        &[("etag", "\"a\"")],
        &[("etag", "\"a\"")],
        true
    );
    same!(
        rfc9111_3_4_other_strong_etag,
        &[("etag", "\"a\"")],
        &[("etag", "\"b\"")],
        false
    );
    same!(
        rfc9111_3_4_weak_etag_never,
        &[("etag", "W/\"a\"")],
        &[("etag", "W/\"a\"")],
        false
    );
    same!(
        rfc9111_3_4_etag_on_one_side,
        &[("etag", "\"a\"")],
        &[],
        false
    );
    same!(rfc9111_3_4_no_validator, &[], &[], false);
    same!(
        rfc9111_3_4_strong_last_modified,
        &[("last-modified", OLD), ("date", LATER)],
        &[("last-modified", OLD), ("date", LATER)],
        true
    );
    same!(
        rfc9111_3_4_weak_last_modified,
        &[("last-modified", OLD), ("date", SOON)],
        &[("last-modified", OLD), ("date", LATER)],
        false
    );
    same!(
        rfc9111_3_4_other_last_modified,
        &[("last-modified", OLD), ("date", LATER)],
        &[("last-modified", SOON), ("date", LATER)],
        false
    );

    fn pieces(list: &[(u64, u64)]) -> Pieces {
        Pieces::new(
            list.iter()
                .map(|&(start, end)| Piece { start, end })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn pieces_must_be_sorted_disjoint_and_apart() {
        let p = |s, e| Piece { start: s, end: e };
        assert!(Pieces::new(vec![p(0, 5), p(6, 9)]).is_some());
        assert!(Pieces::new(vec![p(0, 5), p(5, 9)]).is_none(), "adjacent");
        assert!(Pieces::new(vec![p(6, 9), p(0, 5)]).is_none(), "unsorted");
        assert!(Pieces::new(vec![p(3, 3)]).is_none(), "empty");
    }

    macro_rules! combine {
        ($name:ident, $stored:expr, $new:expr, $union:expr, $plan:expr) => {
            #[test]
            fn $name() {
                let (start, end) = $new;
                let (union, plan) = pieces($stored).combine(Piece { start, end });
                assert_eq!(union, pieces($union));
                assert_eq!(plan, $plan);
                let total: u64 = plan.iter().map(|(_, l)| l).sum();
                assert_eq!(total, union.stored_len(), "the plan fills the union");
            }
        };
    }
    use Source::{New, Stored};
    combine!(
        rfc9111_3_4_combine_first_part,
        &[],
        (10, 20),
        &[(10, 20)],
        vec![(New(0), 10)]
    );
    combine!(
        rfc9111_3_4_combine_disjoint_after,
        &[(0, 10)],
        (20, 30),
        &[(0, 10), (20, 30)],
        vec![(Stored(0), 10), (New(0), 10)]
    );
    combine!(
        rfc9111_3_4_combine_adjacent_joins,
        &[(0, 10)],
        (10, 20),
        &[(0, 20)],
        vec![(Stored(0), 10), (New(0), 10)]
    );
    combine!(
        rfc9111_3_4_combine_overlap_new_wins,
        &[(0, 10)],
        (5, 15),
        &[(0, 15)],
        vec![(Stored(0), 5), (New(0), 10)]
    );
    combine!(
        rfc9111_3_4_combine_fills_a_gap,
        &[(0, 10), (20, 30)],
        (8, 22),
        &[(0, 30)],
        vec![(Stored(0), 8), (New(0), 14), (Stored(12), 8)]
    );
    combine!(
        rfc9111_3_4_combine_inside_a_piece,
        &[(0, 30)],
        (10, 20),
        &[(0, 30)],
        vec![(Stored(0), 10), (New(0), 10), (Stored(20), 10)]
    );
    combine!(
        rfc9111_3_4_combine_before_all,
        &[(20, 30), (40, 50)],
        (0, 5),
        &[(0, 5), (20, 30), (40, 50)],
        vec![(New(0), 5), (Stored(0), 20)]
    );

    #[test]
    fn rfc9111_3_4_locate_and_complete() {
        let p = pieces(&[(0, 10), (20, 30)]);
        assert_eq!(p.locate(0, 9), Some(0));
        assert_eq!(p.locate(22, 25), Some(12));
        assert_eq!(p.locate(5, 25), None, "spans a hole");
        assert_eq!(p.locate(30, 30), None);
        assert!(!p.is_complete(30));
        assert!(pieces(&[(0, 30)]).is_complete(30));
        assert!(!pieces(&[(0, 30)]).is_complete(31));
    }
}
