//! RFC 9111 conformance through the proxy, one test per requirement, named after its section
//! (README "RFC conformance" lists them). Staleness comes from invalid or zero freshness,
//! never from sleeping.

use std::time::{Duration, SystemTime};

use hoard::http_cache::fmt_http_date;

use super::harness::*;

fn now_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    fmt_http_date(t)
}

/// An origin answering every request with `headers` (owned, so dates can be computed) and
/// counting requests.
async fn origin(status: u16, headers: Vec<(&'static str, String)>) -> Origin {
    Origin::start(move |_| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        reply(status, &h, "body")
    })
    .await
}

/// Two GETs of one URL: how many reached the origin.
async fn origin_requests_for_two_gets(status: u16, headers: Vec<(&'static str, String)>) -> usize {
    let origin = origin(status, headers).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/r");
    let first = get(proxy, &url).await;
    assert_eq!(first.status, status);
    // Let a fill commit before the second request (bounded).
    for _ in 0..20 {
        if send(
            proxy,
            "GET",
            &url,
            &[("cache-control", "only-if-cached, max-stale=3600")],
        )
        .await
        .status
            == status
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = get(proxy, &url).await;
    assert_eq!(second.status, status);
    origin.hits()
}

fn cc(v: &str) -> Vec<(&'static str, String)> {
    vec![("cache-control", v.to_string())]
}

#[tokio::test]
async fn rfc9111_5_2_case_insensitive_directive_names() {
    assert_eq!(
        origin_requests_for_two_gets(200, cc("MaX-AgE=3600")).await,
        1
    );
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=3600, No-CaChE")).await,
        2
    );
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=3600, NO-STORE")).await,
        2
    );
}

#[tokio::test]
async fn rfc9111_1_2_2_invalid_delta_seconds_is_stale() {
    for v in [
        "max-age=100a",
        "max-age=a100",
        "max-age=3600.5",
        "max-age =3600",
        "max-age= 3600",
    ] {
        assert_eq!(origin_requests_for_two_gets(200, cc(v)).await, 2, "{v}");
    }
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=003600")).await,
        1
    );
}

#[tokio::test]
async fn rfc9111_4_2_1_duplicate_max_age_first_is_used() {
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=3600, max-age=0")).await,
        1
    );
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=0, max-age=3600")).await,
        2
    );
}

#[tokio::test]
async fn rfc9111_5_1_age_first_member_and_invalid_is_ignored() {
    let with_age = |age: &str| {
        vec![
            ("cache-control", "max-age=3600".to_string()),
            ("age", age.to_string()),
        ]
    };
    assert_eq!(
        origin_requests_for_two_gets(200, with_age("10, 7200")).await,
        1
    );
    assert_eq!(
        origin_requests_for_two_gets(200, with_age("7200, 10")).await,
        2
    );
    // "a cache SHOULD ignore the field": fresh for its max-age, as without an Age.
    for bad in ["abc", "-7200", "10.0", "10;x=1"] {
        assert_eq!(
            origin_requests_for_two_gets(200, with_age(bad)).await,
            1,
            "{bad}"
        );
    }
}

/// `must-understand` (RFC 9111 5.2.2.3): for a status the cache understands, `no-store` is
/// ignored and the response is reused; for another status it is never stored.
#[tokio::test]
async fn rfc9111_5_2_2_3_must_understand_stores_understood_statuses_only() {
    let both = "max-age=3600, no-store, must-understand";
    assert_eq!(origin_requests_for_two_gets(200, cc(both)).await, 1);
    assert_eq!(origin_requests_for_two_gets(404, cc(both)).await, 1);
    assert_eq!(origin_requests_for_two_gets(299, cc(both)).await, 2);
    let alone = "max-age=3600, must-understand";
    assert_eq!(origin_requests_for_two_gets(299, cc(alone)).await, 2);
    assert_eq!(origin_requests_for_two_gets(200, cc(alone)).await, 1);
}

#[tokio::test]
async fn rfc9111_5_3_expires_formats_and_invalid() {
    let expires = |e: &str| vec![("date", now_date(0)), ("expires", e.to_string())];
    assert_eq!(
        origin_requests_for_two_gets(200, expires(&now_date(3600))).await,
        1
    );
    // RFC 850 and asctime, far in the future (and past the 32-bit boundary)
    assert_eq!(
        origin_requests_for_two_gets(200, expires("Saturday, 01-Jan-50 00:00:00 GMT")).await,
        1
    );
    assert_eq!(
        origin_requests_for_two_gets(200, expires("Sat Jan  1 00:00:00 2050")).await,
        1
    );
    assert_eq!(
        origin_requests_for_two_gets(200, expires("Fri, 31 Dec 9999 23:59:59 GMT")).await,
        1
    );
    for bad in [
        "0",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
    ] {
        assert_eq!(
            origin_requests_for_two_gets(200, expires(bad)).await,
            2,
            "{bad}"
        );
    }
    let two_lines = vec![
        ("date", now_date(0)),
        ("expires", now_date(3600)),
        ("expires", now_date(7200)),
    ];
    assert_eq!(origin_requests_for_two_gets(200, two_lines).await, 2);
}

#[tokio::test]
async fn rfc9111_3_any_final_status_with_explicit_freshness_is_stored() {
    for status in [299, 400, 499, 500] {
        assert_eq!(
            origin_requests_for_two_gets(status, cc("max-age=3600")).await,
            1,
            "{status}"
        );
    }
    let expires = vec![("date", now_date(0)), ("expires", now_date(3600))];
    assert_eq!(origin_requests_for_two_gets(400, expires).await, 1);
    assert_eq!(
        origin_requests_for_two_gets(499, cc("s-maxage=3600")).await,
        1
    );
    // no explicit freshness, not heuristically cacheable: not stored
    assert_eq!(origin_requests_for_two_gets(299, vec![]).await, 2);
}

#[tokio::test]
async fn rfc9111_4_2_2_public_allows_heuristic_freshness() {
    let lm = |public: bool| {
        let mut h = vec![("date", now_date(0)), ("last-modified", now_date(-100_000))];
        if public {
            h.push(("cache-control", "public".to_string()));
        }
        h
    };
    assert_eq!(origin_requests_for_two_gets(299, lm(true)).await, 1);
    assert_eq!(origin_requests_for_two_gets(299, lm(false)).await, 2);
    assert_eq!(origin_requests_for_two_gets(200, lm(false)).await, 1);
}

#[tokio::test]
async fn rfc9111_5_2_2_7_qualified_private_withholds_only_the_field() {
    let origin = origin(
        200,
        vec![
            ("cache-control", "max-age=3600, private=\"x-user\"".into()),
            ("x-user", "alice".into()),
            ("x-shared", "yes".into()),
        ],
    )
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/p");
    let first = fill(proxy, &url).await;
    assert_eq!(
        first.header("x-user"),
        Some("alice"),
        "the client it was for gets it"
    );
    let second = get(proxy, &url).await;
    second.cache_status().assert_hit();
    assert_eq!(second.header("x-user"), None, "served to another client");
    assert_eq!(second.header("x-shared"), Some("yes"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn rfc9111_5_2_2_4_qualified_no_cache_withholds_only_the_field() {
    let origin = origin(
        200,
        vec![
            ("cache-control", "max-age=3600, no-cache=\"x-debug\"".into()),
            ("x-debug", "1".into()),
            ("x-shared", "yes".into()),
        ],
    )
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/n");
    let first = fill(proxy, &url).await;
    assert_eq!(first.header("x-debug"), Some("1"));
    let second = get(proxy, &url).await;
    second.cache_status().assert_hit();
    assert_eq!(second.header("x-debug"), None);
    assert_eq!(second.header("x-shared"), Some("yes"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn rfc8246_immutable_fresh_survives_reload_stale_is_revalidated() {
    let fresh = origin(200, cc("max-age=3600, immutable")).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = fresh.url("/i");
    fill(proxy, &url).await;
    let reload = send(proxy, "GET", &url, &[("cache-control", "max-age=0")]).await;
    reload.cache_status().assert_hit();
    assert_eq!(fresh.hits(), 1);

    // Stale from the start (an invalid max-age): immutable does not make it reusable.
    assert_eq!(
        origin_requests_for_two_gets(200, cc("max-age=0, immutable")).await,
        2
    );
    assert_eq!(origin_requests_for_two_gets(200, cc("immutable")).await, 2);
}

#[tokio::test]
async fn rfc9110_13_1_3_if_modified_since_any_format_and_date_fallback() {
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    let origin = origin(
        200,
        vec![
            ("cache-control", "max-age=3600".into()),
            ("last-modified", LM.into()),
        ],
    )
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/ims");
    fill(proxy, &url).await;
    for ims in [
        LM,
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        let r = send(proxy, "GET", &url, &[("if-modified-since", ims)]).await;
        assert_eq!(r.status, 304, "{ims}");
    }
    let r = send(
        proxy,
        "GET",
        &url,
        &[("if-modified-since", "Sat Nov  5 08:49:37 1994")],
    )
    .await;
    assert_eq!(r.status, 200);

    // A fresh stored response without Last-Modified: its Date decides.
    let no_lm = super::rfc9111::origin(
        200,
        vec![
            ("cache-control", "max-age=3600".into()),
            ("date", now_date(-10)),
        ],
    )
    .await;
    let url = no_lm.url("/date");
    fill(proxy, &url).await;
    let r = send(proxy, "GET", &url, &[("if-modified-since", &now_date(0))]).await;
    assert_eq!(r.status, 304);
    r.cache_status().assert_hit();
    let r = send(
        proxy,
        "GET",
        &url,
        &[("if-modified-since", &now_date(-100))],
    )
    .await;
    assert_eq!(r.status, 200);
    r.cache_status().assert_hit();
    assert_eq!(no_lm.hits(), 1);
}

#[tokio::test]
async fn rfc9111_4_3_5_head_response_freshens_or_invalidates_the_stored_get() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // GET: stale at once (max-age=0), etag "v1". HEAD: a fresh lifetime and a new field,
    // with the etag of `head_etag`.
    async fn run(head_etag: &'static str) -> (RawResponse, usize) {
        let gets = Arc::new(AtomicUsize::new(0));
        let origin = Origin::start({
            let gets = gets.clone();
            move |req| {
                if req.method() == "HEAD" {
                    reply(
                        200,
                        &[
                            ("etag", head_etag),
                            ("cache-control", "max-age=3600"),
                            ("x-template", "2"),
                        ],
                        "",
                    )
                } else {
                    gets.fetch_add(1, Ordering::SeqCst);
                    reply(
                        200,
                        &[
                            ("etag", "\"v1\""),
                            ("cache-control", "max-age=0"),
                            ("x-template", "1"),
                            ("x-kept", "yes"),
                        ],
                        "0123456789",
                    )
                }
            }
        })
        .await;
        let (_p, proxy, _d) = start_proxy(None).await;
        let url = origin.url("/h");
        fill(proxy, &url).await;
        // A HEAD the cache forwards as HEAD (a range of a stale entry goes to the origin).
        let h = send(proxy, "HEAD", &url, &[("range", "bytes=0-1")]).await;
        assert_eq!(h.status, 200);
        assert_eq!(origin.count("HEAD", "/h"), 1);
        let after = get(proxy, &url).await;
        (after, gets.load(Ordering::SeqCst))
    }
    let (after, gets) = run("\"v1\"").await;
    after.cache_status().assert_hit();
    assert_eq!(after.header("x-template"), Some("2"), "updated field");
    assert_eq!(
        after.header("x-kept"),
        Some("yes"),
        "field the HEAD lacked is kept"
    );
    assert_eq!(after.text(), "0123456789");
    assert_eq!(gets, 1);

    let (after, gets) = run("\"v2\"").await;
    // Removed, not merely stale (that would be fwd=stale).
    after.cache_status().assert_miss();
    assert_eq!(gets, 2);
}

#[tokio::test]
async fn rfc9111_4_3_5_a_stale_entry_a_head_finds_is_revalidated_not_served() {
    // Stale at once; the origin answers a conditional GET with 304 and counts both kinds.
    let origin = Origin::start(|req| {
        let h = [("etag", "\"v1\""), ("cache-control", "max-age=0")];
        if header(req, "if-none-match") == Some("\"v1\"") {
            reply(304, &h, "")
        } else {
            reply(200, &h, "0123456789")
        }
    })
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/h");
    fill(proxy, &url).await;
    let head = send(proxy, "HEAD", &url, &[]).await;
    assert_eq!(head.status, 200);
    let cs = head.cache_status();
    cs.assert_fwd("stale");
    assert_eq!(
        cs.fwd_status,
        Some(304),
        "revalidated (write-through), not served stale"
    );
    let seen = origin.last("/h");
    assert_eq!(
        seen.method, "GET",
        "a conditional GET revalidates for the HEAD"
    );
    assert_eq!(
        seen.headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok()),
        Some("\"v1\"")
    );
    assert_eq!(origin.count("GET", "/h"), 2);
}
