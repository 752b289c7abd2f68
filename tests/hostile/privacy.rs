//! Privacy: a response to a request with `Authorization`, a `private` response, or one with
//! `Set-Cookie` (unless marked `public`) is never served to another request, including
//! requests that arrive while it is being fetched (coalesced waiters).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::proxy;
use crate::proxy::harness::*;

/// An origin whose every answer is unique (`n=<count>`), with `headers`.
async fn numbered(headers: &'static [(&'static str, &'static str)], delay: Duration) -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::start_delayed(delay, move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        reply(200, headers, format!("n={i}"))
    })
    .await
}

/// Two requests in sequence and two concurrent: each gets its own origin answer.
async fn never_shared(headers: &'static [(&'static str, &'static str)], req: &[(&str, &str)]) {
    let origin = numbered(headers, Duration::ZERO).await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/me");
    let a = send(proxy, "GET", &url, req).await;
    let b = send(proxy, "GET", &url, req).await;
    let c = get(proxy, &url).await;
    assert_eq!(a.status, 200);
    assert_ne!(a.text(), b.text(), "served to another request: {headers:?}");
    assert_ne!(a.text(), c.text(), "served to another request: {headers:?}");
    assert!(!b.cache_status().hit && !c.cache_status().hit);
    assert_eq!(origin.hits(), 3);

    let slow = numbered(headers, Duration::from_millis(300)).await;
    let url = slow.url("/me");
    let req: Vec<(String, String)> = req
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, req) = (url.clone(), req.clone());
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> =
                    req.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                send(proxy, "GET", &url, &h).await.text()
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        3,
        "a concurrent request got another's response: {bodies:?}"
    );
}

#[tokio::test]
async fn hostile_response_to_authorization_is_never_shared() {
    never_shared(
        &[("cache-control", "max-age=600")],
        &[("Authorization", "Bearer alice")],
    )
    .await;
}

#[tokio::test]
async fn hostile_private_response_is_never_shared() {
    never_shared(&[("cache-control", "private, max-age=600")], &[]).await;
}

/// `private=` / `private=""` name no field: read as plain `private`, never as "nothing is
/// private" (a template that rendered an empty list still meant the response to be private).
#[tokio::test]
async fn hostile_private_with_an_empty_field_list_is_never_shared() {
    never_shared(&[("cache-control", "private=, max-age=600")], &[]).await;
    never_shared(&[("cache-control", "max-age=600, private=\"\"")], &[]).await;
}

#[tokio::test]
async fn hostile_set_cookie_response_is_never_shared() {
    never_shared(
        &[
            ("cache-control", "max-age=600"),
            ("set-cookie", "session=alice"),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn hostile_set_cookie2_response_is_never_shared() {
    never_shared(
        &[
            ("cache-control", "max-age=600"),
            ("set-cookie2", "session=alice; Version=1"),
        ],
        &[],
    )
    .await;
}

/// RFC 9111 5.2.2.4: `no-cache="Set-Cookie"` lets a shared cache store the response without
/// the cookie; the next client gets the stored response, never the first client's cookie.
#[tokio::test]
async fn hostile_set_cookie_withheld_by_qualified_no_cache_is_stored_without_it() {
    const NO_CACHE: &[(&str, &str)] = &[
        ("cache-control", "max-age=600, no-cache=\"Set-Cookie\""),
        ("set-cookie", "session=alice"),
    ];
    const PRIVATE: &[(&str, &str)] = &[
        ("cache-control", "max-age=600, private=\"set-cookie\""),
        ("set-cookie", "session=alice"),
    ];
    for headers in [NO_CACHE, PRIVATE] {
        let cc = headers[0].1;
        let origin = numbered(headers, Duration::ZERO).await;
        let (_h, proxy, _dir) = proxy(None, |_| {}).await;
        let url = origin.url("/withheld");
        let a = fill(proxy, &url).await;
        assert_eq!(a.header("set-cookie"), Some("session=alice"), "{cc}");
        let b = get(proxy, &url).await;
        b.cache_status().assert_hit();
        assert_eq!(a.text(), b.text(), "{cc}");
        assert_eq!(b.header("set-cookie"), None, "{cc}: the cookie was shared");
        assert_eq!(origin.hits(), 1, "{cc}");
    }
}

#[tokio::test]
async fn hostile_set_cookie_marked_public_is_shared() {
    let origin = numbered(
        &[
            ("cache-control", "public, max-age=600"),
            ("set-cookie", "theme=dark"),
        ],
        Duration::ZERO,
    )
    .await;
    let (_h, proxy, _dir) = proxy(None, |_| {}).await;
    let url = origin.url("/pub");
    let a = fill(proxy, &url).await;
    let b = get(proxy, &url).await;
    assert_eq!(a.text(), b.text());
    b.cache_status().assert_hit();
}
