//! Development-caching rules: per host and path pattern, force a TTL whatever the origin
//! says, drop query parameters from the cache key, never cache, or cache POST by body digest.
//!
//! Invariant: pure matching and rewriting; the first rule that matches a URL is the only one
//! that applies. A forced TTL never shares a response to a request with `Authorization`
//! unless the rule says `share_auth`.

use std::fmt;
use std::time::Duration;

use http::{Method, Uri, request, response};

use super::decide::{LookupOptions, NotStorable, storability, storability_forced};

/// A glob: `*` matches any run of characters (also empty), `?` exactly one. Matching is
/// ASCII case-insensitive for hosts and case-sensitive for paths and parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

/// A pattern or rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Empty pattern.
    #[error("empty pattern")]
    Empty,
    /// Characters a pattern may not contain.
    #[error("pattern {0:?} contains whitespace or control characters")]
    BadChar(String),
    /// `cache_methods` names a method other than POST, PUT, PATCH, or GET.
    #[error("cache_methods: {0:?} cannot be cached (use POST, PUT or PATCH)")]
    Method(String),
    /// `cache_methods` without `ttl`: responses to those methods carry no freshness to reuse.
    #[error("cache_methods needs a ttl")]
    MethodsNeedTtl,
    /// `bypass` together with caching options.
    #[error("bypass cannot be combined with ttl or cache_methods")]
    BypassConflict,
}

impl Pattern {
    /// Parse a pattern.
    pub fn new(text: &str) -> Result<Pattern, RuleError> {
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RuleError::BadChar(text.to_string()));
        }
        Ok(Pattern {
            text: text.to_string(),
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Case-sensitive match of the whole of `s`.
    pub fn matches(&self, s: &str) -> bool {
        glob(self.text.as_bytes(), s.as_bytes(), false)
    }

    /// ASCII case-insensitive match of the whole of `s`.
    pub fn matches_ignore_case(&self, s: &str) -> bool {
        glob(self.text.as_bytes(), s.as_bytes(), true)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Iterative glob with backtracking to the last `*` (linear for typical patterns).
fn glob(p: &[u8], s: &[u8], fold: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], s[si]))) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Which query parameters to leave out of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IgnoreQuery {
    /// Keep the whole query (default).
    #[default]
    None,
    /// Drop the whole query.
    All,
    /// Drop parameters whose names match any of these patterns.
    Params(Vec<Pattern>),
}

/// One rule. Fields other than the patterns are what happens on a match.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name shown in `Cache-Status` detail and `hoard show` (defaults to `rule<N>`).
    pub name: String,
    /// Host pattern (`*.example.org`, `api.local`); port excluded.
    pub host: Pattern,
    /// Path pattern (`/v1/*`), matched against the path without the query.
    pub path: Pattern,
    /// Cache for this long whatever the origin says (overrides no-cache, no-store, private,
    /// max-age, Expires).
    pub ttl: Option<Duration>,
    /// Query parameters left out of the cache key.
    pub ignore_query: IgnoreQuery,
    /// Never cache matching URLs.
    pub bypass: bool,
    /// Extra methods to cache (POST, ...), keyed by a digest of the request body.
    pub cache_methods: Vec<Method>,
    /// Largest request body hashed for `cache_methods` (larger bodies pass through).
    pub max_body: usize,
    /// Let a forced TTL store responses to requests with `Authorization`.
    pub share_auth: bool,
}

impl Rule {
    /// A rule matching `host` and `path` that does nothing yet.
    pub fn new(name: &str, host: &str, path: &str) -> Result<Rule, RuleError> {
        Ok(Rule {
            name: name.to_string(),
            host: Pattern::new(host)?,
            path: Pattern::new(path)?,
            ttl: None,
            ignore_query: IgnoreQuery::None,
            bypass: false,
            cache_methods: Vec::new(),
            max_body: 1 << 20,
            share_auth: false,
        })
    }

    /// Check the combination of options.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.bypass && (self.ttl.is_some() || !self.cache_methods.is_empty()) {
            return Err(RuleError::BypassConflict);
        }
        for m in &self.cache_methods {
            if !matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH") {
                return Err(RuleError::Method(m.to_string()));
            }
        }
        if self
            .cache_methods
            .iter()
            .any(|m| *m != Method::GET && *m != Method::HEAD)
            && self.ttl.is_none()
        {
            return Err(RuleError::MethodsNeedTtl);
        }
        Ok(())
    }

    /// Does this rule apply to `uri`?
    pub fn matches(&self, uri: &Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        self.host
            .matches_ignore_case(host.trim_start_matches('[').trim_end_matches(']'))
            && self.path.matches(uri.path())
    }

    /// Does this rule cache `method` (besides GET/HEAD)?
    pub fn caches_method(&self, method: &Method) -> bool {
        self.cache_methods.contains(method)
    }

    /// `uri` with the ignored query parameters removed: the URI the cache key is built from.
    pub fn key_uri(&self, uri: &Uri) -> Uri {
        let Some(q) = uri.query() else {
            return uri.clone();
        };
        let kept: Option<String> = match &self.ignore_query {
            IgnoreQuery::None => return uri.clone(),
            IgnoreQuery::All => None,
            IgnoreQuery::Params(pats) => {
                let kept: Vec<&str> = q
                    .split('&')
                    .filter(|kv| {
                        let name = kv.split('=').next().unwrap_or("");
                        !pats.iter().any(|p| p.matches(name))
                    })
                    .collect();
                (!kept.is_empty()).then(|| kept.join("&"))
            }
        };
        let pq = match kept {
            Some(k) => format!("{}?{}", uri.path(), k),
            None => uri.path().to_string(),
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// `Cache-Status` detail naming this rule.
    pub fn detail(&self) -> String {
        format!("rule={}", self.name)
    }
}

/// Whether `res` may be stored for `req` under the rule that applies, if any: a rule's forced
/// TTL overrides the origin ([`storability_forced`]); otherwise RFC 9111 [`storability`].
pub fn storability_under(
    rule: Option<&Rule>,
    req: &request::Parts,
    res: &response::Parts,
    opts: &LookupOptions,
) -> Result<(), NotStorable> {
    match rule {
        Some(r) if r.ttl.is_some() => storability_forced(req, res, r.share_auth),
        _ => storability(req, res, opts),
    }
}

/// The first rule that applies to `uri`.
pub fn first_match<'a>(rules: &'a [Rule], uri: &Uri) -> Option<&'a Rule> {
    rules.iter().find(|r| r.matches(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! glob {
        ($name:ident, $pat:expr, $s:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(Pattern::new($pat).unwrap().matches($s), $want);
            }
        };
    }
    glob!(star_all, "*", "anything/at/all", true);
    glob!(star_empty, "*", "", true);
    glob!(prefix, "/v1/*", "/v1/users/3", true);
    glob!(prefix_miss, "/v1/*", "/v2/users", false);
    glob!(suffix, "*.json", "/a/b.json", true);
    glob!(middle, "/a/*/c", "/a/b/x/c", true);
    glob!(question, "/a?c", "/abc", true);
    glob!(question_needs_one, "/a?c", "/ac", false);
    glob!(exact, "/exact", "/exact", true);
    glob!(exact_longer, "/exact", "/exactly", false);
    glob!(backtrack, "*a*b", "xaxxab", true);
    glob!(case_sensitive_path, "/A", "/a", false);

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn host_match_ignores_case_and_port() {
        let r = Rule::new("r", "*.example.org", "*").unwrap();
        assert!(r.matches(&uri("http://API.Example.org:8080/x")));
        assert!(!r.matches(&uri("http://example.org/x")));
    }

    #[test]
    fn first_match_wins() {
        let mut a = Rule::new("a", "api.local", "/v1/*").unwrap();
        a.bypass = true;
        let b = Rule::new("b", "*", "*").unwrap();
        let rules = vec![a, b];
        assert_eq!(
            first_match(&rules, &uri("http://api.local/v1/x"))
                .unwrap()
                .name,
            "a"
        );
        assert_eq!(
            first_match(&rules, &uri("http://api.local/v2/x"))
                .unwrap()
                .name,
            "b"
        );
        assert!(first_match(&rules[..1], &uri("http://other/v1/x")).is_none());
    }

    #[test]
    fn ignore_query_params_by_pattern() {
        let mut r = Rule::new("r", "*", "*").unwrap();
        r.ignore_query = IgnoreQuery::Params(vec![
            Pattern::new("utm_*").unwrap(),
            Pattern::new("ts").unwrap(),
        ]);
        assert_eq!(
            r.key_uri(&uri("http://h/p?a=1&utm_source=x&ts=5&b=2")),
            uri("http://h/p?a=1&b=2")
        );
        assert_eq!(r.key_uri(&uri("http://h/p?ts=5")), uri("http://h/p"));
        assert_eq!(r.key_uri(&uri("http://h/p")), uri("http://h/p"));
    }

    #[test]
    fn ignore_query_all() {
        let mut r = Rule::new("r", "*", "*").unwrap();
        r.ignore_query = IgnoreQuery::All;
        assert_eq!(r.key_uri(&uri("http://h/p?a=1")), uri("http://h/p"));
    }

    /// A forced TTL overrides the origin's refusals, not the request's; without a TTL (or a
    /// rule) RFC 9111 decides.
    #[test]
    fn storability_under_a_rule() {
        let forced = {
            let mut r = Rule::new("f", "*", "*").unwrap();
            r.ttl = Some(Duration::from_secs(60));
            r
        };
        let forced_auth = {
            let mut r = forced.clone();
            r.share_auth = true;
            r
        };
        let no_ttl = Rule::new("n", "*", "*").unwrap();
        let parts = |req: &[(&str, &str)], status: u16, res: &[(&str, &str)]| {
            let mut q = http::Request::get("http://h/p");
            for (k, v) in req {
                q = q.header(*k, *v);
            }
            let mut r = http::Response::builder().status(status);
            for (k, v) in res {
                r = r.header(*k, *v);
            }
            (
                q.body(()).unwrap().into_parts().0,
                r.body(()).unwrap().into_parts().0,
            )
        };
        type Case<'a> = (
            Option<&'a Rule>,
            &'a [(&'a str, &'a str)],
            u16,
            &'a [(&'a str, &'a str)],
            Result<(), NotStorable>,
        );
        let cases: &[Case<'_>] = &[
            (
                None,
                &[],
                200,
                &[("cache-control", "no-store")],
                Err(NotStorable::NoStore),
            ),
            (
                Some(&forced),
                &[],
                200,
                &[("cache-control", "no-store")],
                Ok(()),
            ),
            (Some(&forced), &[], 200, &[("set-cookie", "a=1")], Ok(())),
            (Some(&forced), &[], 200, &[], Ok(())),
            (Some(&no_ttl), &[], 302, &[], Err(NotStorable::NoFreshness)),
            (Some(&forced), &[], 302, &[], Ok(())),
            (
                Some(&no_ttl),
                &[],
                200,
                &[("cache-control", "max-age=5")],
                Ok(()),
            ),
            (
                Some(&forced),
                &[("cache-control", "no-store")],
                200,
                &[],
                Err(NotStorable::NoStore),
            ),
            (
                Some(&forced),
                &[("authorization", "Basic x")],
                200,
                &[],
                Err(NotStorable::Authorization),
            ),
            (
                Some(&forced_auth),
                &[("authorization", "Basic x")],
                200,
                &[],
                Ok(()),
            ),
            (Some(&forced), &[], 206, &[], Err(NotStorable::Range)),
            (Some(&forced), &[], 500, &[], Err(NotStorable::Status)),
        ];
        let opts = LookupOptions::default();
        for (i, (rule, req, status, res, expect)) in cases.iter().enumerate() {
            let (q, r) = parts(req, *status, res);
            assert_eq!(
                storability_under(*rule, &q, &r, &opts),
                *expect,
                "case {i}: {req:?} {status} {res:?}"
            );
        }
    }

    #[test]
    fn validation() {
        let mut r = Rule::new("r", "*", "*").unwrap();
        r.cache_methods = vec![Method::POST];
        assert_eq!(r.validate(), Err(RuleError::MethodsNeedTtl));
        r.ttl = Some(Duration::from_secs(60));
        assert_eq!(r.validate(), Ok(()));
        r.bypass = true;
        assert_eq!(r.validate(), Err(RuleError::BypassConflict));
        let mut d = Rule::new("d", "*", "*").unwrap();
        d.cache_methods = vec![Method::DELETE];
        assert!(matches!(d.validate(), Err(RuleError::Method(_))));
        assert_eq!(Pattern::new(""), Err(RuleError::Empty));
        assert!(Pattern::new("a b").is_err());
    }
}
