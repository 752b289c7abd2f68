//! A background refresh (stale-while-revalidate, XFetch) is the cache's request for every
//! client the stored entry serves, not the request of the client that triggered it: it carries
//! what selected the entry (the `Vary`'d fields; `Authorization` when the entry was stored from
//! an authorised request) and no other client secret, so its answer replaces the entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::proxy;
use crate::proxy::harness::*;

/// Sends `GET url` with `fields` (bounded: 500 rounds of 20 ms), checking each answer with
/// `check`, until the origin has seen a request for which `refresh(ordinal, request)` holds;
/// returns it. One
/// stale request does not always start a refresh (it may find the fill's flight still open:
/// ARCHITECTURE.md, "Request state machine"), so the request is repeated.
async fn trigger_until(
    proxy: std::net::SocketAddr,
    origin: &Origin,
    url: &str,
    fields: &[(&str, &str)],
    refresh: impl Fn(usize, &Seen) -> bool,
    check: impl Fn(&RawResponse),
) -> Seen {
    for _ in 0..500 {
        let seen = origin.seen();
        if let Some((_, s)) = seen.into_iter().enumerate().find(|(n, s)| refresh(*n, s)) {
            return s;
        }
        check(&send(proxy, "GET", url, fields).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url}: the origin never saw the refresh");
}

/// Waits (bounded: 500 rounds of 20 ms) until `GET url` with `fields` and `only-if-cached`
/// is a hit with `body`; returns that answer. `only-if-cached` on a stale entry is a 504 that
/// starts no refresh, so the hit shows what an earlier refresh stored, not one of these.
async fn until_body(
    proxy: std::net::SocketAddr,
    url: &str,
    fields: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut probe = vec![("Cache-Control", "only-if-cached")];
    probe.extend_from_slice(fields);
    let mut last = String::new();
    for _ in 0..500 {
        let r = send(proxy, "GET", url, &probe).await;
        if r.text() == body && r.cache_status().hit {
            return r;
        }
        last = format!("{:?} {:?}", r.text(), r.cache_status().raw);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url}: never a hit with {body:?}; last answer {last}");
}

/// An origin whose first answer is `v1`, stale at once inside a stale-while-revalidate window,
/// and every later one `v2`, fresh for 600 s, whatever the request carries; `extra` fields are
/// added to both.
async fn versioned_origin(extra: &'static [(&str, &str)]) -> Origin {
    let calls = Arc::new(AtomicUsize::new(0));
    Origin::start(move |_| {
        let (cc, body) = match calls.fetch_add(1, Ordering::SeqCst) {
            0 => ("max-age=0, stale-while-revalidate=60", "v1"),
            _ => ("max-age=600", "v2"),
        };
        let mut h = vec![("cache-control", cc)];
        h.extend_from_slice(extra);
        reply(200, &h, body)
    })
    .await
}

/// Anything but the stale `v1` (served while the refresh runs) or the refreshed `v2`.
fn v1_or_v2(r: &RawResponse) {
    let cs = r.cache_status();
    match r.text().as_str() {
        "v1" => assert!(cs.raw.contains("stale-while-revalidate"), "{:?}", cs.raw),
        "v2" => cs.assert_hit(),
        other => panic!("unexpected body {other:?}, Cache-Status {:?}", cs.raw),
    }
}

const ALICE: [(&str, &str); 3] = [
    ("Authorization", "Bearer secret"),
    ("Cookie", "s=1"),
    ("User-Agent", "alice-agent/1"),
];

#[tokio::test]
async fn hostile_swr_refresh_goes_without_the_triggering_clients_credentials() {
    let origin = versioned_origin(&[]).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/swr-anon");
    assert_eq!(fill(proxy, &url).await.text(), "v1");
    // Alice is answered from the cache every time: the 2nd request the origin sees is the
    // refresh one of her stale requests started.
    let refresh = trigger_until(proxy, &origin, &url, &ALICE, |n, _| n == 1, v1_or_v2).await;
    for secret in ["authorization", "cookie"] {
        assert!(
            !refresh.headers.contains_key(secret),
            "the refresh carried Alice's {secret}: {:?}",
            refresh.headers
        );
    }
    // Not a secret and not varied on: sent as the client gave it (README, Shared-cache safety).
    assert_eq!(refresh.headers["user-agent"], "alice-agent/1");
    // Its 200 is storable and replaced the stale entry: the next client gets v2 from the cache.
    until_body(proxy, &url, &[], "v2").await;
    // A stale request that read v1 just before the refresh committed may start a second
    // refresh (not counted here); none carried Alice's secrets either.
    for s in origin.seen() {
        assert!(!s.headers.contains_key("authorization"), "{:?}", s.headers);
        assert!(!s.headers.contains_key("cookie"), "{:?}", s.headers);
    }
}

#[tokio::test]
async fn hostile_swr_refresh_304_started_by_an_authorised_client_refreshes_the_entry() {
    // Before: the refresh went with Alice's `Authorization`, and a 304 to a request with it
    // may not update an entry that is not `public`: the merge was thrown away.
    let origin = Origin::start(|req| {
        let h = [("etag", "\"r1\""), ("cache-control", "max-age=600")];
        if header(req, "if-none-match") == Some("\"r1\"") {
            return reply(304, &h, "");
        }
        let stale = [
            ("etag", "\"r1\""),
            ("cache-control", "max-age=0, stale-while-revalidate=60"),
        ];
        reply(200, &stale, "v1")
    })
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/swr-304");
    assert_eq!(fill(proxy, &url).await.text(), "v1");
    let conditional = |_: usize, s: &Seen| s.headers.contains_key("if-none-match");
    let refresh = trigger_until(proxy, &origin, &url, &ALICE, conditional, |r| {
        assert_eq!(r.text(), "v1")
    })
    .await;
    assert!(
        !refresh.headers.contains_key("authorization"),
        "{:?}",
        refresh.headers
    );
    // The merge (fresh for 600 s) was stored: a hit for the next client.
    until_body(proxy, &url, &[], "v1").await;
}

#[tokio::test]
async fn hostile_swr_refresh_of_a_vary_cookie_entry_carries_the_triggering_cookie() {
    let origin = versioned_origin(&[("vary", "Cookie")]).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/swr-vary");
    // Alice's variant, stale at once.
    let first = send(proxy, "GET", &url, &[("Cookie", "s=1")]).await;
    assert_eq!(first.text(), "v1");
    wait_stored_with(proxy, &url, &[("Cookie", "s=1")]).await;
    let alice = [("Cookie", "s=1"), ("X-Api-Key", "k-secret")];
    let refresh = trigger_until(proxy, &origin, &url, &alice, |n, _| n == 1, v1_or_v2).await;
    // The cookie selected the stored variant: the refresh asks for that variant with it.
    assert_eq!(refresh.headers["cookie"], "s=1", "{:?}", refresh.headers);
    assert!(
        !refresh.headers.contains_key("x-api-key"),
        "a secret the entry does not vary on went with the refresh"
    );
    // The refresh's 200 (Vary: Cookie) is Alice's variant's new entry; Bob's cookie still
    // selects no stored variant.
    until_body(proxy, &url, &[("Cookie", "s=1")], "v2").await;
    let bob = send(proxy, "GET", &url, &[("Cookie", "s=2")]).await;
    bob.cache_status().assert_not_hit();
}

/// An origin that authorises any bearer token and marks its answers `public` (RFC 9111 3.5: a
/// shared cache may then store them); a request without credentials gets a 401 nobody stores.
/// The first authorised answer is `first_cc`, later ones `v2`, fresh for 600 s; a revalidation
/// of `"x1"` gets a 304.
async fn authorising_origin(first_cc: &'static str) -> Origin {
    let calls = Arc::new(AtomicUsize::new(0));
    Origin::start(move |req| {
        if header(req, "authorization").is_none() {
            return reply(401, &[("www-authenticate", "Bearer")], "who are you");
        }
        if header(req, "if-none-match") == Some("\"x1\"") {
            let h = [("cache-control", "public, max-age=600"), ("etag", "\"x1\"")];
            return reply(304, &h, "");
        }
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return reply(
                200,
                &[("cache-control", first_cc), ("etag", "\"x1\"")],
                "v1",
            );
        }
        reply(200, &[("cache-control", "public, max-age=600")], "v2")
    })
    .await
}

const BOB: [(&str, &str); 2] = [("Authorization", "Bearer b"), ("Cookie", "s=bob")];

/// Client A (`Bearer a`) fills `url`: the stored entry comes from an authorised request.
async fn filled_by_a(proxy: std::net::SocketAddr, url: &str) {
    let a = send(proxy, "GET", url, &[("Authorization", "Bearer a")]).await;
    assert_eq!(a.text(), "v1");
    wait_stored_with(proxy, url, &[("Authorization", "Bearer a")]).await;
}

/// Bob ([`BOB`]) asks until the origin sees the revalidation his request started: it carries
/// Bob's credentials (what the origin authorises) and the stored validator, not his cookie.
async fn bobs_refresh(
    proxy: std::net::SocketAddr,
    origin: &Origin,
    url: &str,
    check: impl Fn(&RawResponse),
) {
    let bobs = |_: usize, s: &Seen| {
        s.headers.contains_key("if-none-match")
            && s.headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer b")
    };
    let refresh = trigger_until(proxy, origin, url, &BOB, bobs, check).await;
    assert!(
        !refresh.headers.contains_key("cookie"),
        "{:?}",
        refresh.headers
    );
    assert_eq!(refresh.headers["if-none-match"], "\"x1\"");
}

#[tokio::test]
async fn hostile_swr_refresh_of_an_authorised_public_entry_carries_the_triggering_credentials() {
    let origin = authorising_origin("public, max-age=0, stale-while-revalidate=60").await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/swr-auth");
    filled_by_a(proxy, &url).await;
    // An anonymous client is served the public entry; the refresh it starts goes without
    // credentials (it has none), gets the 401, and stores nothing (v1 stays, stale).
    let anonymous = |_: usize, s: &Seen| !s.headers.contains_key("authorization");
    trigger_until(proxy, &origin, &url, &[], anonymous, v1_or_v2).await;
    bobs_refresh(proxy, &origin, &url, v1_or_v2).await;
    // The origin's 304 is `public`: the merge is stored (fresh for 600 s) for every client,
    // and the anonymous refresh's 401 never replaced the entry.
    until_body(proxy, &url, &[], "v1").await;
    let bob_again = send(proxy, "GET", &url, &BOB).await;
    assert_eq!(bob_again.text(), "v1");
    bob_again.cache_status().assert_hit();
}

#[tokio::test]
async fn hostile_xfetch_refresh_of_an_authorised_public_entry_carries_the_triggering_credentials() {
    let origin = authorising_origin("public, max-age=600").await;
    // Every fresh hit is due for an early refresh (one per key at a time).
    let (_h, proxy, _dir) = proxy(None, |c| {
        c.xfetch_beta = 1e12;
        c.random = || 1e-300;
    })
    .await;
    let url = origin.url("/xfetch-auth");
    filled_by_a(proxy, &url).await;
    let fresh_hit = |r: &RawResponse| {
        assert_eq!(r.text(), "v1");
        r.cache_status().assert_hit();
    };
    bobs_refresh(proxy, &origin, &url, fresh_hit).await;
    // No refresh went with a cookie (A's probe and Bob's hits started them all).
    for s in origin.seen() {
        assert!(!s.headers.contains_key("cookie"), "{:?}", s.headers);
    }
}
