//! Which URIs an unsafe request invalidates (RFC 9111 4.4): the target, and `Location` /
//! `Content-Location` references resolved against it (RFC 3986 5.2) when same-origin.
//!
//! Invariant: pure; a reference to another origin is never invalidated.

use super::*;

/// Origin triple (scheme, host, port) with default ports filled in, lower-cased.
fn origin(u: &Uri) -> Option<(String, String, u16)> {
    let scheme = u.scheme_str()?.to_ascii_lowercase();
    let a = u.authority()?;
    let port = a.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some((scheme, a.host().to_ascii_lowercase(), port))
}

fn remove_dot_segments(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Resolves a URI reference against an absolute base (RFC 3986 5.2.2); fragments dropped.
pub fn resolve_reference(base: &Uri, reference: &str) -> Option<Uri> {
    let reference = reference.trim();
    let reference = reference.split('#').next().unwrap_or("");
    let scheme_end = reference.find(':');
    let has_scheme = scheme_end.is_some_and(|i| {
        i > 0
            && reference[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            && reference.as_bytes()[0].is_ascii_alphabetic()
    });
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let text = if has_scheme {
        reference.to_owned()
    } else if reference.starts_with("//") {
        format!("{scheme}:{reference}")
    } else {
        let (path, query) = match reference.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (reference, None),
        };
        let (path, query) = if path.is_empty() {
            (base.path().to_owned(), query.or(base.query()))
        } else if path.starts_with('/') {
            (remove_dot_segments(path), query)
        } else {
            let bp = base.path();
            let dir = &bp[..bp.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            (remove_dot_segments(&format!("{dir}{path}")), query)
        };
        match query {
            Some(q) => format!("{scheme}://{authority}{path}?{q}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    };
    text.parse().ok()
}

/// URIs a response to an unsafe request invalidates (RFC 9111 4.4): the target URI and the
/// same-origin `Location` / `Content-Location`, for 2xx/3xx only. Deduplicated, target first.
pub fn invalidation_targets(
    req_uri_absolute: &Uri,
    method: &Method,
    status: StatusCode,
    res_headers: &HeaderMap,
) -> Vec<Uri> {
    if method.is_safe() || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![req_uri_absolute.clone()];
    let base_origin = origin(req_uri_absolute);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        for v in res_headers.get_all(name) {
            let Some(u) = v
                .to_str()
                .ok()
                .and_then(|s| resolve_reference(req_uri_absolute, s))
            else {
                continue;
            };
            if base_origin.is_some() && origin(&u) == base_origin && !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}
