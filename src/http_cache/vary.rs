//! The `Vary` response header as a value: none, `*`, or a sorted set of request header names.
//! Invariant: `Vary::Headers` is never empty, lower-case, sorted and free of duplicates.

use http::header::{self, HeaderMap, HeaderName};

/// What a stored response varies on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary` (or only empty field lines): one response serves every request.
    #[default]
    None,
    /// `Vary: *`: no later request matches (RFC 9111 4.1).
    Any,
    /// The request header fields that select the variant; sorted, deduplicated, non-empty.
    Headers(Vec<HeaderName>),
}

impl Vary {
    /// Reads every `Vary` field line of a response. A member that is not a field name (`a b`,
    /// `"a"`, `a;q=1`, `a/1`) makes the whole value `*`: which request field it meant is
    /// unknown, so no stored response may be chosen by it (ignoring it shared one client's
    /// variant with every other; RFC 9110 12.5.5 defines `Vary` as `*` or field names).
    pub fn from_headers(res: &HeaderMap) -> Vary {
        Self::from_lines(res.get_all(header::VARY).iter().map(|v| v.as_bytes()))
    }

    fn from_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vary {
        let mut names = Vec::new();
        for line in lines {
            for item in line.split(|b| *b == b',') {
                let item = item.trim_ascii();
                if item == b"*" {
                    return Vary::Any;
                }
                if item.is_empty() {
                    continue; // empty list members are allowed (RFC 9110 5.6.1)
                }
                match HeaderName::from_bytes(item) {
                    Ok(n) => names.push(n),
                    Err(_) => return Vary::Any,
                }
            }
        }
        Self::from_names(names)
    }

    fn from_names(mut names: Vec<HeaderName>) -> Vary {
        if names.is_empty() {
            return Vary::None;
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Headers(names)
    }

    /// The varying header names (empty for `None` and `Any`).
    pub fn names(&self) -> &[HeaderName] {
        match self {
            Vary::Headers(n) => n,
            _ => &[],
        }
    }

    /// Text form: `""`, `"*"`, or `"accept-encoding, user-agent"`; [`Vary::parse`] inverts it.
    pub fn encode(&self) -> String {
        match self {
            Vary::None => String::new(),
            Vary::Any => "*".to_owned(),
            Vary::Headers(n) => n
                .iter()
                .map(HeaderName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Parses the text form produced by [`Vary::encode`] (or any `Vary` field value).
    pub fn parse(s: &str) -> Vary {
        Self::from_lines(std::iter::once(s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    macro_rules! vary {
        ($name:ident, [$($l:expr),*], $expect:expr) => {
            #[test]
            #[allow(unused_mut)]
            fn $name() {
                let mut h = HeaderMap::new();
                $(h.append(header::VARY, HeaderValue::from_static($l));)*
                let v = Vary::from_headers(&h);
                assert_eq!(v.encode(), $expect);
                assert_eq!(Vary::parse(&v.encode()), v, "round trip");
            }
        };
    }
    vary!(absent, [], "");
    vary!(empty_line, [" , "], "");
    vary!(star, ["Accept", "*"], "*");
    vary!(star_in_list, ["accept, * "], "*");
    vary!(
        sorted_lowered_dedup,
        ["User-Agent, Accept-Encoding", "accept-encoding,ACCEPT"],
        "accept, accept-encoding, user-agent"
    );
    vary!(a_member_with_a_space_is_star, ["accept, bad name"], "*");
    vary!(a_quoted_member_is_star, ["\"x-user\""], "*");
    vary!(
        a_member_with_parameters_is_star,
        ["accept-encoding, x-user;q=1"],
        "*"
    );
    vary!(a_member_with_a_slash_is_star, ["x-user/1"], "*");
    vary!(a_member_in_a_later_line_is_star, ["accept", "(x)"], "*");
}
