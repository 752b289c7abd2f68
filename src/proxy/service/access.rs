//! Who may use the proxy, per request: `allow` (403 and close), the framing guard's verdict
//! (400 and close), the header size limit (431), `proxy-auth` credentials (407).
//!
//! Invariant: these checks run before anything is looked up, fetched or tunnelled; credentials
//! are compared in constant time per candidate and never logged.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http_cache::{BypassReason, CacheStatus};
use crate::proxy::body::ProxyBody;
use crate::proxy::framing::Violation;

use super::State;

impl State {
    /// 403 and close for a peer outside `allow`. The accept loop already refuses these;
    /// kept for any other caller of `handle`.
    pub(super) fn refuse_peer(&self, peer: SocketAddr) -> Option<Response<ProxyBody>> {
        if self.cfg.allow.iter().any(|n| n.contains(peer.ip())) {
            return None;
        }
        Some(self.error_closing(
            StatusCode::FORBIDDEN,
            CacheStatus::bypass(BypassReason::Refused).with_detail("not-allowed"),
            "this address may not use the proxy (see allow)\n",
        ))
    }

    /// 407 when `proxy-auth` credentials are configured and the request carries none of them.
    pub(super) fn refuse_unauthorized(
        &self,
        req: &Request<Incoming>,
    ) -> Option<Response<ProxyBody>> {
        if self.proxy_tokens.is_empty() || self.authorized(req.headers()) {
            return None;
        }
        let mut res = self.error(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            CacheStatus::bypass(BypassReason::Refused).with_detail("proxy-auth"),
            "proxy authentication required\n",
        );
        res.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hoard\""),
        );
        Some(res)
    }

    /// 400 and close for a request whose raw head the framing guard condemned.
    pub(super) fn refuse_framing(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Option<Response<ProxyBody>> {
        let v = req.extensions().get::<Violation>()?;
        tracing::warn!(%peer, violation = v.as_str(), "ambiguous request framing refused");
        Some(self.error_closing(
            StatusCode::BAD_REQUEST,
            CacheStatus::bypass(BypassReason::Refused).with_detail(v.as_str()),
            "ambiguous request framing (bare LF, or Content-Length with Transfer-Encoding)\n",
        ))
    }

    /// 431 when the request header block exceeds `max_header_size`.
    pub(super) fn refuse_large_header(
        &self,
        req: &Request<Incoming>,
    ) -> Option<Response<ProxyBody>> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.uri().authority().map_or(0, |a| a.as_str().len())
            + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + 32;
        if header_bytes > self.cfg.max_header_size {
            return Some(self.error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                CacheStatus::bypass(BypassReason::Refused).with_detail("header-too-large"),
                "request header block too large\n",
            ));
        }
        None
    }

    /// Does `Proxy-Authorization: Basic <token>` carry one of the configured credentials?
    /// (Compared in constant time per candidate.)
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let mut parts = value.trim().splitn(2, ' ');
        let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let token = token.trim().as_bytes();
        self.proxy_tokens.iter().fold(false, |ok, want| {
            let want = want.as_bytes();
            let same = want.len() == token.len()
                && want.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
            ok | same
        })
    }
}

/// Standard base64 with padding (RFC 4648), for `Basic` credentials.
pub(super) fn base64(input: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("alice:s3cret", "YWxpY2U6czNjcmV0"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), enc);
        }
    }
}
