//! Cache keys: a method class plus the normalised absolute URI, and Vary variant keys
//! (`key/variant.rs`).
//! Invariant: two requests that RFC 3986 6.2.2 deems equivalent get the same key text; keys never
//! contain a fragment, userinfo or a default port.

use std::fmt;

use http::Method;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme, Uri};

mod variant;

pub use variant::{
    SECRET_DIGEST_PREFIX, is_secret_field, normalized_header, stored_vary_value, variant_key,
    vary_value,
};

/// Why a request target cannot be turned into a cache key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The URI lacks a scheme or authority (origin-form without a usable Host).
    #[error("request target is not an absolute URI")]
    NotAbsolute,
    /// Only `http` and `https` are cached.
    #[error("unsupported scheme {0:?}")]
    UnsupportedScheme(String),
    /// The authority has an empty host.
    #[error("missing host")]
    MissingHost,
    /// Host header or rebuilt URI does not parse.
    #[error("invalid URI: {0}")]
    InvalidUri(String),
}

/// Key of one URL in the store, e.g. `GET https://example.org/a?b=1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The key text as bytes (store key).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    /// The normalised absolute URI part of the key.
    pub fn url(&self) -> &str {
        self.0.split_once(' ').map_or("", |(_, u)| u)
    }
}

impl CacheKey {
    /// The key of a request whose body selects the response (methods cached by a rule):
    /// this key plus the body's digest.
    pub fn with_body_digest(&self, digest: u128) -> CacheKey {
        CacheKey(format!("{} body={digest:032x}", self.0))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Method class: GET and HEAD share `GET`; any other method is its own class.
fn method_class(method: &Method) -> &str {
    if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    }
}

/// Builds the cache key of an absolute `http`/`https` URI.
pub fn cache_key(method: &Method, uri: &Uri) -> Result<CacheKey, KeyError> {
    let class = method_class(method);
    let mut out = String::with_capacity(class.len() + 1 + uri_len_hint(uri));
    out.push_str(class);
    out.push(' ');
    push_normalized_uri(&mut out, uri)?;
    Ok(CacheKey(out))
}

/// Normalised text of an absolute URI (see [`cache_key`]).
pub fn normalize_uri(uri: &Uri) -> Result<String, KeyError> {
    let mut out = String::with_capacity(uri_len_hint(uri));
    push_normalized_uri(&mut out, uri)?;
    Ok(out)
}

/// About the length of a URI's normalised text (the capacity to reserve).
fn uri_len_hint(uri: &Uri) -> usize {
    16 + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |pq| pq.as_str().len())
}

/// Appends the normalised text of an absolute URI to `out` (one buffer, no other allocation).
fn push_normalized_uri(out: &mut String, uri: &Uri) -> Result<(), KeyError> {
    let (scheme, authority) = match (uri.scheme(), uri.authority()) {
        (Some(s), Some(a)) => (s.as_str(), a),
        _ => return Err(KeyError::NotAbsolute),
    };
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else {
        return Err(KeyError::UnsupportedScheme(scheme.to_ascii_lowercase()));
    };
    let host = authority.host();
    if host.is_empty() {
        return Err(KeyError::MissingHost);
    }
    out.push_str(scheme);
    out.push_str("://");
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        push_pct_normalized(out, &host.to_ascii_lowercase());
    } else {
        push_pct_normalized(out, host);
    }
    match authority.port_u16() {
        Some(p) if p != default_port => {
            use std::fmt::Write as _;
            let _ = write!(out, ":{p}");
        }
        _ => {}
    }
    let path = uri.path();
    if path.is_empty() || path == "*" {
        out.push('/');
    } else {
        push_pct_normalized(out, path);
    }
    if let Some(q) = uri.query() {
        out.push('?');
        push_pct_normalized(out, q);
    }
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Copies `s`, upper-casing percent-escape hex digits and decoding escaped unreserved characters.
fn push_pct_normalized(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            let byte = hex(b[i + 1]) * 16 + hex(b[i + 2]);
            if is_unreserved(byte) {
                out.push(byte as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
}

/// Turns an origin-form target (gateway mode) into an absolute URI using the Host header and
/// `default_scheme`; absolute targets are returned unchanged.
pub fn absolute_uri(
    uri: &Uri,
    host_header: Option<&HeaderValue>,
    default_scheme: &str,
) -> Result<Uri, KeyError> {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return Ok(uri.clone());
    }
    let host = host_header.ok_or(KeyError::NotAbsolute)?;
    let authority =
        Authority::try_from(host.as_bytes()).map_err(|e| KeyError::InvalidUri(e.to_string()))?;
    if authority.host().is_empty() {
        return Err(KeyError::MissingHost);
    }
    let scheme =
        Scheme::try_from(default_scheme).map_err(|e| KeyError::InvalidUri(e.to_string()))?;
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let pq = if pq.starts_with('/') {
        pq.to_owned()
    } else {
        format!("/{pq}")
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| KeyError::InvalidUri(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! key {
        ($name:ident, $method:expr, $uri:expr, $expect:expr) => {
            #[test]
            fn $name() {
                let uri: Uri = $uri.parse().unwrap();
                let got = cache_key(&$method, &uri).map(|k| k.as_str().to_owned());
                let expect: Result<&str, KeyError> = $expect;
                assert_eq!(got, expect.map(str::to_owned));
            }
        };
    }
    key!(
        simple,
        Method::GET,
        "https://example.org/a?b=1",
        Ok("GET https://example.org/a?b=1")
    );
    key!(
        head_shares_get,
        Method::HEAD,
        "http://example.org/",
        Ok("GET http://example.org/")
    );
    key!(
        post_own_class,
        Method::POST,
        "http://example.org/",
        Ok("POST http://example.org/")
    );
    key!(
        case_folded,
        Method::GET,
        "HTTP://Example.ORG/Path",
        Ok("GET http://example.org/Path")
    );
    key!(
        default_port_http,
        Method::GET,
        "http://a.b:80/x",
        Ok("GET http://a.b/x")
    );
    key!(
        default_port_https,
        Method::GET,
        "https://a.b:443/x",
        Ok("GET https://a.b/x")
    );
    key!(
        other_port_kept,
        Method::GET,
        "https://a.b:80/x",
        Ok("GET https://a.b:80/x")
    );
    key!(empty_path, Method::GET, "http://a.b", Ok("GET http://a.b/"));
    key!(
        empty_path_query,
        Method::GET,
        "http://a.b?q",
        Ok("GET http://a.b/?q")
    );
    key!(
        pct_hex_upper,
        Method::GET,
        "http://a.b/%2f%c3%a9",
        Ok("GET http://a.b/%2F%C3%A9")
    );
    key!(
        pct_unreserved_decoded,
        Method::GET,
        "http://a.b/%7Euser/%41%2D%5f",
        Ok("GET http://a.b/~user/A-_")
    );
    key!(
        pct_incomplete_kept,
        Method::GET,
        "http://a.b/%4",
        Ok("GET http://a.b/%4")
    );
    key!(
        query_verbatim_order,
        Method::GET,
        "http://a.b/?b=2&a=1&a=1",
        Ok("GET http://a.b/?b=2&a=1&a=1")
    );
    key!(
        userinfo_dropped,
        Method::GET,
        "http://u:p@a.b/",
        Ok("GET http://a.b/")
    );
    key!(
        ipv6,
        Method::GET,
        "http://[::1]:8080/",
        Ok("GET http://[::1]:8080/")
    );
    key!(
        origin_form_rejected,
        Method::GET,
        "/a",
        Err(KeyError::NotAbsolute)
    );
    key!(
        ftp_rejected,
        Method::GET,
        "ftp://a.b/",
        Err(KeyError::UnsupportedScheme("ftp".into()))
    );

    #[test]
    fn url_part() {
        let k = cache_key(&Method::GET, &"http://a.b/x".parse().unwrap()).unwrap();
        assert_eq!(k.url(), "http://a.b/x");
        assert_eq!(k.as_bytes(), b"GET http://a.b/x");
    }

    #[test]
    fn fragment_dropped() {
        // http::Uri rejects fragments in request targets; a normalised key never has one.
        assert!(
            "http://a.b/x#f".parse::<Uri>().is_err() || {
                let k = cache_key(&Method::GET, &"http://a.b/x#f".parse().unwrap()).unwrap();
                !k.as_str().contains('#')
            }
        );
    }

    macro_rules! abs {
        ($name:ident, $uri:expr, $host:expr, $expect:expr) => {
            #[test]
            fn $name() {
                let host: Option<&str> = $host;
                let hv = host.map(|h| HeaderValue::from_str(h).unwrap());
                let got = absolute_uri(&$uri.parse().unwrap(), hv.as_ref(), "http")
                    .map(|u| u.to_string());
                let expect: Result<&str, KeyError> = $expect;
                assert_eq!(got, expect.map(str::to_owned));
            }
        };
    }
    abs!(
        abs_origin_form,
        "/a?b",
        Some("Example.org:8080"),
        Ok("http://Example.org:8080/a?b")
    );
    abs!(
        abs_already_absolute,
        "https://x.y/z",
        Some("other"),
        Ok("https://x.y/z")
    );
    abs!(abs_no_host, "/a", None, Err(KeyError::NotAbsolute));
}
