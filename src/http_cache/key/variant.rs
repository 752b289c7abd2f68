//! Vary variant keys (RFC 9111 4.1): which request field values select one stored variant,
//! compared after the normalisations known to keep each field's meaning, secrets digested.
//! Invariant: two values share a variant key only when the field's specification makes them
//! mean the same; a field not known to be a list is compared as sent (ends trimmed, lines
//! joined).

use http::header::{HeaderMap, HeaderName};

use super::CacheKey;

/// Header fields whose values compare case-insensitively, lower-cased in variant keys (outside
/// quoted strings).
const CASE_INSENSITIVE: &[&str] = &[
    "accept-encoding",
    "accept-charset",
    "accept-language",
    "accept",
];

/// Request fields defined as comma-separated lists (RFC 9110 5.6.1 `#rule`): Accept,
/// Accept-Charset, Accept-Encoding, Accept-Language (RFC 9110 12.5), Expect (10.1.1), TE
/// (10.1.4), Upgrade (7.8), Via (7.6.3), If-Match, If-None-Match (13.1.1, 13.1.2),
/// Cache-Control and Pragma (RFC 9111 5.2, 5.4), Forwarded (RFC 7239 4). Only for these is
/// splitting into members, dropping empty ones and collapsing optional whitespace known to
/// keep the meaning (RFC 9111 4.1).
const LIST_FIELDS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "expect",
    "forwarded",
    "if-match",
    "if-none-match",
    "pragma",
    "te",
    "upgrade",
    "via",
];

/// Normalised value of a varying request header (RFC 9111 4.1): `None` when absent; otherwise
/// the field lines, each trimmed, joined with `", "` (RFC 9110 5.3), and nothing more, except
/// for [`LIST_FIELDS`]: there the members (split at commas outside quoted strings) are trimmed,
/// empty ones dropped and runs of whitespace outside quoted strings collapsed to one space;
/// [`CASE_INSENSITIVE`] fields are lower-cased outside quoted strings. Any other field is
/// compared as sent: `X-Layout: a,,b` and `a, b` are different variants.
pub fn normalized_header(req: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = req.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    let n = name.as_str();
    if !LIST_FIELDS.contains(&n) {
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes().trim_ascii());
        }
        return Some(out);
    }
    let lower = CASE_INSENSITIVE.contains(&n);
    for v in values {
        for_each_member(v.as_bytes(), |member| {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            push_member(&mut out, member, lower);
        });
    }
    Some(out)
}

/// Calls `f` with each non-empty, trimmed member of one list field line (RFC 9110 5.6.1): the
/// line split at commas outside quoted strings (5.6.4, a `\` escapes the next byte there).
fn for_each_member(line: &[u8], mut f: impl FnMut(&[u8])) {
    let mut emit = |m: &[u8]| {
        let m = m.trim_ascii();
        if !m.is_empty() {
            f(m);
        }
    };
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &c) in line.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                emit(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    emit(&line[start..]);
}

/// Appends one list member: outside quoted strings, runs of spaces and tabs (optional
/// whitespace in these fields' grammar) become one space and, when `lower`, letters are
/// lower-cased; a quoted string is copied as it is.
fn push_member(out: &mut Vec<u8>, member: &[u8], lower: bool) {
    let (mut quoted, mut escaped, mut prev_ws) = (false, false, false);
    for &c in member {
        if quoted {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if c == b' ' || c == b'\t' {
            if !prev_ws {
                out.push(b' ');
            }
            prev_ws = true;
            continue;
        }
        prev_ws = false;
        quoted = c == b'"';
        out.push(if lower { c.to_ascii_lowercase() } else { c });
    }
}

/// Does `name` carry a secret (a session, a credential)? A response varying on such a field is
/// keyed and matched by a digest of its value, so the store never holds the value in clear.
pub fn is_secret_field(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "cookie" | "authorization" | "proxy-authorization")
        || [
            "token", "auth", "session", "secret", "password", "api-key", "apikey",
        ]
        .iter()
        .any(|s| n.contains(s))
}

/// Prefix of a digested Vary value (followed by 64 hex digits of SHA-256).
pub const SECRET_DIGEST_PREFIX: &str = "sha256:";

/// The value a request contributes to Vary matching for `name`: [`normalized_header`], and for
/// [`is_secret_field`] fields `sha256:<hex>` of it instead (what stored heads and variant keys
/// hold, so a `Cookie` never sits in the store in clear).
pub fn vary_value(req: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let v = normalized_header(req, name)?;
    if !is_secret_field(name) {
        return Some(v);
    }
    let d = ring::digest::digest(&ring::digest::SHA256, &v);
    let mut out = SECRET_DIGEST_PREFIX.as_bytes().to_vec();
    for b in d.as_ref() {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    Some(out)
}

/// The Vary value a stored head recorded for `name` (see [`vary_value`]): secret fields are
/// stored already digested and compared as stored; others are normalised again.
pub fn stored_vary_value(stored: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    if is_secret_field(name) {
        let mut values = stored.get_all(name).iter();
        let first = values.next()?;
        return Some(first.as_bytes().to_vec());
    }
    normalized_header(stored, name)
}

/// Key of one Vary variant: the base key, then per varying header `\0name` followed by `\x01`
/// (absent) or `\x02value` (present, as [`vary_value`] gives it: normalised, secrets digested).
pub fn variant_key(base: &CacheKey, vary: &[HeaderName], req: &HeaderMap) -> Vec<u8> {
    let mut out = base.as_bytes().to_vec();
    for name in vary {
        out.push(0);
        out.extend_from_slice(name.as_str().as_bytes());
        match vary_value(req, name) {
            None => out.push(1),
            Some(v) => {
                out.push(2);
                out.extend_from_slice(&v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::Method;
    use http::header::HeaderValue;

    use super::*;
    use crate::http_cache::key::cache_key;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    macro_rules! variant {
        ($name:ident, $vary:expr, $a:expr, $b:expr, $same:expr) => {
            #[test]
            fn $name() {
                let base = cache_key(&Method::GET, &"http://a.b/".parse().unwrap()).unwrap();
                let names: Vec<HeaderName> = $vary
                    .iter()
                    .map(|n: &&str| HeaderName::from_static(n))
                    .collect();
                let ka = variant_key(&base, &names, &req($a));
                let kb = variant_key(&base, &names, &req($b));
                assert_eq!(
                    ka == kb,
                    $same,
                    "{:?} vs {:?}",
                    String::from_utf8_lossy(&ka),
                    String::from_utf8_lossy(&kb)
                );
            }
        };
    }
    variant!(
        v_same_value,
        ["accept-encoding"],
        &[("accept-encoding", "gzip")],
        &[("accept-encoding", "gzip")],
        true
    );
    variant!(
        v_case_insensitive,
        ["accept-encoding"],
        &[("accept-encoding", "GZip")],
        &[("accept-encoding", "gzip")],
        true
    );
    variant!(
        v_case_sensitive_other,
        ["x-mode"],
        &[("x-mode", "A")],
        &[("x-mode", "a")],
        false
    );
    variant!(
        v_lines_joined,
        ["accept-encoding"],
        &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
        &[("accept-encoding", "gzip,  br")],
        true
    );
    variant!(
        v_ws_collapsed_in_a_list,
        ["accept-encoding"],
        &[("accept-encoding", "  gzip ,  br;\tq=0.5 ")],
        &[("accept-encoding", "gzip, br; q=0.5")],
        true
    );
    // Session 11, finding 2: fields not known to be lists are compared as sent (RFC 9111 4.1),
    // only their ends trimmed and their lines joined (RFC 9110 5.3).
    variant!(
        v_ws_kept_in_other_fields,
        ["user-agent"],
        &[("user-agent", "a   b")],
        &[("user-agent", "a b")],
        false
    );
    variant!(
        v_ends_trimmed_in_other_fields,
        ["x-mode"],
        &[("x-mode", "  a ")],
        &[("x-mode", "a")],
        true
    );
    variant!(
        v_lines_joined_in_other_fields,
        ["x-mode"],
        &[("x-mode", "a"), ("x-mode", "b")],
        &[("x-mode", "a, b")],
        true
    );
    variant!(
        v_empty_members_kept_in_other_fields,
        ["x-layout"],
        &[("x-layout", "a,,b")],
        &[("x-layout", "a, b")],
        false
    );
    variant!(
        v_comma_spacing_kept_in_other_fields,
        ["x-layout"],
        &[("x-layout", "a,b")],
        &[("x-layout", "a, b")],
        false
    );
    variant!(
        v_quoted_comma_in_other_fields,
        ["x-q"],
        &[("x-q", "\"x,y\"")],
        &[("x-q", "\"x, y\"")],
        false
    );
    variant!(
        v_empty_members_dropped_in_a_list,
        ["accept-language"],
        &[("accept-language", "en,,fr, ")],
        &[("accept-language", "en, fr")],
        true
    );
    variant!(
        v_quoted_string_never_split,
        ["accept"],
        &[("accept", "a/b;p=\"x,y\"")],
        &[("accept", "a/b;p=\"x, y\"")],
        false
    );
    variant!(
        v_quoted_string_spacing_kept,
        ["accept"],
        &[("accept", "a/b;p=\"x  y\",c/d")],
        &[("accept", "a/b; p=\"x  y\", c/d")],
        false
    );
    variant!(
        v_quoted_string_whole_in_a_list,
        ["accept"],
        &[("accept", "a/b;p=\"x,  y\",c/d")],
        &[("accept", "a/b;p=\"x,  y\", c/d")],
        true
    );
    variant!(
        v_quoted_string_case_kept,
        ["accept"],
        &[("accept", "A/B;p=\"X\"")],
        &[("accept", "a/b;p=\"x\"")],
        false
    );
    variant!(
        v_quoted_escape_in_a_list,
        ["if-none-match"],
        &[("if-none-match", "\"a\\\",b\",,\"c\"")],
        &[("if-none-match", "\"a\\\",b\", \"c\"")],
        true
    );
    variant!(
        v_etags_with_commas_not_split,
        ["if-none-match"],
        &[("if-none-match", "\"a,b\"")],
        &[("if-none-match", "\"a, b\"")],
        false
    );
    variant!(v_absent_vs_empty, ["accept"], &[], &[("accept", "")], false);
    variant!(
        v_different,
        ["accept-encoding"],
        &[("accept-encoding", "gzip")],
        &[("accept-encoding", "br")],
        false
    );
    variant!(
        v_unvaried_ignored,
        ["accept-encoding"],
        &[("accept-encoding", "gzip"), ("x", "1")],
        &[("accept-encoding", "gzip")],
        true
    );
    variant!(
        v_order_matters,
        ["accept-encoding"],
        &[("accept-encoding", "gzip, br")],
        &[("accept-encoding", "br, gzip")],
        false
    );
}
