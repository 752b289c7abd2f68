//! Freshness lifetime and `Age` (RFC 9111 4.2.1, 4.2.2, 5.1, 5.2, 5.3), computed here rather
//! than by http-cache-semantics, whose parser compares directive names case-sensitively,
//! accepts `max-age=100a` as 100 (or 0), reads only RFC 2822 dates and gives `immutable` a
//! lifetime of its own. Invariant: pure functions of the response head and `response_time`;
//! invalid freshness information always means "stale" (lifetime zero), never "fresh longer".

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::decide::LookupOptions;
use super::directives::{CacheControl, Delta, parse_cache_control};
use super::headers::parse_http_date;

/// Status codes heuristically cacheable by default (RFC 9110 15.1); others get a heuristic
/// lifetime only when the response is marked `public` (RFC 9111 4.2.2).
pub const HEURISTIC_STATUSES: &[u16] =
    &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The `Age` field of a response (RFC 9111 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeValue {
    /// No `Age` field.
    Absent,
    /// The first member of the first field line, a non-negative integer (clamped to 2^31).
    Valid(Duration),
    /// The first member is not a non-negative integer (`abc`, `-1`, `1.5`, `10;q=1`): the
    /// field is ignored, as if absent (RFC 9111 5.1: "a cache SHOULD ignore the field").
    Invalid,
}

/// Parses `Age`: a list value uses its first member, discarding the rest (RFC 9111 5.1).
pub fn age_value(res: &HeaderMap) -> AgeValue {
    let Some(line) = res.get(header::AGE) else {
        return AgeValue::Absent;
    };
    let first = line
        .as_bytes()
        .split(|b| *b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return AgeValue::Invalid;
    }
    let secs = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1 << 31)
        .min(1 << 31);
    AgeValue::Valid(Duration::from_secs(secs))
}

/// The response's `Expires` (RFC 9111 5.3): `Ok(None)` when absent, `Err(())` when invalid
/// (not an HTTP-date, `0`, or several field lines), which means already expired.
fn expires(res: &HeaderMap) -> Result<Option<SystemTime>, ()> {
    let mut lines = res.get_all(header::EXPIRES).iter();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err(());
    }
    first
        .to_str()
        .ok()
        .and_then(parse_http_date)
        .map(Some)
        .ok_or(())
}

/// The response's `Date`, or when it has none (or an invalid one) the time it was received
/// (RFC 9110 6.6.1: a recipient with a clock assigns one).
fn date(res: &HeaderMap, response_time: SystemTime) -> SystemTime {
    res.get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(response_time)
}

/// Whether the response names an explicit expiration time (RFC 9111 4.2.1): `s-maxage`,
/// `max-age` or `Expires`, valid or not (an invalid one still is explicit, and stale).
pub fn has_explicit_freshness(res: &HeaderMap) -> bool {
    let cc = parse_cache_control(res);
    cc.has("s-maxage") || cc.has("max-age") || res.contains_key(header::EXPIRES)
}

/// Response `no-cache` in its unqualified form (or `Pragma: no-cache` without Cache-Control,
/// RFC 9111 5.4): the response may never be used without revalidation. The qualified form
/// `no-cache="field"` restricts only the fields it lists.
pub fn response_no_cache(cc: &CacheControl, res: &HeaderMap) -> bool {
    cc.has_bare("no-cache")
        || (!res.contains_key(header::CACHE_CONTROL)
            && res.get_all(header::PRAGMA).iter().any(|v| {
                v.as_bytes()
                    .split(|b| *b == b',')
                    .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
            }))
}

/// Freshness lifetime of a response in a shared cache (RFC 9111 4.2.1), in this order:
/// `s-maxage`, `max-age`, `Expires - Date`, then the heuristic (a fraction of
/// `Date - Last-Modified`, capped by `opts.max_heuristic_ttl`) for heuristically cacheable
/// statuses or `public` responses. Invalid freshness information gives zero: a directive that
/// occurs without a valid delta-seconds (`max-age=100a`, 1.2.2), an invalid `Expires` (5.3).
/// An invalid `Age` is not freshness information: it is ignored (5.1), see
/// [`StoredHead::initial_age`](super::entry::StoredHead::initial_age). Unqualified `no-cache` also gives zero. `immutable` adds nothing
/// (RFC 8246 2.1: it only applies during the freshness lifetime).
pub fn lifetime(
    status: StatusCode,
    res: &HeaderMap,
    response_time: SystemTime,
    opts: &LookupOptions,
) -> Duration {
    let cc = parse_cache_control(res);
    if response_no_cache(&cc, res) {
        return Duration::ZERO;
    }
    for directive in ["s-maxage", "max-age"] {
        match cc.delta(directive) {
            Delta::Valid(d) => return d,
            Delta::Invalid => return Duration::ZERO,
            Delta::Absent => {}
        }
    }
    let date = date(res, response_time);
    match expires(res) {
        Ok(Some(t)) => return t.duration_since(date).unwrap_or_default(),
        Err(()) => return Duration::ZERO,
        Ok(None) => {}
    }
    if !(HEURISTIC_STATUSES.contains(&status.as_u16()) || cc.has("public")) {
        return Duration::ZERO;
    }
    let Some(lm) = res
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    else {
        return Duration::ZERO;
    };
    let since = date.duration_since(lm).unwrap_or_default();
    let h = Duration::try_from_secs_f64(since.as_secs_f64() * f64::from(opts.heuristic_fraction))
        .unwrap_or_default();
    let h = Duration::from_secs(h.as_secs());
    match opts.max_heuristic_ttl {
        Some(cap) => h.min(cap),
        None => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_cache::headers::fmt_http_date;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
    fn at(secs: i64) -> String {
        let t = if secs >= 0 {
            t0() + Duration::from_secs(secs as u64)
        } else {
            t0() - Duration::from_secs((-secs) as u64)
        };
        fmt_http_date(t)
    }
    use crate::http_cache::testing::header_map as map;

    /// `fresh!(name, status, [headers], lifetime_secs)`: received at t0 with `Date: t0`
    /// unless the headers give one.
    macro_rules! fresh {
        ($name:ident, $status:expr, [$($k:expr => $v:expr),*], $secs:expr) => {
            #[test]
            fn $name() {
                let mut h = map(&[$(($k, &*$v)),*]);
                if !h.contains_key(header::DATE) {
                    h.insert(header::DATE, HeaderValue::from_str(&at(0)).unwrap());
                }
                let got = lifetime(
                    StatusCode::from_u16($status).unwrap(),
                    &h,
                    t0(),
                    &LookupOptions::default(),
                );
                assert_eq!(got.as_secs(), $secs);
            }
        };
    }

    // RFC 9111 5.2 / 1.2.2: directive names case-insensitive, invalid values stale.
    fresh!(rfc9111_5_2_case_insensitive_max_age, 200, ["cache-control" => "MaX-AgE=60"], 60);
    fresh!(rfc9111_5_2_case_insensitive_s_maxage, 200, ["cache-control" => "max-age=1, S-MaxAge=60"], 60);
    fresh!(rfc9111_5_2_case_insensitive_no_cache, 200, ["cache-control" => "max-age=60, No-CaChE"], 0);
    fresh!(rfc9111_1_2_2_max_age_trailing_alpha, 200, ["cache-control" => "max-age=100a"], 0);
    fresh!(rfc9111_1_2_2_max_age_leading_alpha, 200, ["cache-control" => "max-age=a100"], 0);
    fresh!(rfc9111_1_2_2_max_age_decimal, 200, ["cache-control" => "max-age=3600.5"], 0);
    fresh!(rfc9111_1_2_2_max_age_space_before_equals, 200, ["cache-control" => "max-age =3600"], 0);
    fresh!(rfc9111_1_2_2_max_age_space_after_equals, 200, ["cache-control" => "max-age= 3600"], 0);
    fresh!(rfc9111_1_2_2_invalid_max_age_beats_expires, 200, ["cache-control" => "max-age=x", "expires" => at(100)], 0);
    fresh!(rfc9111_1_2_2_invalid_max_age_no_heuristic, 200, ["cache-control" => "max-age=x", "last-modified" => at(-1000)], 0);
    fresh!(rfc9111_1_2_2_invalid_s_maxage_is_stale, 200, ["cache-control" => "s-maxage=1.5, max-age=60"], 0);
    fresh!(rfc9111_1_2_2_leading_zero, 200, ["cache-control" => "max-age=003600"], 3600);
    fresh!(rfc9111_1_2_2_quoted, 200, ["cache-control" => "max-age=\"3600\""], 3600);
    fresh!(rfc9111_1_2_2_single_quoted, 200, ["cache-control" => "max-age='3600'"], 0);
    fresh!(rfc9111_5_2_quoted_string_is_not_a_directive, 200, ["cache-control" => "x=\"max-age=3600\", max-age=1"], 1);
    // RFC 9111 4.2.1: duplicates, the first valid occurrence.
    fresh!(rfc9111_4_2_1_two_max_age_first_fresh, 200, ["cache-control" => "max-age=1800, max-age=1"], 1800);
    fresh!(rfc9111_4_2_1_two_max_age_lines, 200, ["cache-control" => "max-age=1", "cache-control" => "max-age=1800"], 1);
    fresh!(rfc9111_4_2_1_first_valid_max_age, 200, ["cache-control" => "max-age=1x", "cache-control" => "max-age=30"], 30);
    fresh!(rfc9111_4_2_1_s_maxage_over_max_age_and_expires, 200, ["cache-control" => "max-age=10, s-maxage=30", "expires" => at(100)], 30);
    fresh!(rfc9111_4_2_1_max_age_over_expires, 200, ["cache-control" => "max-age=10", "expires" => at(100)], 10);
    // RFC 9111 5.3: Expires in all formats; invalid is already expired.
    fresh!(rfc9111_5_3_expires_imf, 200, ["expires" => at(100)], 100);
    fresh!(rfc9111_5_3_expires_rfc850, 200, ["date" => "Sunday, 06-Nov-94 08:49:37 GMT", "expires" => "Sunday, 06-Nov-94 08:50:37 GMT"], 60);
    fresh!(rfc9111_5_3_expires_asctime, 200, ["date" => "Sun Nov  6 08:49:37 1994", "expires" => "Sun Nov  6 08:51:37 1994"], 120);
    fresh!(rfc9111_5_3_expires_zero, 200, ["expires" => "0"], 0);
    fresh!(rfc9111_5_3_expires_wrong_zone, 200, ["date" => "Sun, 06 Nov 1994 08:49:37 GMT", "expires" => "Thu, 18 Aug 2050 02:01:18 UTC"], 0);
    fresh!(rfc9111_5_3_expires_no_comma, 200, ["date" => "Sun, 06 Nov 1994 08:49:37 GMT", "expires" => "Thu 18 Aug 2050 02:01:18 GMT"], 0);
    fresh!(rfc9111_5_3_expires_bad_form, 200, ["date" => "Sun, 06 Nov 1994 08:49:37 GMT", "expires" => "Thu, 18-Aug-2050 02:01:18 GMT"], 0);
    fresh!(rfc9111_5_3_expires_two_lines, 200, ["expires" => at(100), "expires" => at(200)], 0);
    fresh!(rfc9111_5_3_expires_in_past, 200, ["expires" => at(-10)], 0);
    fresh!(rfc9111_5_3_expires_far_future, 200, ["date" => "Sun, 06 Nov 1994 08:49:37 GMT", "expires" => "Fri, 31 Dec 9999 23:59:59 GMT"], 252_618_189_022);
    fresh!(rfc9111_5_3_expires_32bit_boundary, 200, ["date" => "Tue, 19 Jan 2038 03:14:00 GMT", "expires" => "Tue, 19 Jan 2038 03:14:08 GMT"], 8);
    fresh!(rfc9111_5_3_expires_date_missing_uses_response_time, 200, ["date" => "nonsense", "expires" => at(50)], 50);
    // RFC 9111 5.1: Age first member; an invalid Age is ignored (it does not change the
    // lifetime; the age counts it as absent).
    fresh!(rfc9111_5_1_age_valid_keeps_lifetime, 200, ["cache-control" => "max-age=60", "age" => "10"], 60);
    fresh!(rfc9111_5_1_age_list_first_member, 200, ["cache-control" => "max-age=60", "age" => "10, abc"], 60);
    fresh!(rfc9111_5_1_age_non_numeric_ignored, 200, ["cache-control" => "max-age=60", "age" => "abc"], 60);
    fresh!(rfc9111_5_1_age_negative_ignored, 200, ["cache-control" => "max-age=60", "age" => "-10"], 60);
    fresh!(rfc9111_5_1_age_float_ignored, 200, ["cache-control" => "max-age=60", "age" => "10.0"], 60);
    fresh!(rfc9111_5_1_age_parameters_ignored, 200, ["cache-control" => "max-age=60", "age" => "10;a=b"], 60);
    fresh!(rfc9111_5_1_age_empty_first_member_ignored, 200, ["cache-control" => "max-age=60", "age" => ", 10"], 60);
    // RFC 9111 4.2.2: heuristics for cacheable-by-default statuses, or `public`.
    fresh!(rfc9111_4_2_2_heuristic_200, 200, ["last-modified" => at(-1000)], 100);
    fresh!(rfc9111_4_2_2_heuristic_404, 404, ["last-modified" => at(-1000)], 100);
    fresh!(rfc9111_4_2_2_no_heuristic_302, 302, ["last-modified" => at(-1000)], 0);
    fresh!(rfc9111_4_2_2_no_heuristic_299, 299, ["last-modified" => at(-1000)], 0);
    fresh!(rfc9111_4_2_2_public_heuristic_299, 299, ["cache-control" => "public", "last-modified" => at(-1000)], 100);
    fresh!(rfc9111_4_2_2_public_heuristic_302, 302, ["cache-control" => "Public", "last-modified" => at(-1000)], 100);
    fresh!(rfc9111_4_2_2_heuristic_rfc850_last_modified, 200, ["date" => "Sunday, 06-Nov-94 08:49:37 GMT", "last-modified" => "Sunday, 06-Nov-94 08:32:57 GMT"], 100);
    // explicit freshness for any status
    fresh!(rfc9111_4_2_1_explicit_299, 299, ["cache-control" => "max-age=60"], 60);
    fresh!(rfc9111_4_2_1_explicit_400, 400, ["expires" => at(60)], 60);
    // RFC 8246 2.1: immutable grants no lifetime of its own.
    fresh!(rfc8246_immutable_adds_nothing, 200, ["cache-control" => "immutable"], 0);
    fresh!(rfc8246_immutable_keeps_max_age, 200, ["cache-control" => "max-age=60, immutable"], 60);
    // RFC 9111 5.2.2.4 / 5.4: unqualified no-cache, Pragma without Cache-Control.
    fresh!(rfc9111_5_2_2_4_qualified_no_cache_keeps_lifetime, 200, ["cache-control" => "max-age=60, no-cache=\"x-a\""], 60);
    fresh!(rfc9111_5_4_pragma_without_cache_control, 200, ["pragma" => "no-cache", "expires" => at(60)], 0);
    fresh!(rfc9111_5_4_pragma_ignored_with_cache_control, 200, ["pragma" => "no-cache", "cache-control" => "max-age=60"], 60);

    #[test]
    fn rfc9111_5_1_age_values() {
        let cases: &[(&[&str], AgeValue)] = &[
            (&[], AgeValue::Absent),
            (&["7"], AgeValue::Valid(Duration::from_secs(7))),
            (&["7, 0"], AgeValue::Valid(Duration::from_secs(7))),
            (&["0, 7"], AgeValue::Valid(Duration::ZERO)),
            (&["7", "0"], AgeValue::Valid(Duration::from_secs(7))),
            (&[" 7 "], AgeValue::Valid(Duration::from_secs(7))),
            (
                &["99999999999999999999999"],
                AgeValue::Valid(Duration::from_secs(1 << 31)),
            ),
            (&["abc"], AgeValue::Invalid),
            (&["-7"], AgeValue::Invalid),
            (&["7.0"], AgeValue::Invalid),
            (&["7;x=1"], AgeValue::Invalid),
            (&[""], AgeValue::Invalid),
        ];
        for (lines, expect) in cases {
            let h = map(&lines.iter().map(|l| ("age", *l)).collect::<Vec<_>>());
            assert_eq!(age_value(&h), *expect, "{lines:?}");
        }
    }
}
