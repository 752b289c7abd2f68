//! Conditional GET/HEAD requests the cache answers itself (RFC 9111 4.3.2, RFC 9110 13.2.2):
//! does the client's copy match the response the cache would send?
//!
//! Invariant: pure; evaluated on the client's (normalised) request fields and the response
//! about to be sent, never on what the origin was asked. Only `If-None-Match` and
//! `If-Modified-Since` are evaluated, in RFC 9110 13.2.2 order (the first present decides);
//! `If-Match` and `If-Unmodified-Since` are not evaluated by the cache.

use std::time::SystemTime;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::headers::parse_http_date;

/// The validator that made a conditional request current (logs, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// `If-None-Match` matched the entity tag (weak comparison) or was `*`.
    IfNoneMatch,
    /// `If-Modified-Since` is not earlier than the response's modification date.
    IfModifiedSince,
}

/// What a conditional request gets from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    /// Send the response: no condition, a condition that fails, or a status a 304 cannot
    /// stand for (only 2xx responses are replaced by 304).
    Send,
    /// Answer 304 Not Modified: the client's copy is current.
    NotModified(Validator),
}

impl Conditional {
    /// RFC 9110 13.2.2 for a cache: `If-None-Match` (all field lines, weak comparison, `*`)
    /// when present, else a single valid `If-Modified-Since` (any of the three HTTP-date
    /// formats) compared with the response's `Last-Modified`, else its `Date`, else
    /// `received`; only for a 2xx `status`.
    pub fn evaluate(
        req: &HeaderMap,
        status: StatusCode,
        res: &HeaderMap,
        received: SystemTime,
    ) -> Self {
        if !status.is_success() {
            return Conditional::Send;
        }
        let current = if req.contains_key(header::IF_NONE_MATCH) {
            if_none_match(req, res).then_some(Validator::IfNoneMatch)
        } else {
            if_modified_since(req, res, received).then_some(Validator::IfModifiedSince)
        };
        current.map_or(Conditional::Send, Conditional::NotModified)
    }

    /// True for [`Conditional::NotModified`].
    pub fn is_not_modified(self) -> bool {
        matches!(self, Conditional::NotModified(_))
    }
}

/// Whether a client's conditional GET/HEAD is answered 304 by the response `res` the cache
/// would send, whatever its status (see [`Conditional::evaluate`] for the order).
pub fn not_modified(req: &HeaderMap, res: &HeaderMap, received: SystemTime) -> bool {
    Conditional::evaluate(req, StatusCode::OK, res, received).is_not_modified()
}

/// `If-None-Match` (RFC 9110 13.1.2): any listed tag equal to the response's under weak
/// comparison, or `*`.
fn if_none_match(req: &HeaderMap, res: &HeaderMap) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = res
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(weak);
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || etag.as_ref().is_some_and(|e| weak(t) == *e))
}

/// `If-Modified-Since` (RFC 9110 13.1.3): an invalid or multi-member value is ignored.
fn if_modified_since(req: &HeaderMap, res: &HeaderMap, received: SystemTime) -> bool {
    let mut lines = req.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(ims) = line.to_str().ok().and_then(parse_http_date) else {
        return false;
    };
    let date = |name| {
        res.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(parse_http_date)
    };
    let modified = date(header::LAST_MODIFIED)
        .or_else(|| date(header::DATE))
        .unwrap_or(received);
    modified <= ims
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    use crate::http_cache::testing::header_map as map;

    /// RFC 9111 4.3.2 / RFC 9110 13.1.3: If-Modified-Since in the three date formats, compared
    /// with Last-Modified, else Date, else the time received; If-None-Match first.
    #[test]
    fn rfc9111_4_3_2_client_conditionals() {
        const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
        const DATE: &str = "Mon, 07 Nov 1994 08:49:37 GMT";
        let received = UNIX_EPOCH + Duration::from_secs(784_111_777 + 2 * 86_400);
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)], bool);
        let with_lm: &[(&str, &str)] = &[("last-modified", LM), ("date", DATE), ("etag", "\"a\"")];
        let date_only: &[(&str, &str)] = &[("date", DATE)];
        let cases: &[Case<'_>] = &[
            (&[("if-modified-since", LM)], with_lm, true),
            (
                &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
                with_lm,
                true,
            ),
            (
                &[("if-modified-since", "Sun Nov  6 08:49:37 1994")],
                with_lm,
                true,
            ),
            (
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:36 GMT")],
                with_lm,
                false,
            ),
            (
                &[("if-modified-since", "Sat Nov  5 08:49:37 1994")],
                with_lm,
                false,
            ),
            (&[("if-modified-since", "not a date")], with_lm, false),
            (
                &[("if-modified-since", LM), ("if-modified-since", LM)],
                with_lm,
                false,
            ),
            // no Last-Modified: the stored response's Date
            (&[("if-modified-since", DATE)], date_only, true),
            (&[("if-modified-since", LM)], date_only, false),
            // neither: the time it was received
            (
                &[("if-modified-since", "Tue, 08 Nov 1994 08:49:37 GMT")],
                &[],
                true,
            ),
            (&[("if-modified-since", DATE)], &[], false),
            // If-None-Match wins over If-Modified-Since
            (
                &[("if-none-match", "\"b\""), ("if-modified-since", LM)],
                with_lm,
                false,
            ),
            (&[("if-none-match", "W/\"a\"")], with_lm, true),
            (&[("if-none-match", "\"x\", \"a\"")], with_lm, true),
            (
                &[("if-none-match", "\"x\""), ("if-none-match", "\"a\"")],
                with_lm,
                true,
            ),
            (&[("if-none-match", "*")], with_lm, true),
            (&[("if-none-match", "*")], date_only, true),
            (&[("if-none-match", "\"a\"")], date_only, false),
            (&[], with_lm, false),
        ];
        for (i, (req, res, expect)) in cases.iter().enumerate() {
            assert_eq!(
                not_modified(&map(req), &map(res), received),
                *expect,
                "case {i}: {req:?}"
            );
        }
    }

    /// Which validator decided, and that only a 2xx is replaced by a 304.
    #[test]
    fn evaluate_names_the_validator_and_needs_a_2xx() {
        const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
        let res = map(&[("last-modified", LM), ("etag", "\"a\"")]);
        let received = UNIX_EPOCH + Duration::from_secs(784_111_777);
        type Case<'a> = (&'a [(&'a str, &'a str)], u16, Conditional);
        let cases: &[Case<'_>] = &[
            (
                &[("if-none-match", "\"a\"")],
                200,
                Conditional::NotModified(Validator::IfNoneMatch),
            ),
            (
                &[("if-modified-since", LM)],
                203,
                Conditional::NotModified(Validator::IfModifiedSince),
            ),
            (&[("if-none-match", "\"a\"")], 404, Conditional::Send),
            (&[("if-modified-since", LM)], 301, Conditional::Send),
            (&[("if-none-match", "\"b\"")], 200, Conditional::Send),
            // If-Match and If-Unmodified-Since are not evaluated by the cache.
            (&[("if-match", "\"b\"")], 200, Conditional::Send),
            (&[], 200, Conditional::Send),
        ];
        for (i, (req, status, expect)) in cases.iter().enumerate() {
            let status = StatusCode::from_u16(*status).unwrap();
            assert_eq!(
                Conditional::evaluate(&map(req), status, &res, received),
                *expect,
                "case {i}: {req:?} {status}"
            );
        }
    }
}
