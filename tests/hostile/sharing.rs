//! What one client sends never changes what another receives: a 304's per-client fields, a
//! 304 that makes the response unshareable, request fields the origin never sees (named in
//! `Connection`) and unkeyed forwarding fields (`X-Forwarded-Host` and friends). Each test
//! replays the attack from issue 12 through real sockets.

use std::time::Duration;

use super::proxy;
use crate::proxy::harness::*;

/// Polls (bounded: 10 s, generous for a loaded CI machine) until a GET of `url` with
/// `fields` is a hit; returns that response.
async fn until_hit(proxy: std::net::SocketAddr, url: &str, fields: &[(&str, &str)]) -> RawResponse {
    let mut probe = vec![("Cache-Control", "only-if-cached")];
    probe.extend_from_slice(fields);
    for _ in 0..500 {
        let r = send(proxy, "GET", url, &probe).await;
        if r.status == 200 {
            return send(proxy, "GET", url, fields).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never became a hit");
}

/// An origin with a rolling session: a 200 (`ETag "v1"`, always stale) to plain requests; a
/// revalidation gets a 304 that makes the entry fresh, and, when the request had a cookie,
/// rotates it with `Set-Cookie: <cookie>-rotated`. `extra` fields go with both.
async fn rolling_session_origin(
    stale: &'static str,
    extra: &'static [(&'static str, &'static str)],
) -> Origin {
    Origin::start(move |req| {
        if header(req, "if-none-match") == Some("\"v1\"") {
            let mut h = vec![("etag", "\"v1\""), ("cache-control", "max-age=600")];
            h.extend_from_slice(extra);
            let rotated = header(req, "cookie").map(|c| format!("{c}-rotated"));
            if let Some(c) = &rotated {
                h.push(("set-cookie", c.as_str()));
            }
            return reply(304, &h, "");
        }
        let mut h = vec![("etag", "\"v1\""), ("cache-control", stale)];
        h.extend_from_slice(extra);
        reply(200, &h, "page")
    })
    .await
}

#[tokio::test]
async fn hostile_304_set_cookie_reaches_only_the_client_that_revalidated() {
    let origin = rolling_session_origin("max-age=0", &[]).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/session");
    assert_eq!(get(proxy, &url).await.text(), "page");
    let alice = send(proxy, "GET", &url, &[("Cookie", "sid=ALICE")]).await;
    assert_eq!(alice.text(), "page");
    assert_eq!(alice.cache_status().fwd_status, Some(304));
    // Alice's own rotated cookie is hers to receive...
    assert_eq!(alice.header_all("set-cookie"), ["sid=ALICE-rotated"]);
    // ...and nobody else's: the refreshed entry is a hit without it.
    let anon = get(proxy, &url).await;
    anon.cache_status().assert_hit();
    assert!(
        anon.header("set-cookie").is_none(),
        "another client got {:?}",
        anon.header_all("set-cookie")
    );
    assert_eq!(origin.hits(), 2);
}

/// Alice (`Cookie: sid=ALICE`) asks for `url` until the origin has seen a background
/// revalidation carrying her cookie (bounded: 500 rounds of 20 ms). One stale request does
/// not always start a refresh: the client holds the whole body before the fill commits, so a
/// request that reads the committed entry while the fill's flight is still open joins that
/// flight (single flight per key) and starts none; the next stale request does.
async fn alice_until_revalidated(proxy: std::net::SocketAddr, origin: &Origin, url: &str) {
    let revalidated_for_alice = || {
        origin.seen().iter().any(|s| {
            s.headers.contains_key("if-none-match")
                && s.headers.get("cookie").is_some_and(|c| c == "sid=ALICE")
        })
    };
    for _ in 0..500 {
        if revalidated_for_alice() {
            return;
        }
        let alice = send(proxy, "GET", url, &[("Cookie", "sid=ALICE")]).await;
        assert_eq!(alice.text(), "page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url}: no background revalidation carried Alice's cookie");
}

#[tokio::test]
async fn hostile_304_set_cookie_from_a_background_revalidation_is_never_stored() {
    // stale-while-revalidate: Alice is answered from the cache; the 304 (with her rotated
    // cookie) arrives later, in a refresh nobody is answered from. The response varies on
    // Cookie, so the refresh carries hers (without `Vary` it carries none:
    // `hostile::refreshes`).
    let origin = rolling_session_origin(
        "max-age=0, stale-while-revalidate=600",
        &[("vary", "Cookie")],
    )
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/swr");
    let alice = [("Cookie", "sid=ALICE")];
    assert_eq!(send(proxy, "GET", &url, &alice).await.text(), "page");
    alice_until_revalidated(proxy, &origin, &url).await;
    // The merge (fresh for 600 s, without the cookie) is stored: the next hit on that entry
    // does not hand out the cookie the refresh received.
    let hit = until_hit(proxy, &url, &alice).await;
    hit.cache_status().assert_hit();
    assert!(
        hit.header("set-cookie").is_none(),
        "a later hit got {:?}",
        hit.header_all("set-cookie")
    );
}

/// A 304 whose `Cache-Control` makes the stored response unshareable.
async fn unshareable_after_304(directive: &'static str) {
    let origin = Origin::start(move |req| {
        if header(req, "if-none-match") == Some("\"v1\"") {
            return reply(304, &[("etag", "\"v1\""), ("cache-control", directive)], "");
        }
        reply(
            200,
            &[("etag", "\"v1\""), ("cache-control", "max-age=0")],
            "page",
        )
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/turns");
    assert_eq!(get(proxy, &url).await.text(), "page");
    let first = get(proxy, &url).await;
    assert_eq!(first.text(), "page");
    let cs = first.cache_status();
    assert_eq!(cs.fwd_status, Some(304));
    assert!(!cs.stored, "{directive}: Cache-Status {:?}", cs.raw);
    // The entry is gone, even for a client that accepts anything stale.
    let only = send(
        proxy,
        "GET",
        &url,
        &[("Cache-Control", "only-if-cached, max-stale=3600")],
    )
    .await;
    assert_eq!(only.status, 504, "{directive}: still stored");
    let next = get(proxy, &url).await;
    next.cache_status().assert_miss();
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn hostile_304_that_makes_the_response_private_removes_it() {
    unshareable_after_304("private, max-age=600").await;
}

#[tokio::test]
async fn hostile_304_that_makes_the_response_no_store_removes_it() {
    unshareable_after_304("no-store").await;
}

#[tokio::test]
async fn hostile_header_named_in_connection_cannot_pick_the_variant() {
    let origin = Origin::start(|req| {
        let lang = header(req, "accept-language").unwrap_or("none").to_string();
        reply(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Language"),
            ],
            format!("lang={lang}"),
        )
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/vary");
    let attacker = send(
        proxy,
        "GET",
        &url,
        &[("Accept-Language", "fr"), ("Connection", "accept-language")],
    )
    .await;
    // The origin never saw the field, and neither does the key.
    assert_eq!(attacker.text(), "lang=none");
    let french = send(proxy, "GET", &url, &[("Accept-Language", "fr")]).await;
    assert_eq!(french.text(), "lang=fr", "the fr variant was poisoned");
    let plain = get(proxy, &url).await;
    assert_eq!(plain.text(), "lang=none");
    plain.cache_status().assert_hit();
}

/// An origin that builds links from `X-Forwarded-Host` (or `Forwarded: host=`, or serves the
/// path named by `X-Original-URL`), as many frameworks do behind a load balancer.
async fn reflecting_origin() -> Origin {
    Origin::start(|req| {
        let host = header(req, "x-forwarded-host")
            .or_else(|| header(req, "forwarded").and_then(|f| f.strip_prefix("host=")))
            .or_else(|| header(req, "host"))
            .unwrap_or("?")
            .to_string();
        let path = header(req, "x-original-url")
            .map(str::to_string)
            .unwrap_or_else(|| req.uri().path().to_string());
        // Any other field it trusts (client address, rewritten path, asserted user) is
        // reflected too.
        let trusted: Vec<&str> = [
            "x-real-ip",
            "true-client-ip",
            "x-forwarded-uri",
            "x-forwarded-user",
        ]
        .iter()
        .filter_map(|n| header(req, n))
        .collect();
        reply(
            200,
            &[("cache-control", "max-age=600")],
            format!(
                "<script src=//{host}/app.js></script> {path} {}",
                trusted.join(" ")
            ),
        )
    })
    .await
}

const POISON: [(&str, &str); 8] = [
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "host=evil.example"),
    ("X-Original-URL", "/evil.example"),
    ("X-Forwarded-Proto", "evil.example"),
    ("X-Real-IP", "10.0.0.1-evil"),
    ("True-Client-IP", "10.0.0.1-evil"),
    ("X-Forwarded-Uri", "/evil"),
    ("X-Forwarded-User", "evil-admin"),
];

#[tokio::test]
async fn hostile_forwarding_headers_are_stripped_and_cannot_poison_the_entry() {
    let origin = reflecting_origin().await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    for (i, field) in POISON.iter().enumerate() {
        let url = origin.url(&format!("/page{i}"));
        let attacker = send(proxy, "GET", &url, &[*field]).await;
        assert!(
            !attacker.text().contains("evil"),
            "{field:?} reached the origin"
        );
        let seen = origin.last(&format!("/page{i}"));
        assert!(seen.headers.get(field.0).is_none(), "{field:?} forwarded");
        wait_stored(proxy, &url).await;
        let victim = get(proxy, &url).await;
        victim.cache_status().assert_hit();
        assert!(
            !victim.text().contains("evil"),
            "{field:?} poisoned the entry"
        );
    }
}

#[tokio::test]
async fn hostile_forwarding_headers_passed_on_request_bypass_the_cache() {
    let origin = reflecting_origin().await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.forwarding_headers = hoard::http_cache::ForwardingHeaders::Pass;
    })
    .await;
    for (i, field) in POISON.iter().enumerate() {
        let url = origin.url(&format!("/pass{i}"));
        let attacker = send(proxy, "GET", &url, &[*field]).await;
        let seen = origin.last(&format!("/pass{i}"));
        assert_eq!(seen.headers[field.0], field.1, "{field:?} not passed on");
        assert!(
            attacker.cache_status().raw.contains("forwarding-header"),
            "{:?}",
            attacker.cache_status().raw
        );
        let victim = get(proxy, &url).await;
        victim.cache_status().assert_miss();
        assert!(
            !victim.text().contains("evil"),
            "{field:?} poisoned the entry"
        );
    }
}

/// `forwarding-headers = pass` and `X-Forwarded-For` alone: an origin that grants a page by the
/// leftmost address (as many do behind a load balancer) gives a spoofed intranet address its
/// intranet page; that page reaches only the spoofer, never a later client (README, "What is
/// shared": why `pass` is not "cache unless `Vary`").
#[tokio::test]
async fn hostile_x_forwarded_for_passed_never_shares_an_address_granted_page() {
    let origin = Origin::start(|req| {
        let leftmost = header(req, "x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim);
        let body = if leftmost == Some("10.0.0.1") {
            "intranet"
        } else {
            "public"
        };
        reply(200, &[("cache-control", "max-age=600")], body)
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.forwarding_headers = hoard::http_cache::ForwardingHeaders::Pass;
    })
    .await;
    let url = origin.url("/by-address");
    let spoofer = send(
        proxy,
        "GET",
        &url,
        &[("X-Forwarded-For", "10.0.0.1, 203.0.113.9")],
    )
    .await;
    assert_eq!(spoofer.text(), "intranet");
    let cs = spoofer.cache_status();
    assert!(
        cs.raw.contains("forwarding-header") && !cs.stored,
        "{:?}",
        cs.raw
    );
    let victim = get(proxy, &url).await;
    assert_eq!(victim.text(), "public");
    victim.cache_status().assert_miss();
    assert_eq!(origin.hits(), 2);
}

/// Every byte under `dir` (database, WAL, value files), for "is this secret on disk?".
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
    }
    out
}

#[tokio::test]
async fn hostile_vary_cookie_keeps_only_a_digest_of_the_cookie_in_the_store() {
    let origin = Origin::start(|req| {
        let who = if header(req, "cookie").is_some_and(|c| c.contains("ALICE")) {
            "alice"
        } else {
            "other"
        };
        reply(
            200,
            &[("cache-control", "public, max-age=600"), ("vary", "Cookie")],
            format!("for {who}"),
        )
    })
    .await;
    let (_h, proxy, dir) = proxy(None, |_| {}).await;
    let url = origin.url("/account");
    let secret = "sid=ALICE-5f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let first = send(proxy, "GET", &url, &[("Cookie", secret)]).await;
    assert_eq!(first.text(), "for alice");
    let again = send(proxy, "GET", &url, &[("Cookie", secret)]).await;
    again.cache_status().assert_hit();
    assert_eq!(again.text(), "for alice");
    let bob = send(proxy, "GET", &url, &[("Cookie", "sid=BOB")]).await;
    assert_eq!(bob.text(), "for other");
    bob.cache_status().assert_not_hit();
    let none = get(proxy, &url).await;
    assert_eq!(none.text(), "for other");
    none.cache_status().assert_not_hit();
    let on_disk = all_bytes(dir.path());
    let needle = b"5f1e2d3c4b5a69788796a5b4c3d2e1f0";
    assert!(
        !on_disk.windows(needle.len()).any(|w| w == needle),
        "the cookie is stored in clear"
    );
}
