//! The 304 refresh of a stored head, HEAD freshening, and which stored response a 304
//! selects (RFC 9111 4.3.3, 4.3.4, 4.3.5).

use super::*;

fn refresh_base() -> StoredHead {
    head_with(
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("last-modified", &date(-100)),
            ("content-length", "10"),
            ("content-type", "text/plain"),
            ("x-old", "1"),
            ("link", "<a>"),
            ("link", "<b>"),
        ],
        &[],
    )
}

#[test]
fn refresh_replaces_and_adds_but_not_framing() {
    let head = refresh_base();
    let not_modified = res_with(
        304,
        &[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=120"),
            ("date", &date(500)),
            ("x-new", "2"),
            ("content-length", "0"),
            ("content-encoding", "gzip"),
            ("link", "<c>"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
        ],
    );
    let new = refresh(&head, &req(&[]), &not_modified, at(499), at(500))
        .expect("refreshed")
        .head;
    let h = &new.response_headers;
    assert_eq!(h["cache-control"], "max-age=120");
    assert_eq!(h["x-old"], "1");
    assert_eq!(h["x-new"], "2");
    assert_eq!(h["content-length"], "10");
    assert_eq!(h["content-type"], "text/plain");
    assert!(!h.contains_key("content-encoding"));
    assert!(
        !h.contains_key("x-hop")
            && !h.contains_key("transfer-encoding")
            && !h.contains_key("connection")
    );
    assert_eq!(h.get_all("link").iter().collect::<Vec<_>>(), ["<c>"]);
    assert_eq!(
        (new.body_len, new.body_digest, new.status),
        (head.body_len, head.body_digest, head.status)
    );
    assert_eq!((new.request_time, new.response_time), (at(499), at(500)));
    let o = LookupOptions::default();
    assert_eq!(
        summary(&lookup(&new, &req(&[]), at(560), &o)),
        "fresh ttl=59"
    );
}

/// Issue 12.1: a rolling session cookie in a 304 went into the shared entry.
#[test]
fn refresh_never_stores_per_client_fields() {
    let head = refresh_base();
    let not_modified = res_with(
        304,
        &[
            ("etag", "\"v1\""),
            ("set-cookie", "sid=ALICE-rotated"),
            ("set-cookie2", "old=1"),
            (
                "cache-control",
                "max-age=60, private=\"x-user\", no-cache=\"X-Debug\"",
            ),
            ("x-user", "alice"),
            ("x-debug", "1"),
            ("x-shared", "yes"),
        ],
    );
    let r = refresh(&head, &req(&[]), &not_modified, at(1), at(2)).expect("refreshed");
    let h = &r.head.response_headers;
    for field in ["set-cookie", "set-cookie2", "x-user", "x-debug"] {
        assert!(!h.contains_key(field), "{field} stored");
        assert!(
            r.client_only.contains_key(field),
            "{field} not given to the client"
        );
    }
    assert_eq!(h["x-shared"], "yes");
    assert!(!r.client_only.contains_key("x-shared"));
}

/// RFC 9111 3.2: fields describing the stored body are never replaced by a 304.
#[test]
fn refresh_keeps_the_stored_validator_and_digest() {
    let head = refresh_base();
    let not_modified = res_with(
        304,
        &[
            ("etag", "W/\"v1\""),
            ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
        ],
    );
    let r = refresh(&head, &req(&[]), &not_modified, at(1), at(2)).expect("refreshed");
    assert_eq!(r.head.response_headers["etag"], "\"v1\"");
    assert!(!r.head.response_headers.contains_key("content-md5"));
}

#[test]
fn refresh_validator_selection() {
    let head = refresh_base();
    let weak_head = head_with(
        &[("cache-control", "max-age=60"), ("etag", "W/\"v1\"")],
        &[],
    );
    let lm_only = head_with(
        &[
            ("cache-control", "max-age=60"),
            ("last-modified", &date(-100)),
        ],
        &[],
    );
    let no_validators = head_with(&[("cache-control", "max-age=60")], &[]);
    type Case<'a> = (&'a StoredHead, u16, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case<'_>> = vec![
        (&head, 304, vec![("etag", "\"v1\"".into())], true),
        (&head, 304, vec![("etag", "\"v2\"".into())], false),
        (&head, 304, vec![("etag", "W/\"v1\"".into())], true),
        (&weak_head, 304, vec![("etag", "\"v1\"".into())], false),
        (&weak_head, 304, vec![("etag", "W/\"v1\"".into())], true),
        (&lm_only, 304, vec![("last-modified", date(-100))], true),
        (&lm_only, 304, vec![("last-modified", date(-99))], false),
        // A 304 without validators answers the conditional request made with the stored
        // response's validators: it refreshes that response (RFC 9111 4.3.3).
        (&head, 304, vec![], true),
        (&lm_only, 304, vec![], true),
        (&weak_head, 304, vec![], true),
        (&no_validators, 304, vec![], true),
        (&no_validators, 304, vec![("etag", "\"v1\"".into())], false),
        (&head, 200, vec![("etag", "\"v1\"".into())], false),
    ];
    for (i, (h, status, pairs, expect)) in cases.into_iter().enumerate() {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = refresh(h, &req(&[]), &res_with(status, &pairs), at(1), at(2)).is_some();
        assert_eq!(got, expect, "case {i}");
    }
}

/// RFC 9111 4.3.5: a 200 to a HEAD freshens the stored GET response when validators match,
/// keeps the fields it did not receive, and invalidates it when they do not match.
#[test]
fn rfc9111_4_3_5_freshening_with_head() {
    let head = refresh_base(); // etag "v1", last-modified, content-length 10, body_len 10
    let lm = date(-100);
    type Case<'a> = (u16, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            200,
            vec![
                ("etag", "\"v1\"".into()),
                ("last-modified", lm.clone()),
                ("cache-control", "max-age=1000".into()),
                ("x-new", "2".into()),
                ("content-length", "10".into()),
                ("date", date(1000)),
            ],
            "fresh",
        ),
        (
            200,
            vec![("etag", "\"v2\"".into()), ("last-modified", lm.clone())],
            "invalidate",
        ),
        (
            200,
            vec![("etag", "\"v1\"".into()), ("last-modified", date(-5))],
            "invalidate",
        ),
        (200, vec![("last-modified", lm.clone())], "invalidate"),
        (
            200,
            vec![
                ("etag", "\"v1\"".into()),
                ("last-modified", lm.clone()),
                ("content-length", "11".into()),
            ],
            "invalidate",
        ),
        (410, vec![("etag", "\"v2\"".into())], "ignore"),
    ];
    for (i, (status, pairs, expect)) in cases.into_iter().enumerate() {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = freshen_with_head(
            &head,
            &req(&[]),
            &res_with(status, &pairs),
            at(1000),
            at(1000),
        );
        match (got, expect) {
            (HeadUpdate::Freshened(r), "fresh") => {
                let h = &r.head.response_headers;
                assert_eq!(h["cache-control"], "max-age=1000");
                assert_eq!(h["x-new"], "2");
                assert_eq!(h["x-old"], "1", "fields not received are kept");
                assert_eq!(h["content-type"], "text/plain");
                assert_eq!(r.head.body_len, head.body_len);
                assert_eq!(
                    summary(&lookup(
                        &r.head,
                        &req(&[]),
                        at(1500),
                        &LookupOptions::default()
                    )),
                    "fresh ttl=500"
                );
            }
            (HeadUpdate::Invalidate, "invalidate") | (HeadUpdate::Ignore, "ignore") => {}
            (got, _) => panic!("case {i}: expected {expect}, got {got:?}"),
        }
    }
}

/// RFC 9111 4.3.4: a 304 whose strong ETag differs from the stored one updates nothing.
#[test]
fn rfc9111_4_3_4_304_selects_by_validator() {
    let head = refresh_base();
    let other = res_with(304, &[("etag", "\"v2\""), ("cache-control", "max-age=999")]);
    assert!(refresh(&head, &req(&[]), &other, at(1), at(2)).is_none());
    let lm_mismatch = res_with(304, &[("last-modified", &date(-1))]);
    assert!(refresh(&head, &req(&[]), &lm_mismatch, at(1), at(2)).is_none());
    let same = res_with(304, &[("etag", "\"v1\""), ("cache-control", "max-age=999")]);
    let r = refresh(&head, &req(&[]), &same, at(1), at(2)).expect("selected");
    assert_eq!(r.head.response_headers["cache-control"], "max-age=999");
}

#[test]
fn rfc9111_4_3_4_only_a_strong_etag_selects_a_variant_for_another_request() {
    // Session 11, finding 1: a weak tag shared by the br and the gzip variant selected br for
    // a gzip-only request.
    let strong = head_with(&[("etag", "\"x\"")], &[]);
    let weak = head_with(&[("etag", "W/\"x\"")], &[]);
    let both = head_with(&[("etag", "\"x\""), ("last-modified", &date(-100))], &[]);
    let lm_only = head_with(&[("last-modified", &date(-100))], &[]);
    type Case<'a> = (&'a StoredHead, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case<'_>> = vec![
        (&strong, vec![("etag", "\"x\"".into())], true),
        (&both, vec![("etag", " \"x\"".into())], true),
        (&strong, vec![("etag", "\"y\"".into())], false),
        (&strong, vec![("etag", "W/\"x\"".into())], false),
        (&weak, vec![("etag", "W/\"x\"".into())], false),
        (&weak, vec![("etag", "\"x\"".into())], false),
        (&both, vec![("last-modified", date(-100))], false),
        (&lm_only, vec![("last-modified", date(-100))], false),
        (&strong, vec![], false),
    ];
    for (i, (h, pairs, expect)) in cases.into_iter().enumerate() {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = selects_for_another_request(h, &res_with(304, &pairs).headers);
        assert_eq!(got, expect, "case {i}");
    }
}
