//! The request a background refresh (stale-while-revalidate, XFetch) sends: the cache's own
//! request for every client the stored entry serves, not the request of the client that
//! happened to trigger it.
//!
//! Invariant: pure; a triggering client's secret field (`Cookie`, `Authorization`, any
//! [`is_secret_field`]) goes to the origin only when the stored entry's `Vary` names it (the
//! value then matched the stored variant: it selected the entry), or, for `Authorization`,
//! when the entry was itself stored from an authorised request (RFC 9111 3.5).

use super::*;
use crate::http_cache::key::is_secret_field;

/// What a background refresh does with one field of the request that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshField {
    /// Sent: the stored entry's `Vary` names it, so its value selected the entry.
    Selected,
    /// Sent: `Authorization` when the entry was stored from a request carrying it, which
    /// only a response the origin marked shareable (`public`, `s-maxage`, `must-revalidate`)
    /// allows; the refresh's answer is stored under the same rule.
    Authorised,
    /// Sent: neither secret nor the client's own directive; the stored entry does not vary
    /// on it, so whichever client's value goes, the answer serves every client.
    Kept,
    /// Not sent, and why.
    Dropped(DropReason),
}

/// Why a background refresh leaves out a field of the request that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// One client's secret ([`is_secret_field`]) the stored entry does not vary on.
    Secret,
    /// The client's own directives about its own answer (`Cache-Control`, `Pragma`), which
    /// the cache has already given: a trigger's `no-store` would make the refresh unstorable.
    ClientDirective,
    /// The client's conditionals and range; the refresh sends the stored validators.
    Conditional,
}

impl RefreshField {
    /// Stable name for logs and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshField::Selected => "selected",
            RefreshField::Authorised => "authorised",
            RefreshField::Kept => "kept",
            RefreshField::Dropped(DropReason::Secret) => "dropped-secret",
            RefreshField::Dropped(DropReason::ClientDirective) => "dropped-client-directive",
            RefreshField::Dropped(DropReason::Conditional) => "dropped-conditional",
        }
    }

    /// Whether the field is sent.
    pub fn is_sent(self) -> bool {
        !matches!(self, RefreshField::Dropped(_))
    }
}

/// What a background refresh of `head` does with the triggering request's field `name`.
pub fn refresh_field(head: &StoredHead, name: &header::HeaderName) -> RefreshField {
    if head.vary.names().contains(name) {
        return RefreshField::Selected;
    }
    if name == header::AUTHORIZATION && head.request_headers.contains_key(header::AUTHORIZATION) {
        return RefreshField::Authorised;
    }
    if is_secret_field(name) {
        return RefreshField::Dropped(DropReason::Secret);
    }
    if name == header::CACHE_CONTROL || name == header::PRAGMA {
        return RefreshField::Dropped(DropReason::ClientDirective);
    }
    if is_client_conditional(name) {
        return RefreshField::Dropped(DropReason::Conditional);
    }
    RefreshField::Kept
}

/// The request a background refresh of `head` asks with, made from `trigger` (the request
/// that was served `head` and started the refresh): its method, target and version, and only
/// the fields [`refresh_field`] sends. Storability, the 304 merge and the new entry's
/// request record are asked on it; [`revalidation_request`] adds the stored validators.
pub fn background_request(head: &StoredHead, trigger: &request::Parts) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = trigger.method.clone();
    parts.uri = trigger.uri.clone();
    parts.version = trigger.version;
    let mut h = HeaderMap::with_capacity(trigger.headers.keys_len());
    for name in trigger.headers.keys() {
        if refresh_field(head, name).is_sent() {
            for v in trigger.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
    }
    parts.headers = h;
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_cache::testing::header_map;

    /// A head stored from a request with `req` fields, answered with `res` fields.
    fn stored(req: &[(&str, &str)], res: &[(&str, &str)]) -> StoredHead {
        let mut r = Request::get("http://o.test/a").body(()).unwrap();
        *r.headers_mut() = header_map(req);
        let (req, ()) = r.into_parts();
        let mut p = http::Response::new(());
        *p.headers_mut() = header_map(res);
        let (res, ()) = p.into_parts();
        let t = SystemTime::UNIX_EPOCH;
        StoredHead::new(&req, &res, t, t, 0, 0, Duration::ZERO)
    }

    const PUBLIC: &[(&str, &str)] = &[("cache-control", "public, max-age=60")];

    macro_rules! field {
        ($name:ident, req: $req:expr, res: $res:expr, $field:expr => $fate:expr) => {
            #[test]
            fn $name() {
                let head = stored($req, $res);
                let name = header::HeaderName::from_static($field);
                assert_eq!(refresh_field(&head, &name), $fate);
            }
        };
    }
    use DropReason::*;
    use RefreshField::*;
    field!(cookie_without_vary_is_dropped, req: &[], res: PUBLIC, "cookie" => Dropped(Secret));
    field!(cookie_named_by_vary_is_selected, req: &[("cookie", "s=1")],
        res: &[("vary", "Cookie")], "cookie" => Selected);
    field!(authorization_of_an_anonymous_entry_is_dropped, req: &[], res: PUBLIC,
        "authorization" => Dropped(Secret));
    field!(authorization_of_an_authorised_entry_is_sent,
        req: &[("authorization", "Bearer a")], res: PUBLIC, "authorization" => Authorised);
    field!(authorization_named_by_vary_is_selected, req: &[("authorization", "Bearer a")],
        res: &[("vary", "Authorization")], "authorization" => Selected);
    field!(cookie_of_an_authorised_entry_is_still_dropped,
        req: &[("authorization", "Bearer a"), ("cookie", "s=1")], res: PUBLIC,
        "cookie" => Dropped(Secret));
    field!(proxy_authorization_is_dropped, req: &[], res: PUBLIC,
        "proxy-authorization" => Dropped(Secret));
    field!(api_key_field_is_dropped, req: &[], res: PUBLIC, "x-api-key" => Dropped(Secret));
    field!(session_field_is_dropped, req: &[], res: PUBLIC, "x-session-id" => Dropped(Secret));
    field!(api_key_named_by_vary_is_selected, req: &[("x-api-key", "k")],
        res: &[("vary", "X-Api-Key")], "x-api-key" => Selected);
    field!(user_agent_is_kept, req: &[], res: PUBLIC, "user-agent" => Kept);
    field!(accept_language_without_vary_is_kept, req: &[], res: PUBLIC,
        "accept-language" => Kept);
    field!(accept_encoding_named_by_vary_is_selected, req: &[],
        res: &[("vary", "accept-encoding")], "accept-encoding" => Selected);
    field!(cache_control_is_dropped, req: &[], res: PUBLIC,
        "cache-control" => Dropped(ClientDirective));
    field!(pragma_is_dropped, req: &[], res: PUBLIC, "pragma" => Dropped(ClientDirective));
    field!(if_none_match_is_dropped, req: &[], res: PUBLIC,
        "if-none-match" => Dropped(Conditional));
    field!(range_is_dropped, req: &[], res: PUBLIC, "range" => Dropped(Conditional));

    /// (stored request, stored response, triggering request, fields the refresh sends).
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn background_request_sends_what_selected_the_entry_and_no_other_secret() {
        let trigger: &[(&str, &str)] = &[
            ("authorization", "Bearer secret"),
            ("cookie", "s=1"),
            ("x-auth-token", "t"),
            ("user-agent", "curl/8"),
            ("accept-language", "fr"),
            ("cache-control", "no-store"),
            ("if-none-match", "\"client\""),
        ];
        let cases: [(&str, Case); 4] = [
            (
                "anonymous entry",
                (
                    &[],
                    PUBLIC,
                    trigger,
                    &[("user-agent", "curl/8"), ("accept-language", "fr")],
                ),
            ),
            (
                "vary cookie",
                (
                    &[("cookie", "s=1")],
                    &[("cache-control", "max-age=60"), ("vary", "Cookie")],
                    trigger,
                    &[
                        ("cookie", "s=1"),
                        ("user-agent", "curl/8"),
                        ("accept-language", "fr"),
                    ],
                ),
            ),
            (
                "authorised entry",
                (
                    &[("authorization", "Bearer other")],
                    PUBLIC,
                    trigger,
                    &[
                        ("authorization", "Bearer secret"),
                        ("user-agent", "curl/8"),
                        ("accept-language", "fr"),
                    ],
                ),
            ),
            (
                "authorised entry, anonymous trigger",
                (
                    &[("authorization", "Bearer other")],
                    PUBLIC,
                    &[("user-agent", "curl/8")],
                    &[("user-agent", "curl/8")],
                ),
            ),
        ];
        for (case, (stored_req, stored_res, trig, sent)) in cases {
            let head = stored(stored_req, stored_res);
            let mut t = Request::get("http://o.test/a?q=1").body(()).unwrap();
            *t.headers_mut() = header_map(trig);
            let (t, ()) = t.into_parts();
            let bg = background_request(&head, &t);
            assert_eq!(bg.uri, t.uri, "{case}: target");
            assert_eq!(bg.method, Method::GET, "{case}: method");
            assert_eq!(bg.headers, header_map(sent), "{case}: fields sent");
            // The revalidation adds the stored validators, never the client's.
            let reval = revalidation_request(&head, &bg);
            assert!(!reval.headers.contains_key(header::IF_NONE_MATCH), "{case}");
        }
    }

    #[test]
    fn repeated_field_lines_are_all_kept() {
        let head = stored(&[], &[("cache-control", "max-age=60"), ("vary", "accept")]);
        let mut t = Request::get("http://o.test/a").body(()).unwrap();
        *t.headers_mut() = header_map(&[("accept", "text/html"), ("accept", "*/*")]);
        let (t, ()) = t.into_parts();
        let bg = background_request(&head, &t);
        let lines: Vec<_> = bg.headers.get_all(header::ACCEPT).iter().collect();
        assert_eq!(lines, ["text/html", "*/*"]);
    }

    #[test]
    fn an_authorised_entry_refreshed_with_credentials_stays_storable_only_when_shareable() {
        let head = stored(&[("authorization", "Bearer a")], PUBLIC);
        let mut t = Request::get("http://o.test/a").body(()).unwrap();
        *t.headers_mut() = header_map(&[("authorization", "Bearer b")]);
        let (t, ()) = t.into_parts();
        let bg = background_request(&head, &t);
        let opts = LookupOptions::default();
        let answer = |cc: &str| {
            let mut r = http::Response::new(());
            *r.headers_mut() = header_map(&[("cache-control", cc)]);
            r.into_parts().0
        };
        assert_eq!(
            storability(&bg, &answer("public, max-age=60"), &opts),
            Ok(())
        );
        assert_eq!(
            storability(&bg, &answer("max-age=60"), &opts),
            Err(NotStorable::Authorization)
        );
    }
}
