//! `Max-Forwards` on TRACE and OPTIONS (RFC 9110 7.6.2): hoard checks and decrements it before
//! forwarding, and at zero answers as the final recipient instead of forwarding.
//!
//! Invariant: a TRACE or OPTIONS request with `Max-Forwards: 0` never reaches an origin, and a
//! TRACE echo never carries a secret field (`Cookie`, `Authorization`, ... : `is_secret_field`).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::State;
use crate::http_cache::{self, BypassReason, CacheStatus};
use crate::proxy::body::ProxyBody;

/// What `Max-Forwards` makes of a TRACE or OPTIONS request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hops {
    /// Not TRACE/OPTIONS, no `Max-Forwards`, or a value that is not `1*DIGIT`: forward as is.
    Untouched,
    /// Forward with this (decremented) value.
    Forward(u32),
    /// Zero: answer here.
    Answer,
}

/// The first `Max-Forwards` line as RFC 9110 7.6.2 reads it (values past `u32` count as the
/// largest this proxy supports).
pub(super) fn hops(method: &Method, headers: &http::HeaderMap) -> Hops {
    if !matches!(*method, Method::TRACE | Method::OPTIONS) {
        return Hops::Untouched;
    }
    let Some(v) = headers.get(header::MAX_FORWARDS) else {
        return Hops::Untouched;
    };
    let v = v.as_bytes().trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Hops::Untouched;
    }
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(0) => Hops::Answer,
        Some(n) => Hops::Forward(u32::try_from(n - 1).unwrap_or(u32::MAX)),
        None => Hops::Forward(u32::MAX),
    }
}

impl State {
    /// Applies `Max-Forwards` to `req`: `None` when it is to be forwarded (the field
    /// decremented), or the answer of hoard as the final recipient when it reached zero.
    pub(super) fn max_forwards(&self, req: &mut Request<ProxyBody>) -> Option<Response<ProxyBody>> {
        match hops(req.method(), req.headers()) {
            Hops::Untouched => None,
            Hops::Forward(n) => {
                req.headers_mut()
                    .insert(header::MAX_FORWARDS, HeaderValue::from(n));
                None
            }
            Hops::Answer => Some(self.final_recipient(req)),
        }
    }

    /// OPTIONS: 200 without content. TRACE: 200 `message/http` echoing the request line and
    /// fields as received, less the secret ones (RFC 9110 9.3.8 "SHOULD exclude any request
    /// fields that are likely to contain sensitive data").
    fn final_recipient(&self, req: &Request<ProxyBody>) -> Response<ProxyBody> {
        let cs = CacheStatus::bypass(BypassReason::Method).with_detail("max-forwards");
        let mut echo = Vec::new();
        if req.method() == Method::TRACE {
            echo.extend_from_slice(format!("TRACE {} HTTP/1.1\r\n", req.uri()).as_bytes());
            for (name, value) in req.headers() {
                if !http_cache::is_secret_field(name) {
                    echo.extend_from_slice(name.as_str().as_bytes());
                    echo.extend_from_slice(b": ");
                    echo.extend_from_slice(value.as_bytes());
                    echo.extend_from_slice(b"\r\n");
                }
            }
            echo.extend_from_slice(b"\r\n");
        }
        let len = echo.len();
        let trace = !echo.is_empty();
        let mut res = Response::new(ProxyBody::full(echo));
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        if trace {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/http"),
            );
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.stamp(&mut res, cs);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http_cache::testing::header_map as map;

    /// `hops!(name, method, [max-forwards lines], expected)`.
    macro_rules! hops {
        ($name:ident, $method:expr, [$($v:expr),*], $expect:expr) => {
            #[test]
            fn $name() {
                let h = map(&[$(("max-forwards", $v)),*]);
                assert_eq!(hops(&$method, &h), $expect);
            }
        };
    }

    hops!(
        rfc9110_7_6_2_trace_zero_is_answered,
        Method::TRACE,
        ["0"],
        Hops::Answer
    );
    hops!(
        rfc9110_7_6_2_options_zero_is_answered,
        Method::OPTIONS,
        ["0"],
        Hops::Answer
    );
    hops!(
        rfc9110_7_6_2_leading_zeros,
        Method::OPTIONS,
        ["000"],
        Hops::Answer
    );
    hops!(
        rfc9110_7_6_2_decremented,
        Method::TRACE,
        ["5"],
        Hops::Forward(4)
    );
    hops!(
        rfc9110_7_6_2_one_forwards_zero,
        Method::OPTIONS,
        [" 1 "],
        Hops::Forward(0)
    );
    hops!(
        rfc9110_7_6_2_huge_is_capped,
        Method::TRACE,
        ["99999999999999999999999"],
        Hops::Forward(u32::MAX)
    );
    hops!(
        rfc9110_7_6_2_invalid_is_untouched,
        Method::TRACE,
        ["-1"],
        Hops::Untouched
    );
    hops!(
        rfc9110_7_6_2_list_is_untouched,
        Method::TRACE,
        ["1, 2"],
        Hops::Untouched
    );
    hops!(
        rfc9110_7_6_2_absent_is_untouched,
        Method::TRACE,
        [],
        Hops::Untouched
    );
    hops!(
        rfc9110_7_6_2_only_trace_and_options,
        Method::GET,
        ["0"],
        Hops::Untouched
    );
    hops!(
        rfc9110_7_6_2_not_for_post,
        Method::POST,
        ["0"],
        Hops::Untouched
    );
}
