use std::time::UNIX_EPOCH;

use http::{HeaderValue, Response};

use super::*;
use crate::http_cache::headers::fmt_http_date;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}
fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        t0() + Duration::from_secs(secs as u64)
    } else {
        t0() - Duration::from_secs((-secs) as u64)
    }
}
use crate::http_cache::testing::header_map as map;
fn req_with(method: Method, pairs: &[(&str, &str)]) -> request::Parts {
    let (mut p, ()) = Request::new(()).into_parts();
    p.method = method;
    p.uri = "https://example.org/a".parse().unwrap();
    p.headers = map(pairs);
    p
}
fn req(pairs: &[(&str, &str)]) -> request::Parts {
    req_with(Method::GET, pairs)
}
fn res_with(status: u16, pairs: &[(&str, &str)]) -> response::Parts {
    let (mut p, ()) = Response::new(()).into_parts();
    p.status = StatusCode::from_u16(status).unwrap();
    p.headers = map(pairs);
    p
}
/// A head received at t0 (request and response at t0), `Date: t0` unless given.
fn head_with(res_pairs: &[(&str, &str)], req_pairs: &[(&str, &str)]) -> StoredHead {
    let mut res = res_with(200, res_pairs);
    if !res.headers.contains_key(header::DATE) {
        res.headers.insert(
            header::DATE,
            HeaderValue::from_str(&fmt_http_date(t0())).unwrap(),
        );
    }
    StoredHead::new(
        &req(req_pairs),
        &res,
        t0(),
        t0(),
        10,
        1,
        Duration::from_millis(5),
    )
}
fn summary(l: &Lookup) -> String {
    match l {
        Lookup::Fresh { ttl, headers } => {
            assert!(headers.contains_key(header::AGE));
            format!("fresh ttl={}", ttl.as_secs())
        }
        Lookup::Stale {
            serve_stale_while_revalidate,
            stale_if_error_until,
            ..
        } => {
            let mut s = "stale".to_owned();
            if *serve_stale_while_revalidate {
                s.push_str(" swr");
            }
            if let Some(u) = stale_if_error_until {
                s.push_str(&format!(
                    " sie={}",
                    u.duration_since(t0()).unwrap().as_secs()
                ));
            }
            s
        }
        Lookup::Mismatch => "mismatch".to_owned(),
    }
}

macro_rules! decide {
    ($name:ident, res[$($rk:expr => $rv:expr),*], req[$($qk:expr => $qv:expr),*], at $secs:expr, $expect:expr) => {
        #[test]
        fn $name() {
            let head = head_with(&[$(($rk, $rv)),*], &[]);
            let r = req(&[$(($qk, $qv)),*]);
            let got = lookup(&head, &r, at($secs), &LookupOptions::default());
            assert_eq!(summary(&got), $expect);
        }
    };
}

fn date(secs: i64) -> String {
    fmt_http_date(at(secs))
}

// explicit freshness
decide!(max_age_fresh, res["cache-control" => "max-age=60"], req[], at 30, "fresh ttl=30");
decide!(max_age_boundary_stale, res["cache-control" => "max-age=60"], req[], at 60, "stale");
decide!(s_maxage_wins_over_max_age, res["cache-control" => "max-age=10, s-maxage=60"], req[], at 30, "fresh ttl=30");
decide!(expires_fresh, res["expires" => &date(100)], req[], at 50, "fresh ttl=50");
decide!(max_age_beats_expires, res["expires" => &date(100), "cache-control" => "max-age=10"], req[], at 50, "stale");
decide!(expires_invalid_is_past, res["expires" => "0"], req[], at 0, "stale");
decide!(age_header_counts, res["cache-control" => "max-age=60", "age" => "20"], req[], at 30, "fresh ttl=10");
decide!(apparent_age_from_date, res["cache-control" => "max-age=60", "date" => &date(-30)], req[], at 10, "fresh ttl=20");
// heuristic: 10% of Date - Last-Modified = 100 s
decide!(heuristic_fresh, res["last-modified" => &date(-1000)], req[], at 50, "fresh ttl=50");
decide!(heuristic_stale, res["last-modified" => &date(-1000)], req[], at 100, "stale");
decide!(no_validator_no_freshness, res[], req[], at 0, "stale");
// response directives
decide!(response_no_cache, res["cache-control" => "max-age=60, no-cache"], req[], at 1, "stale");
decide!(response_pragma_without_cc, res["pragma" => "no-cache", "expires" => &date(60)], req[], at 1, "stale");
decide!(proxy_revalidate_still_fresh, res["cache-control" => "max-age=60, proxy-revalidate"], req[], at 30, "fresh ttl=30");
// RFC 8246 2.1: immutable gives no lifetime of its own, and is honoured only while fresh.
decide!(immutable_default, res["cache-control" => "immutable"], req[], at 3600, "stale");
decide!(rfc8246_immutable_fresh_reused_on_reload, res["cache-control" => "max-age=60, immutable"], req["cache-control" => "max-age=0"], at 30, "fresh ttl=30");
decide!(rfc8246_immutable_stale_revalidated, res["cache-control" => "max-age=60, immutable"], req[], at 61, "stale");
decide!(rfc8246_immutable_stale_reload_revalidated, res["cache-control" => "max-age=60, immutable"], req["cache-control" => "max-age=0"], at 61, "stale");
decide!(rfc8246_immutable_force_reload_no_cache, res["cache-control" => "max-age=60, immutable"], req["cache-control" => "no-cache"], at 30, "stale");
// RFC 9111 5.2.2.4: qualified no-cache restricts fields, not the whole response.
decide!(rfc9111_5_2_2_4_qualified_no_cache_fresh, res["cache-control" => "max-age=60, no-cache=\"x-a\""], req[], at 30, "fresh ttl=30");
decide!(rfc9111_5_2_case_insensitive_no_cache_response, res["cache-control" => "max-age=60, No-CaChE"], req[], at 1, "stale");
decide!(rfc9111_5_2_case_insensitive_request_max_age, res["cache-control" => "max-age=60"], req["cache-control" => "MaX-AgE=0"], at 1, "stale");
decide!(rfc9111_5_1_invalid_age_is_ignored, res["cache-control" => "max-age=60", "age" => "1.5"], req[], at 1, "fresh ttl=59");
decide!(rfc9111_5_1_age_list_first_member, res["cache-control" => "max-age=60", "age" => "20, 0"], req[], at 30, "fresh ttl=10");
decide!(rfc9111_1_2_2_invalid_request_max_age_ignored, res["cache-control" => "max-age=60"], req["cache-control" => "max-age=0x"], at 1, "fresh ttl=59");
// request directives
decide!(request_no_cache, res["cache-control" => "max-age=60"], req["cache-control" => "no-cache"], at 1, "stale");
decide!(request_pragma_no_cache, res["cache-control" => "max-age=60"], req["pragma" => "no-cache"], at 1, "stale");
decide!(request_pragma_ignored_with_cc, res["cache-control" => "max-age=60"], req["pragma" => "no-cache", "cache-control" => "max-stale=1"], at 1, "fresh ttl=59");
decide!(request_max_age_0, res["cache-control" => "max-age=60"], req["cache-control" => "max-age=0"], at 1, "stale");
decide!(request_max_age_larger, res["cache-control" => "max-age=60"], req["cache-control" => "max-age=100"], at 30, "fresh ttl=30");
decide!(request_min_fresh_unmet, res["cache-control" => "max-age=60"], req["cache-control" => "min-fresh=40"], at 30, "stale");
decide!(request_min_fresh_met, res["cache-control" => "max-age=60"], req["cache-control" => "min-fresh=20"], at 30, "fresh ttl=30");
decide!(max_stale_bare, res["cache-control" => "max-age=60"], req["cache-control" => "max-stale"], at 1000, "fresh ttl=0");
decide!(max_stale_within, res["cache-control" => "max-age=60"], req["cache-control" => "max-stale=10"], at 70, "fresh ttl=0");
decide!(max_stale_beyond, res["cache-control" => "max-age=60"], req["cache-control" => "max-stale=10"], at 71, "stale");
decide!(max_stale_vs_must_revalidate, res["cache-control" => "max-age=60, must-revalidate"], req["cache-control" => "max-stale"], at 61, "stale");
decide!(max_stale_vs_proxy_revalidate, res["cache-control" => "max-age=60, proxy-revalidate"], req["cache-control" => "max-stale"], at 61, "stale");
decide!(max_stale_vs_s_maxage, res["cache-control" => "s-maxage=60"], req["cache-control" => "max-stale"], at 61, "stale");
decide!(max_stale_vs_no_cache, res["cache-control" => "no-cache"], req["cache-control" => "max-stale"], at 1, "stale");
decide!(max_stale_with_max_age_0, res["cache-control" => "max-age=60"], req["cache-control" => "max-stale, max-age=0"], at 61, "stale");
// RFC 5861
decide!(swr_inside, res["cache-control" => "max-age=60, stale-while-revalidate=30"], req[], at 80, "stale swr");
decide!(swr_edge, res["cache-control" => "max-age=60, stale-while-revalidate=30"], req[], at 90, "stale swr");
decide!(swr_outside, res["cache-control" => "max-age=60, stale-while-revalidate=30"], req[], at 91, "stale");
decide!(swr_not_with_must_revalidate, res["cache-control" => "max-age=60, must-revalidate, stale-while-revalidate=30"], req[], at 80, "stale");
decide!(swr_not_for_no_cache_request, res["cache-control" => "max-age=60, stale-while-revalidate=30"], req["cache-control" => "no-cache"], at 80, "stale");
decide!(swr_not_when_fresh_but_max_age_0, res["cache-control" => "max-age=60, stale-while-revalidate=30"], req["cache-control" => "max-age=0"], at 10, "stale");
decide!(swr_with_s_maxage, res["cache-control" => "s-maxage=60, stale-while-revalidate=30"], req[], at 80, "stale swr");
decide!(sie_inside, res["cache-control" => "max-age=60, stale-if-error=100"], req[], at 80, "stale sie=160");
decide!(sie_expired, res["cache-control" => "max-age=60, stale-if-error=100"], req[], at 160, "stale");
decide!(sie_not_with_must_revalidate, res["cache-control" => "max-age=60, must-revalidate, stale-if-error=100"], req[], at 80, "stale");
decide!(sie_request, res["cache-control" => "max-age=60"], req["cache-control" => "stale-if-error=50"], at 80, "stale sie=110");
decide!(sie_request_overrides_response, res["cache-control" => "max-age=60, stale-if-error=5"], req["cache-control" => "stale-if-error=50"], at 80, "stale sie=110");
decide!(sie_request_not_with_s_maxage, res["cache-control" => "s-maxage=60"], req["cache-control" => "stale-if-error=50"], at 80, "stale");
decide!(sie_response_not_for_no_cache_request, res["cache-control" => "max-age=60, stale-if-error=100"], req["cache-control" => "no-cache"], at 80, "stale");
// Vary
decide!(vary_star_never_matches, res["cache-control" => "max-age=60", "vary" => "*"], req[], at 1, "mismatch");

#[test]
fn heuristic_capped_by_option() {
    let head = head_with(&[("last-modified", &date(-1000))], &[]);
    let opts = LookupOptions {
        max_heuristic_ttl: Some(Duration::from_secs(20)),
        ..Default::default()
    };
    assert_eq!(
        summary(&lookup(&head, &req(&[]), at(19), &opts)),
        "fresh ttl=1"
    );
    assert_eq!(summary(&lookup(&head, &req(&[]), at(20), &opts)), "stale");
    // explicit freshness is not capped
    let head = head_with(&[("cache-control", "max-age=60")], &[]);
    assert_eq!(
        summary(&lookup(&head, &req(&[]), at(30), &opts)),
        "fresh ttl=30"
    );
}

#[test]
fn vary_matching_uses_normalised_values() {
    let head = head_with(
        &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
        &[("accept-encoding", "gzip, br")],
    );
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("accept-encoding", "GZIP,br")], "fresh ttl=59"),
        (
            &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
            "fresh ttl=59",
        ),
        (&[("accept-encoding", "br")], "mismatch"),
        (&[], "mismatch"),
    ];
    for (headers, expect) in cases {
        assert_eq!(
            summary(&lookup(
                &head,
                &req(headers),
                at(1),
                &LookupOptions::default()
            )),
            *expect,
            "{headers:?}"
        );
    }
}

#[test]
fn a_variant_stored_under_the_old_list_key_is_not_served_for_another_spelling() {
    // Before session 11 every field was normalised as a list, so a row stored for
    // `X-Layout: a,,b` sits under the key `a, b` would have now. Found by that key, it is
    // still checked against its own request fields under the new rule: a mismatch.
    let head = head_with(
        &[("cache-control", "max-age=60"), ("vary", "X-Layout")],
        &[("x-layout", "a,,b")],
    );
    let o = LookupOptions::default();
    for (value, expect) in [("a, b", "mismatch"), ("a,,b", "fresh ttl=59")] {
        let got = summary(&lookup(&head, &req(&[("x-layout", value)]), at(1), &o));
        assert_eq!(got, expect, "{value}");
    }
}

#[test]
fn methods() {
    let head = head_with(&[("cache-control", "max-age=60")], &[]);
    let o = LookupOptions::default();
    assert_eq!(
        summary(&lookup(&head, &req_with(Method::HEAD, &[]), at(1), &o)),
        "fresh ttl=59"
    );
    assert_eq!(
        summary(&lookup(&head, &req_with(Method::POST, &[]), at(1), &o)),
        "mismatch"
    );
}

#[test]
fn fresh_headers_carry_age_and_keep_date() {
    let head = head_with(&[("cache-control", "max-age=60"), ("age", "5")], &[]);
    let Lookup::Fresh { headers, .. } = lookup(&head, &req(&[]), at(10), &LookupOptions::default())
    else {
        panic!("expected fresh")
    };
    assert_eq!(headers["age"], "15");
    assert_eq!(headers["date"], date(0).as_str());
}

#[test]
fn revalidation_request_uses_stored_validators() {
    let head = head_with(
        &[
            ("cache-control", "max-age=1"),
            ("etag", "\"v1\""),
            ("last-modified", &date(-100)),
        ],
        &[],
    );
    let client = req_with(
        Method::HEAD,
        &[
            ("if-none-match", "\"client\""),
            ("if-modified-since", &date(-5)),
            ("range", "bytes=0-1"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("accept", "text/html"),
        ],
    );
    let Lookup::Stale {
        revalidate, age, ..
    } = lookup(&head, &client, at(5), &LookupOptions::default())
    else {
        panic!("expected stale")
    };
    assert_eq!(age, Duration::from_secs(5));
    assert_eq!(revalidate.method, Method::GET);
    assert_eq!(revalidate.uri, "https://example.org/a");
    let h = &revalidate.headers;
    assert_eq!(h["if-none-match"], "\"v1\"");
    assert_eq!(h["if-modified-since"], date(-100).as_str());
    assert_eq!(h["accept"], "text/html");
    for gone in ["range", "connection", "x-hop"] {
        assert!(!h.contains_key(gone), "{gone}");
    }
}

#[test]
fn only_if_cached_directive() {
    assert!(only_if_cached(&req(&[(
        "cache-control",
        "max-stale, Only-If-Cached"
    )])));
    assert!(!only_if_cached(&req(&[("cache-control", "no-cache")])));
}

macro_rules! storable {
    ($name:ident, $method:expr, req[$($qk:expr => $qv:expr),*], $status:expr, res[$($rk:expr => $rv:expr),*], $expect:expr) => {
        #[test]
        fn $name() {
            let r = req_with($method, &[$(($qk, $qv)),*]);
            let s = res_with($status, &[$(($rk, $rv)),*]);
            assert_eq!(storability(&r, &s, &LookupOptions::default()), $expect);
        }
    };
}
use NotStorable as N;
storable!(st_max_age, Method::GET, req[], 200, res["cache-control" => "max-age=60"], Ok(()));
storable!(st_default_cacheable, Method::GET, req[], 200, res[], Ok(()));
storable!(st_no_cache_storable, Method::GET, req[], 200, res["cache-control" => "no-cache"], Ok(()));
storable!(st_post, Method::POST, req[], 200, res["cache-control" => "max-age=60"], Err(N::Method));
storable!(st_head, Method::HEAD, req[], 200, res["cache-control" => "max-age=60"], Err(N::Method));
storable!(st_no_store_res, Method::GET, req[], 200, res["cache-control" => "max-age=60, No-Store"], Err(N::NoStore));
storable!(st_no_store_req, Method::GET, req["cache-control" => "no-store"], 200, res["cache-control" => "max-age=60"], Err(N::NoStore));
storable!(st_private, Method::GET, req[], 200, res["cache-control" => "private, max-age=60"], Err(N::Private));
// RFC 9111 5.2.2.7: qualified private withholds the fields, the rest is stored.
storable!(st_private_qualified, Method::GET, req[], 200, res["cache-control" => "private=\"x-user\", max-age=60"], Ok(()));
storable!(rfc9111_5_2_case_insensitive_private, Method::GET, req[], 200, res["cache-control" => "PRIVATE, max-age=60"], Err(N::Private));
storable!(st_auth_plain, Method::GET, req["authorization" => "Basic x"], 200, res["cache-control" => "max-age=60"], Err(N::Authorization));
storable!(st_auth_public, Method::GET, req["authorization" => "Basic x"], 200, res["cache-control" => "public, max-age=60"], Ok(()));
storable!(st_auth_s_maxage, Method::GET, req["authorization" => "Basic x"], 200, res["cache-control" => "s-maxage=60"], Ok(()));
storable!(st_auth_must_revalidate, Method::GET, req["authorization" => "Basic x"], 200, res["cache-control" => "max-age=60, must-revalidate"], Ok(()));
storable!(st_206, Method::GET, req[], 206, res["cache-control" => "max-age=60"], Err(N::Range));
storable!(st_range_request, Method::GET, req["range" => "bytes=0-9"], 200, res["cache-control" => "max-age=60"], Err(N::Range));
// RFC 9111 3: any final status with explicit freshness is storable.
storable!(st_500, Method::GET, req[], 500, res["cache-control" => "max-age=60"], Ok(()));
storable!(rfc9111_3_explicit_299, Method::GET, req[], 299, res["cache-control" => "max-age=60"], Ok(()));
storable!(rfc9111_3_explicit_400_expires, Method::GET, req[], 400, res["expires" => "Thu, 01 Jan 2037 00:00:00 GMT"], Ok(()));
storable!(rfc9111_3_explicit_499_s_maxage, Method::GET, req[], 499, res["cache-control" => "s-maxage=60"], Ok(()));
storable!(rfc9111_3_plain_500, Method::GET, req[], 500, res[], Err(N::NoFreshness));
storable!(rfc9111_3_plain_299, Method::GET, req[], 299, res[], Err(N::NoFreshness));
storable!(rfc9111_4_2_2_public_299, Method::GET, req[], 299, res["cache-control" => "public"], Ok(()));
storable!(rfc9111_3_interim_103, Method::GET, req[], 103, res["cache-control" => "max-age=60"], Err(N::Status));
storable!(rfc9111_5_2_case_insensitive_no_store, Method::GET, req[], 200, res["cache-control" => "max-age=60, NO-STORE"], Err(N::NoStore));
storable!(st_304, Method::GET, req[], 304, res["cache-control" => "max-age=60"], Err(N::Status));
storable!(st_vary_star, Method::GET, req[], 200, res["cache-control" => "max-age=60", "vary" => "accept, *"], Err(N::VaryAny));
storable!(st_set_cookie, Method::GET, req[], 200, res["cache-control" => "max-age=60", "set-cookie" => "a=1"], Err(N::SetCookie));
storable!(st_set_cookie_public, Method::GET, req[], 200, res["cache-control" => "public, max-age=60", "set-cookie" => "a=1"], Ok(()));
storable!(rfc9111_5_2_2_3_must_understand_understood_status_ignores_no_store, Method::GET, req[], 200, res["cache-control" => "max-age=60, no-store, must-understand"], Ok(()));
storable!(rfc9111_5_2_2_3_must_understand_unknown_status_not_stored, Method::GET, req[], 299, res["cache-control" => "max-age=60, no-store, must-understand"], Err(N::Status));
storable!(rfc9111_5_2_2_3_must_understand_unknown_status_without_no_store, Method::GET, req[], 599, res["cache-control" => "max-age=60, must-understand"], Err(N::Status));
storable!(rfc9111_5_2_2_3_must_understand_keeps_request_no_store, Method::GET, req["cache-control" => "no-store"], 200, res["cache-control" => "max-age=60, no-store, must-understand"], Err(N::NoStore));
storable!(rfc9111_5_2_2_3_must_understand_keeps_private, Method::GET, req[], 200, res["cache-control" => "max-age=60, no-store, must-understand, private"], Err(N::Private));
storable!(st_private_empty_field_list_is_private, Method::GET, req[], 200, res["cache-control" => "private=, max-age=60"], Err(N::Private));
storable!(st_private_empty_quoted_list_is_private, Method::GET, req[], 200, res["cache-control" => "max-age=60, private=\"\""], Err(N::Private));
storable!(st_private_blank_members_is_private, Method::GET, req[], 200, res["cache-control" => "max-age=60, private=\" , \""], Err(N::Private));
storable!(st_set_cookie2, Method::GET, req[], 200, res["cache-control" => "max-age=60", "set-cookie2" => "a=1"], Err(N::SetCookie));
storable!(st_set_cookie2_public, Method::GET, req[], 200, res["cache-control" => "public, max-age=60", "set-cookie2" => "a=1"], Ok(()));
storable!(rfc9111_5_2_2_4_set_cookie_withheld_by_no_cache, Method::GET, req[], 200, res["cache-control" => "max-age=60, no-cache=\"Set-Cookie\"", "set-cookie" => "a=1"], Ok(()));
storable!(rfc9111_5_2_2_7_set_cookie_withheld_by_private, Method::GET, req[], 200, res["cache-control" => "max-age=60, private=\"set-cookie, set-cookie2\"", "set-cookie" => "a=1", "set-cookie2" => "b=1"], Ok(()));
storable!(st_set_cookie2_not_withheld, Method::GET, req[], 200, res["cache-control" => "max-age=60, private=\"Set-Cookie\"", "set-cookie" => "a=1", "set-cookie2" => "b=1"], Err(N::SetCookie));
storable!(st_302_plain, Method::GET, req[], 302, res[], Err(N::NoFreshness));
storable!(st_302_max_age, Method::GET, req[], 302, res["cache-control" => "max-age=60"], Ok(()));
storable!(st_404_default, Method::GET, req[], 404, res[], Ok(()));

macro_rules! invalidates {
    ($name:ident, $method:expr, $status:expr, [$($k:expr => $v:expr),*], [$($uri:expr),*]) => {
        #[test]
        fn $name() {
            let target: Uri = "https://example.org/d/e/f".parse().unwrap();
            let got: Vec<String> = invalidation_targets(&target, &$method, StatusCode::from_u16($status).unwrap(), &map(&[$(($k, $v)),*]))
                .iter()
                .map(|u| u.to_string())
                .collect();
            let expect: Vec<&str> = vec![$($uri),*];
            assert_eq!(got, expect);
        }
    };
}
invalidates!(inv_get_nothing, Method::GET, 200, ["location" => "/x"], []);
invalidates!(inv_post_error_nothing, Method::POST, 500, [], []);
invalidates!(inv_post_4xx_nothing, Method::POST, 404, [], []);
invalidates!(
    inv_delete_target,
    Method::DELETE,
    204,
    [],
    ["https://example.org/d/e/f"]
);
invalidates!(
    inv_post_locations,
    Method::POST,
    201,
    ["location" => "../x?y#frag", "content-location" => "https://EXAMPLE.org:443/c", "location" => "https://evil.org/x", "content-location" => "http://example.org/c"],
    ["https://example.org/d/e/f", "https://example.org/d/x?y", "https://EXAMPLE.org:443/c"]
);
invalidates!(inv_put_redirect_dedup, Method::PUT, 303, ["location" => "f", "content-location" => "/d/e/f"], ["https://example.org/d/e/f"]);

#[test]
fn rfc3986_reference_resolution() {
    let base: Uri = "http://a/b/c/d;p?q".parse().unwrap();
    let cases = [
        ("g", "http://a/b/c/g"),
        ("./g", "http://a/b/c/g"),
        ("g/", "http://a/b/c/g/"),
        ("/g", "http://a/g"),
        ("?y", "http://a/b/c/d;p?y"),
        ("g?y", "http://a/b/c/g?y"),
        ("#s", "http://a/b/c/d;p?q"),
        ("", "http://a/b/c/d;p?q"),
        (".", "http://a/b/c/"),
        ("..", "http://a/b/"),
        ("../g", "http://a/b/g"),
        ("../../g", "http://a/g"),
        ("../../../g", "http://a/g"),
        ("/./g", "http://a/g"),
        ("g;x=1/../y", "http://a/b/c/y"),
        ("https://z/q", "https://z/q"),
    ];
    for (r, expect) in cases {
        assert_eq!(
            resolve_reference(&base, r)
                .map(|u| u.to_string())
                .as_deref(),
            Some(expect),
            "{r:?}"
        );
    }
}

#[test]
fn forced_by_request_reasons() {
    let head = head_with(&[("cache-control", "max-age=60")], &[]);
    let o = LookupOptions::default();
    type Case<'a> = (&'a [(&'a str, &'a str)], i64, Option<RequestReason>);
    let cases: &[Case<'_>] = &[
        (
            &[("cache-control", "no-cache")],
            10,
            Some(RequestReason::NoCache),
        ),
        (&[("pragma", "no-cache")], 10, Some(RequestReason::NoCache)),
        (
            &[("cache-control", "max-age=0")],
            10,
            Some(RequestReason::MaxAge),
        ),
        (
            &[("cache-control", "min-fresh=55")],
            10,
            Some(RequestReason::MinFresh),
        ),
        (&[("cache-control", "max-age=0")], 70, None),
        (&[], 10, None),
    ];
    for (headers, secs, expect) in cases {
        assert_eq!(
            forced_by_request(&head, &req(headers), at(*secs), &o),
            *expect,
            "{headers:?} at {secs}"
        );
    }
}

#[test]
fn xfetch() {
    let expire = at(100);
    let d = Duration::from_secs(2);
    // u = 1: ln(1) = 0, only due once expired
    assert!(!xfetch_due(at(99), expire, d, 1.0, 1.0));
    assert!(xfetch_due(at(100), expire, d, 1.0, 1.0));
    // u = e^-1: gap = delta * beta = 2 s
    let u = (-1.0f64).exp();
    assert!(xfetch_due(at(98), expire, d, 1.0, u));
    assert!(!xfetch_due(at(97), expire, d, 1.0, u));
    assert!(xfetch_due(at(96), expire, d, 2.0, u));
    // degenerate inputs never panic
    assert!(xfetch_due(at(0), expire, d, 1.0, 0.0));
    assert!(xfetch_due(
        at(0),
        expire,
        Duration::MAX,
        f64::INFINITY,
        f64::NAN
    ));
}

/// RFC 9111 5.2.2.4 / 5.2.2.7: the fields a qualified no-cache / private names are not
/// stored; the rest of the response is.
#[test]
fn rfc9111_5_2_2_7_qualified_fields_not_stored() {
    let head = head_with(
        &[
            (
                "cache-control",
                "max-age=60, Private=\"X-User\", no-cache=\"x-debug, x-trace\"",
            ),
            ("x-user", "alice"),
            ("x-debug", "1"),
            ("x-trace", "2"),
            ("x-shared", "yes"),
        ],
        &[],
    );
    let h = &head.response_headers;
    for gone in ["x-user", "x-debug", "x-trace"] {
        assert!(!h.contains_key(gone), "{gone} stored");
    }
    assert_eq!(h["x-shared"], "yes");
    assert_eq!(
        summary(&lookup(&head, &req(&[]), at(1), &LookupOptions::default())),
        "fresh ttl=59"
    );
}

/// The 304 refresh, HEAD freshening and what a 304 selects (RFC 9111 4.3.3-4.3.5).
mod refresh;
