//! RFC 9111 stale entries seen from outside: revalidation with the stored validators (4.3),
//! 304 merges (4.3.4), stale-while-revalidate / stale-if-error (RFC 5861), must-revalidate
//! with the origin down, a new 200 replacing a stale entry. Staleness comes from `max-age=0`,
//! never from sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::harness::*;
use super::semantics::{ETAG, LAST_MODIFIED};

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_none_match_and_304_refreshes_headers() {
    let bodies = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let bodies = bodies.clone();
        move |req| {
            if header(req, "if-none-match") == Some(ETAG) {
                reply(
                    304,
                    &[
                        ("etag", ETAG),
                        ("cache-control", "max-age=60"),
                        ("x-rev", "2"),
                    ],
                    "",
                )
            } else {
                bodies.fetch_add(1, Ordering::SeqCst);
                reply(
                    200,
                    &[
                        ("etag", ETAG),
                        ("cache-control", "max-age=0"),
                        ("x-rev", "1"),
                    ],
                    "original body",
                )
            }
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;

    let first = get(proxy, &origin.url("/etag")).await;
    assert_eq!(first.header("x-rev"), Some("1"));

    let second = get(proxy, &origin.url("/etag")).await;
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "original body")
    );
    assert_eq!(
        second.header("x-rev"),
        Some("2"),
        "304 headers update the response"
    );
    second.cache_status().assert_fwd("stale");
    let conditional = origin.last("/etag");
    assert_eq!(
        conditional
            .headers
            .get("if-none-match")
            .map(|v| v.as_bytes()),
        Some(ETAG.as_bytes())
    );

    // The 304 made the entry fresh for 60 s: the third request is a hit with the new header.
    let third = get(proxy, &origin.url("/etag")).await;
    third.cache_status().assert_hit();
    assert_eq!(
        (third.text().as_str(), third.header("x-rev")),
        ("original body", Some("2"))
    );
    for resp in [&second, &third] {
        let via = resp.header_all("via").join(", ");
        assert_eq!(
            via.matches("hoard").count(),
            1,
            "Via after a 304 refresh: {via:?}"
        );
    }
    assert_eq!(origin.hits(), 2);
    assert_eq!(
        bodies.load(Ordering::SeqCst),
        1,
        "the origin never re-sends the body"
    );
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_modified_since() {
    let origin = Origin::start(|req| {
        if header(req, "if-modified-since") == Some(LAST_MODIFIED) {
            reply(304, &[("last-modified", LAST_MODIFIED), ("x-rev", "2")], "")
        } else {
            reply(
                200,
                &[
                    ("last-modified", LAST_MODIFIED),
                    ("cache-control", "max-age=0"),
                    ("x-rev", "1"),
                ],
                "dated body",
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/lm")).await;
    let second = get(proxy, &origin.url("/lm")).await;
    assert_eq!((second.status, second.text().as_str()), (200, "dated body"));
    assert_eq!(second.header("x-rev"), Some("2"));
    let conditional = origin.last("/lm");
    assert_eq!(
        conditional
            .headers
            .get("if-modified-since")
            .map(|v| v.as_bytes()),
        Some(LAST_MODIFIED.as_bytes())
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_fails() {
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let calls = calls.clone();
        move |_| match calls.fetch_add(1, Ordering::SeqCst) {
            0 => reply(
                200,
                &[("cache-control", "max-age=0, stale-if-error=60")],
                "last good",
            ),
            _ => reply(500, &[], "broken"),
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/sie")).await;
    let resp = get(proxy, &origin.url("/sie")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "last good"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    // v1 is stale at once (inside its stale-while-revalidate window); the refresh's v2 is fresh,
    // so no later request can start another one.
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let calls = calls.clone();
        move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let cc = match n {
                1 => "max-age=0, stale-while-revalidate=60",
                _ => "max-age=600",
            };
            reply(200, &[("cache-control", cc)], format!("v{n}"))
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/swr");
    assert_eq!(fill(proxy, &url).await.text(), "v1");
    // A stale request that reads the entry before the fill's flight has ended starts no
    // refresh (it joins that flight); the next one does. Bounded: 200 rounds of 10 ms.
    for _ in 0..200 {
        if origin.hits() == 2 {
            break;
        }
        let res = get(proxy, &url).await;
        let cs = res.cache_status();
        match res.text().as_str() {
            "v1" => assert!(cs.raw.contains("stale-while-revalidate"), "{:?}", cs.raw),
            // The refresh stored v2 between the count and this request.
            "v2" => cs.assert_hit(),
            other => panic!("unexpected body {other:?}, Cache-Status {:?}", cs.raw),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits(), 2, "one background refresh");
    wait_stored(proxy, &url).await;
    let fresh = get(proxy, &url).await;
    assert_eq!(fresh.text(), "v2");
    fresh.cache_status().assert_hit();
    assert_eq!(origin.hits(), 2, "exactly one background refresh");
}

#[tokio::test]
async fn stale_entry_is_replaced_when_the_origin_sends_a_new_200() {
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let calls = calls.clone();
        move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let etag = format!("\"v{n}\"");
            let cc = if n == 1 { "max-age=0" } else { "max-age=60" };
            reply(
                200,
                &[("etag", &etag), ("cache-control", cc)],
                format!("version {n}"),
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert_eq!(get(proxy, &origin.url("/new")).await.text(), "version 1");
    assert_eq!(get(proxy, &origin.url("/new")).await.text(), "version 2");
    let hit = get(proxy, &origin.url("/new")).await;
    hit.cache_status().assert_hit();
    assert_eq!(
        (hit.text().as_str(), hit.header("etag")),
        ("version 2", Some("\"v2\""))
    );
    assert_eq!(origin.hits(), 2);
}

/// RFC 9111 5.2.2.2 (and 5.2.2.8, 5.2.2.10 for a shared cache): a stale entry that must be
/// revalidated is never served when the origin cannot be reached, not even to a client that
/// accepts stale responses; the error "SHOULD be 504 (Gateway Timeout)".
#[tokio::test]
async fn rfc9111_5_2_2_2_must_revalidate_with_the_origin_down_is_504_not_stale() {
    for cc in [
        "max-age=0, must-revalidate",
        "max-age=0, proxy-revalidate",
        "s-maxage=0, max-age=600",
    ] {
        let body = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nETag: \"v1\"\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let not_modified = format!(
            "HTTP/1.1 304 Not Modified\r\nCache-Control: {cc}\r\nETag: \"v1\"\r\n\
             Connection: close\r\n\r\n"
        );
        let conditional = Arc::new(AtomicUsize::new(0));
        let seen = conditional.clone();
        let origin = RawOrigin::start(true, move |head| {
            if head.to_ascii_lowercase().contains("if-none-match") {
                seen.fetch_add(1, Ordering::SeqCst);
                not_modified.clone().into_bytes()
            } else {
                body.clone().into_bytes()
            }
        })
        .await;
        let url = origin.url("/down");
        let (_proxy, proxy, _dir) = start_proxy(None).await;
        // Stored once a request revalidates it (bounded): the entry is never fresh, so
        // `only-if-cached` cannot tell.
        for _ in 0..200 {
            assert_eq!(get(proxy, &url).await.text(), "hello");
            if conditional.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(conditional.load(Ordering::SeqCst) > 0, "{cc}: never stored");
        drop(origin); // listener closed: the origin is now unreachable
        for req in [&[][..], &[("cache-control", "max-stale=600")][..]] {
            let resp = send(proxy, "GET", &url, req).await;
            assert_eq!(
                (resp.status, resp.text() == "hello"),
                (504, false),
                "{cc} {req:?}: {:?}",
                resp.header("cache-status")
            );
            resp.cache_status().assert_fwd("stale");
            let cs = resp.header("cache-status").unwrap_or_default();
            assert!(cs.ends_with("detail=connect-error"), "{cs}");
        }
    }
}

#[tokio::test]
async fn concurrent_requests_for_a_stale_entry_revalidate_once() {
    let origin = Origin::start_delayed(Duration::from_millis(200), |req| {
        if header(req, "if-none-match") == Some(ETAG) {
            reply(304, &[("etag", ETAG), ("cache-control", "max-age=60")], "")
        } else {
            reply(
                200,
                &[("etag", ETAG), ("cache-control", "max-age=0")],
                "stale body",
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/stale-burst")).await;
    let url = origin.url("/stale-burst");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(proxy, &url).await })
        })
        .collect();
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "stale body"));
    }
    assert_eq!(
        origin.hits(),
        2,
        "20 concurrent requests for a stale entry -> 1 revalidation"
    );
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_down() {
    let origin = RawOrigin::start(true, |_| {
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=0, stale-if-error=60\r\n\
          Content-Length: 9\r\nConnection: close\r\n\r\nlast good"
            .to_vec()
    })
    .await;
    let url = origin.url("/gone");
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &url).await;
    drop(origin);
    let resp = get(proxy, &url).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "last good"));
}

#[tokio::test]
async fn hop_by_hop_headers_of_a_304_do_not_enter_the_stored_entry() {
    let origin = RawOrigin::start(false, |head| {
        if head.to_ascii_lowercase().contains("if-none-match") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\
              Connection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Rev: 2\r\n\r\n"
                .to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: max-age=0\r\n\
              Content-Length: 4\r\n\r\nbody"
                .to_vec()
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/h304")).await;
    let refreshed = get(proxy, &origin.url("/h304")).await;
    let hit = get(proxy, &origin.url("/h304")).await;
    hit.cache_status().assert_hit();
    for resp in [&refreshed, &hit] {
        assert_eq!(
            (resp.text().as_str(), resp.header("x-rev")),
            ("body", Some("2"))
        );
        for name in ["x-secret", "keep-alive"] {
            assert_eq!(
                resp.header(name),
                None,
                "{name} from a 304 reached the client"
            );
        }
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn weak_etag_revalidates() {
    let origin = Origin::start(|req| {
        if header(req, "if-none-match") == Some("W/\"w1\"") {
            reply(
                304,
                &[("etag", "W/\"w1\""), ("cache-control", "max-age=60")],
                "",
            )
        } else {
            reply(
                200,
                &[("etag", "W/\"w1\""), ("cache-control", "max-age=0")],
                "weak",
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    fill(proxy, &origin.url("/weak")).await;
    let resp = get(proxy, &origin.url("/weak")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "weak"));
    assert_eq!(resp.cache_status().fwd_status, Some(304));
    get(proxy, &origin.url("/weak"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.hits(), 2);
}
