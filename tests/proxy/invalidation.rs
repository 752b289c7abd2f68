//! Unsafe methods: POST passes through, is never cached, and a successful POST invalidates the
//! cached GET of its target URI and of a same-origin `Location` (RFC 9111 section 4.4).

use super::harness::*;

/// GET is cacheable; POST to `/fail` answers 500, POST elsewhere 201 with `Location: /other`.
async fn post_origin() -> Origin {
    Origin::start(|req| match (req.method().as_str(), req.uri().path()) {
        ("POST", "/fail") => reply(500, &[], "boom"),
        ("POST", _) => reply(201, &[("location", "/other")], "created"),
        _ => reply(
            200,
            &[("cache-control", "max-age=60")],
            format!("get {}", req.uri().path()),
        ),
    })
    .await
}

#[tokio::test]
async fn successful_post_invalidates_the_cached_get() {
    let origin = post_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/r")).await;
    get(proxy, &origin.url("/r"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(post(proxy, &origin.url("/r"), b"data").await.status, 201);
    let after = get(proxy, &origin.url("/r")).await;
    after.cache_status().assert_not_hit();
    assert_eq!(after.text(), "get /r");
    assert_eq!(origin.count("GET", "/r"), 2);
}

#[tokio::test]
async fn successful_post_invalidates_a_same_origin_location() {
    let origin = post_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/other")).await;
    get(proxy, &origin.url("/other"))
        .await
        .cache_status()
        .assert_hit();
    post(proxy, &origin.url("/r"), b"data").await;
    get(proxy, &origin.url("/other"))
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(origin.count("GET", "/other"), 2);
}

#[tokio::test]
async fn failed_post_does_not_invalidate() {
    let origin = post_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/fail")).await;
    assert_eq!(post(proxy, &origin.url("/fail"), b"data").await.status, 500);
    get(proxy, &origin.url("/fail"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(origin.count("GET", "/fail"), 1);
}

#[tokio::test]
async fn post_passes_through_and_is_never_cached() {
    let origin =
        Origin::start(|req| reply(200, &[("cache-control", "max-age=60")], req.body().clone()))
            .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for payload in [&b"first"[..], b"second"] {
        let resp = post(proxy, &origin.url("/p"), payload).await;
        assert_eq!((resp.status, resp.body.as_slice()), (200, payload));
        resp.cache_status().assert_not_hit();
        assert_eq!(
            origin.last("/p").body.as_ref(),
            payload,
            "the origin receives the body"
        );
    }
    assert_eq!(origin.count("POST", "/p"), 2);
}
