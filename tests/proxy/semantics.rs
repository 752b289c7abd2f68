//! RFC 9111 behaviour seen from outside: freshness, storability, request directives, HEAD,
//! Range and client conditionals (stale entries and revalidation: `stale.rs`).
//! Staleness comes from `max-age=0`, never from sleeping, except in the one test that checks the
//! fresh-to-stale transition itself.

use std::time::Duration;

use super::harness::*;

pub(super) const ETAG: &str = "\"v1\"";
pub(super) const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// An origin that answers with `cache-control: cc` and counts how many full bodies it sends.
async fn origin_with(cc: &'static str, body: &'static str) -> Origin {
    Origin::start(move |_| reply(200, &[("cache-control", cc)], body)).await
}

#[tokio::test]
async fn fresh_hit_serves_identical_body_with_age() {
    let origin = origin_with("max-age=60", "fresh body").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let first = get(proxy, &origin.url("/f")).await;
    let second = get(proxy, &origin.url("/f")).await;
    assert_eq!(first.body, second.body);
    second.cache_status().assert_hit();
    assert!(
        second.header("age").is_some(),
        "hit without Age: {:?}",
        second.headers
    );
    if let Some(ttl) = second.cache_status().ttl {
        assert!((0..=60).contains(&ttl), "ttl={ttl}");
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn max_age_1_turns_stale_after_one_second() {
    // No Date header: with one, its whole-second resolution alone may age the response by up
    // to a second (RFC 9111 section 4.2.3 apparent_age), making max-age=1 stale at once.
    let origin = RawOrigin::start(false, |head| {
        if head.to_ascii_lowercase().contains("if-none-match: \"v1\"") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=1\r\n\r\n"
                .to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: max-age=1\r\n\
              Content-Length: 11\r\n\r\nshort-lived"
                .to_vec()
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/one")).await;
    get(proxy, &origin.url("/one"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 1);

    tokio::time::sleep(Duration::from_millis(1200)).await; // the one unavoidable sleep
    let stale = get(proxy, &origin.url("/one")).await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "short-lived"));
    stale.cache_status().assert_fwd("stale");
    assert_eq!(
        stale.cache_status().fwd_status,
        Some(304),
        "revalidated with a conditional GET"
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn heuristic_freshness_from_old_last_modified() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT")],
            "old",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/old")).await;
    let second = get(proxy, &origin.url("/old")).await;
    second.cache_status().assert_hit();
    assert_eq!(second.text(), "old");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn response_no_store_is_never_cached() {
    let origin = origin_with("no-store, max-age=60", "secret").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..3 {
        let resp = get(proxy, &origin.url("/ns")).await;
        assert_eq!(resp.text(), "secret");
        resp.cache_status().assert_not_hit();
        assert!(!resp.cache_status().stored, "{:?}", resp.cache_status());
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn response_private_is_never_stored_by_a_shared_cache() {
    let origin = origin_with("private, max-age=60", "mine").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..2 {
        get(proxy, &origin.url("/private"))
            .await
            .cache_status()
            .assert_not_hit();
    }
    assert_eq!(origin.hits(), 2);
}

const AUTH: (&str, &str) = ("Authorization", "Bearer token-1");

#[tokio::test]
async fn authorized_request_with_plain_max_age_is_not_stored() {
    let origin = origin_with("max-age=60", "for you").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..2 {
        send(proxy, "GET", &origin.url("/auth"), &[AUTH])
            .await
            .cache_status()
            .assert_not_hit();
    }
    send(proxy, "GET", &origin.url("/auth"), &[])
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn authorized_request_with_public_is_stored() {
    let origin = origin_with("public, max-age=60", "for all").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    send(proxy, "GET", &origin.url("/pub"), &[AUTH]).await;
    wait_stored(proxy, &origin.url("/pub")).await;
    send(proxy, "GET", &origin.url("/pub"), &[AUTH])
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn authorized_request_with_s_maxage_is_stored() {
    let origin = origin_with("s-maxage=60", "shared").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    send(proxy, "GET", &origin.url("/smax"), &[AUTH]).await;
    wait_stored(proxy, &origin.url("/smax")).await;
    send(proxy, "GET", &origin.url("/smax"), &[AUTH])
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 1);
}

/// Caches `/d`, then sends it with `directive`; expects one more origin request, then a hit.
async fn request_directive_goes_forward(directive: (&str, &str)) {
    let origin = origin_with("max-age=60", "d").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/d")).await;
    get(proxy, &origin.url("/d"))
        .await
        .cache_status()
        .assert_hit();
    let forced = send(proxy, "GET", &origin.url("/d"), &[directive]).await;
    assert_eq!((forced.status, forced.text().as_str()), (200, "d"));
    forced.cache_status().assert_not_hit();
    assert_eq!(origin.hits(), 2, "{directive:?} must reach the origin");
    get(proxy, &origin.url("/d"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn request_no_cache_goes_forward() {
    request_directive_goes_forward(("Cache-Control", "no-cache")).await;
}

#[tokio::test]
async fn request_pragma_no_cache_goes_forward() {
    request_directive_goes_forward(("Pragma", "no-cache")).await;
}

#[tokio::test]
async fn request_max_age_0_goes_forward() {
    request_directive_goes_forward(("Cache-Control", "max-age=0")).await;
}

#[tokio::test]
async fn only_if_cached_miss_is_504_without_contacting_the_origin() {
    let origin = origin_with("max-age=60", "x").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/oic"),
        &[("Cache-Control", "only-if-cached")],
    )
    .await;
    assert_eq!(resp.status, 504);
    assert!(resp.cache_status().present(), "{:?}", resp.headers);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn only_if_cached_hit_is_served() {
    let origin = origin_with("max-age=60", "cached").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/oic")).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/oic"),
        &[("Cache-Control", "only-if-cached")],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "cached"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn max_stale_serves_a_stale_entry_without_the_origin() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[("cache-control", "max-age=0"), ("etag", ETAG)],
            "stale ok",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/ms")).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/ms"),
        &[("Cache-Control", "max-stale=60")],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "stale ok"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn max_stale_does_not_override_must_revalidate() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[
                ("cache-control", "max-age=0, must-revalidate"),
                ("etag", ETAG),
            ],
            "strict",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/mr")).await;
    let resp = send(
        proxy,
        "GET",
        &origin.url("/mr"),
        &[("Cache-Control", "max-stale=60")],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "strict"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn head_after_a_cached_get_is_answered_from_cache() {
    let body = pattern(1234);
    let origin = Origin::start({
        let body = body.clone();
        move |_| reply(200, &[("cache-control", "max-age=60")], body.clone())
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/h")).await;

    // HEAD then GET on one connection: a body after the HEAD answer would corrupt the GET.
    let mut conn = RawConn::connect(proxy).await;
    let head = conn
        .request("HEAD", &origin.url("/h"), &[])
        .await
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1234"));
    let after = conn
        .request("GET", &origin.url("/h"), &[])
        .await
        .expect("GET after HEAD");
    assert_eq!((after.status, &after.body), (200, &body));
    assert_eq!(origin.count("HEAD", "/h"), 0, "the origin sees no HEAD");
    assert_eq!(origin.count("GET", "/h"), 1);
}

/// An origin that honours `Range: bytes=a-b` on a 1000-byte body.
async fn range_origin() -> (Origin, Vec<u8>) {
    let body = pattern(1000);
    let origin = Origin::start({
        let body = body.clone();
        move |req| {
            let range = header(req, "range").and_then(|r| r.strip_prefix("bytes="));
            let Some((a, b)) = range.and_then(|r| r.split_once('-')) else {
                return reply(
                    200,
                    &[("cache-control", "max-age=60"), ("accept-ranges", "bytes")],
                    body.clone(),
                );
            };
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            let content_range = format!("bytes {a}-{b}/1000");
            reply(
                206,
                &[
                    ("cache-control", "max-age=60"),
                    ("content-range", &content_range),
                ],
                body[a..=b].to_vec(),
            )
        }
    })
    .await;
    (origin, body)
}

/// A 206 must be exactly the requested bytes; a 200 must be the whole body.
#[track_caller]
fn assert_range_answer(resp: &RawResponse, body: &[u8], a: usize, b: usize) {
    match resp.status {
        206 => {
            assert_eq!(
                resp.header("content-range"),
                Some(format!("bytes {a}-{b}/1000").as_str())
            );
            assert_eq!(resp.body, &body[a..=b]);
        }
        200 => assert_eq!(resp.body, body),
        other => panic!("Range answered with {other}"),
    }
}

#[tokio::test]
async fn range_on_a_cold_url_is_correct_and_206_is_not_served_as_full() {
    let (origin, body) = range_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let partial = send(proxy, "GET", &origin.url("/r"), &[("Range", "bytes=0-9")]).await;
    assert_range_answer(&partial, &body, 0, 9);
    if partial.status == 206 {
        assert!(
            origin.last("/r").headers.contains_key("range"),
            "the origin received Range"
        );
    }
    let whole = get(proxy, &origin.url("/r")).await;
    assert_eq!((whole.status, whole.body.len()), (200, 1000));
    assert_eq!(whole.body, body);
}

#[tokio::test]
async fn range_on_a_cached_url_is_correct() {
    let (origin, body) = range_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/r")).await;
    let partial = send(
        proxy,
        "GET",
        &origin.url("/r"),
        &[("Range", "bytes=100-199")],
    )
    .await;
    assert_range_answer(&partial, &body, 100, 199);
    let whole = get(proxy, &origin.url("/r")).await;
    assert_eq!(whole.body, body);
    whole.cache_status().assert_hit();
}

#[tokio::test]
async fn s_maxage_overrides_max_age_in_a_shared_cache() {
    let origin = origin_with("max-age=0, s-maxage=60", "shared").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/s")).await;
    get(proxy, &origin.url("/s"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn response_no_cache_is_revalidated_every_time() {
    let origin = Origin::start(|req| {
        if header(req, "if-none-match") == Some(ETAG) {
            reply(304, &[("etag", ETAG), ("cache-control", "no-cache")], "")
        } else {
            reply(
                200,
                &[("etag", ETAG), ("cache-control", "no-cache")],
                "check me",
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for round in 1..=3 {
        let resp = get(proxy, &origin.url("/nc")).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "check me"));
        resp.cache_status().assert_not_hit();
        assert_eq!(origin.hits(), round);
    }
    assert!(
        origin.last("/nc").headers.contains_key("if-none-match"),
        "revalidation is conditional"
    );
}

#[tokio::test]
async fn explicitly_fresh_404_is_cached() {
    let origin = Origin::start(|_| reply(404, &[("cache-control", "max-age=60")], "gone")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/missing")).await;
    let resp = get(proxy, &origin.url("/missing")).await;
    assert_eq!((resp.status, resp.text().as_str()), (404, "gone"));
    resp.cache_status().assert_hit();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn age_from_upstream_counts_against_freshness() {
    let origin = Origin::start(|req| match req.uri().path() {
        "/aged" => reply(
            200,
            &[("cache-control", "max-age=60"), ("age", "50")],
            "aged",
        ),
        _ => reply(
            200,
            &[("cache-control", "max-age=60"), ("age", "100")],
            "too old",
        ),
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/aged")).await;
    let hit = get(proxy, &origin.url("/aged")).await;
    hit.cache_status().assert_hit();
    let age: u64 = hit.header("age").expect("Age").parse().unwrap();
    assert!(
        (50..60).contains(&age),
        "Age on the hit includes the upstream Age: {age}"
    );
    if let Some(ttl) = hit.cache_status().ttl {
        assert!(ttl <= 10, "ttl={ttl}");
    }
    get(proxy, &origin.url("/expired")).await;
    get(proxy, &origin.url("/expired"))
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(origin.count("GET", "/expired"), 2);
}

#[tokio::test]
async fn expires_decides_freshness_without_max_age() {
    let origin = Origin::start(|req| match req.uri().path() {
        "/future" => reply(
            200,
            &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
            "later",
        ),
        _ => reply(200, &[("expires", "Thu, 01 Jan 2015 00:00:00 GMT")], "past"),
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for path in ["/future", "/past", "/future", "/past"] {
        get(proxy, &origin.url(path)).await;
    }
    assert_eq!(origin.count("GET", "/future"), 1);
    assert_eq!(origin.count("GET", "/past"), 2);
}

#[tokio::test]
async fn client_conditional_request_on_a_cached_entry() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[("cache-control", "max-age=60"), ("etag", ETAG)],
            "tagged",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/c")).await;
    let mut conn = RawConn::connect(proxy).await;
    let resp = conn
        .request("GET", &origin.url("/c"), &[("If-None-Match", ETAG)])
        .await
        .expect("answer");
    match resp.status {
        304 => assert!(resp.body.is_empty()),
        200 => assert_eq!(resp.text(), "tagged"),
        other => panic!("conditional GET answered {other}"),
    }
    let after = conn
        .request("GET", &origin.url("/c"), &[])
        .await
        .expect("GET after conditional");
    assert_eq!((after.status, after.text().as_str()), (200, "tagged"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn client_conditional_request_on_a_cold_url_does_not_store_a_304() {
    let origin = Origin::start(|req| {
        if header(req, "if-none-match") == Some(ETAG) {
            reply(304, &[("etag", ETAG), ("cache-control", "max-age=60")], "")
        } else {
            reply(
                200,
                &[("etag", ETAG), ("cache-control", "max-age=60")],
                "full body",
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let cond = send(
        proxy,
        "GET",
        &origin.url("/cold"),
        &[("If-None-Match", ETAG)],
    )
    .await;
    assert!(matches!(cond.status, 200 | 304), "status {}", cond.status);
    let plain = get(proxy, &origin.url("/cold")).await;
    assert_eq!((plain.status, plain.text().as_str()), (200, "full body"));
}

#[tokio::test]
async fn head_on_a_cold_url_does_not_store_an_empty_body() {
    let origin =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "the body")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let head = send(proxy, "HEAD", &origin.url("/cold-head"), &[]).await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("8"))
    );
    let resp = get(proxy, &origin.url("/cold-head")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "the body"));
}

#[tokio::test]
async fn request_no_store_is_not_stored() {
    let origin = origin_with("max-age=60", "once").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    send(
        proxy,
        "GET",
        &origin.url("/rns"),
        &[("Cache-Control", "no-store")],
    )
    .await;
    get(proxy, &origin.url("/rns"))
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn request_min_fresh_beyond_the_remaining_lifetime_goes_forward() {
    let origin = origin_with("max-age=60", "mf").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/mf")).await;
    send(
        proxy,
        "GET",
        &origin.url("/mf"),
        &[("Cache-Control", "min-fresh=10")],
    )
    .await
    .cache_status()
    .assert_hit();
    send(
        proxy,
        "GET",
        &origin.url("/mf"),
        &[("Cache-Control", "min-fresh=3600")],
    )
    .await
    .cache_status()
    .assert_not_hit();
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn large_and_repeated_response_headers_survive_the_cache() {
    let large = "x".repeat(70 << 10);
    let origin = Origin::start({
        let large = large.clone();
        move |_| {
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .header("x-large", large.as_str())
                .header("x-multi", "one")
                .header("x-multi", "two")
                .header("x-multi", "three")
                .body(full("h"))
                .unwrap()
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for expect_hit in [false, true] {
        let resp = get(proxy, &origin.url("/hdr")).await;
        assert_eq!(
            resp.cache_status().hit,
            expect_hit,
            "{:?}",
            resp.cache_status()
        );
        assert_eq!(resp.header("x-large").map(str::len), Some(large.len()));
        assert_eq!(resp.header_all("x-multi").join(","), "one,two,three");
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn cache_control_split_over_several_field_lines_is_combined() {
    let origin = Origin::start(|_| {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("cache-control", "private")
            .body(full("split"))
            .unwrap()
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/split")).await;
    get(proxy, &origin.url("/split"))
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(
        origin.hits(),
        2,
        "the second Cache-Control line (private) counts"
    );
}

#[tokio::test]
async fn authorized_request_with_must_revalidate_is_stored() {
    let origin = origin_with("max-age=60, must-revalidate", "revalidatable").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    send(proxy, "GET", &origin.url("/amr"), &[AUTH]).await;
    wait_stored(proxy, &origin.url("/amr")).await;
    send(proxy, "GET", &origin.url("/amr"), &[AUTH])
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 1);
}

/// Pins a race: the client has the whole miss before the fill commits, so a plain GET sent
/// right after it must still be a hit (waiting for the fill, not fetching again).
#[tokio::test]
async fn a_complete_miss_is_a_hit_for_the_next_request() {
    let origin = origin_with("max-age=60", "soon stored").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut not_hits = Vec::new();
    for i in 0..50 {
        let url = origin.url(&format!("/seq{i}"));
        get(proxy, &url).await;
        let next = get(proxy, &url).await;
        if !next.cache_status().hit {
            not_hits.push((i, next.cache_status().raw));
        }
    }
    assert!(
        not_hits.is_empty(),
        "second sequential GET not a hit: {not_hits:?}"
    );
    assert_eq!(origin.hits(), 50);
}

/// Same race seen through `only-if-cached`, which does not wait for an in-flight fill: the
/// entry the client just received fully shows as a 504.
#[tokio::test]
#[ignore = "RFC 9111 permits it (only-if-cached may answer 504 while a fill is in flight)"]
async fn a_complete_miss_is_stored_before_the_next_only_if_cached_request() {
    let origin = origin_with("max-age=60", "soon stored").await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut not_stored = Vec::new();
    for i in 0..50 {
        let url = origin.url(&format!("/seq{i}"));
        get(proxy, &url).await;
        let next = send(proxy, "GET", &url, &[("Cache-Control", "only-if-cached")]).await;
        if next.status != 200 {
            not_stored.push((i, next.status, next.cache_status().raw));
        }
    }
    assert!(
        not_stored.is_empty(),
        "answered from cache only after a delay: {not_stored:?}"
    );
    assert_eq!(origin.hits(), 50);
}
