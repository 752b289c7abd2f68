//! Unsafe methods: POST passes through (bodies intact), is never cached, and a successful
//! unsafe request invalidates the cached GET of its target URI and of a same-origin `Location`,
//! never of another origin's (RFC 9111 section 4.4).

use super::harness::*;

/// GET is cacheable; POST to `/fail` answers 500; POST, PUT, DELETE elsewhere 201 with
/// `Location: /other`.
async fn post_origin() -> Origin {
    Origin::start(|req| match (req.method().as_str(), req.uri().path()) {
        ("POST", "/fail") => reply(500, &[], "boom"),
        ("POST" | "PUT" | "DELETE", _) => reply(201, &[("location", "/other")], "created"),
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

#[tokio::test]
async fn successful_delete_invalidates_the_cached_get() {
    let origin = post_origin().await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &origin.url("/d")).await;
    get(proxy, &origin.url("/d"))
        .await
        .cache_status()
        .assert_hit();
    let deleted = send(proxy, "DELETE", &origin.url("/d"), &[]).await;
    assert_eq!(deleted.status, 201);
    get(proxy, &origin.url("/d"))
        .await
        .cache_status()
        .assert_not_hit();
    assert_eq!(origin.count("GET", "/d"), 2);
}

#[tokio::test]
async fn location_on_another_origin_is_not_invalidated() {
    let other =
        Origin::start(|_| reply(200, &[("cache-control", "max-age=60")], "other origin")).await;
    let location = other.url("/x");
    let origin = Origin::start(move |_| reply(201, &[("location", &location)], "created")).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    get(proxy, &other.url("/x")).await;
    post(proxy, &origin.url("/r"), b"data").await;
    get(proxy, &other.url("/x"))
        .await
        .cache_status()
        .assert_hit();
    assert_eq!(other.hits(), 1);
}

#[tokio::test]
async fn post_with_expect_100_continue_is_passed_through() {
    let origin = Origin::start(|req| reply(200, &[], req.body().clone())).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let mut conn = RawConn::connect(proxy).await;
    let text = request_text(
        "POST",
        &origin.url("/expect"),
        &[("Expect", "100-continue")],
        b"payload",
    );
    conn.send(&text).await.unwrap();
    let resp = conn
        .read_response("POST")
        .await
        .expect("response after 100-continue");
    assert_eq!((resp.status, resp.text().as_str()), (200, "payload"));
}

#[tokio::test]
async fn chunked_and_large_request_bodies_reach_the_origin_intact() {
    let origin = Origin::start(|req| reply(200, &[], format!("{}", req.body().len()))).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;

    let mut conn = RawConn::connect(proxy).await;
    let host = origin.addr.to_string();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.url("/chunked")
    );
    conn.send(head.as_bytes()).await.unwrap();
    conn.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let resp = conn
        .read_response("POST")
        .await
        .expect("chunked POST answer");
    assert_eq!((resp.status, resp.text().as_str()), (200, "11"));
    assert_eq!(origin.last("/chunked").body.as_ref(), b"hello world");

    let big = pattern(1 << 20);
    let resp = post(proxy, &origin.url("/large"), &big).await;
    assert_eq!((resp.status, resp.text()), (200, big.len().to_string()));
    assert!(origin.last("/large").body == big, "upload bytes differ");
}

/// Pins a race: the client has the whole miss body before the fill commits, so an
/// invalidation sent right after it must still win over that late commit.
#[tokio::test]
async fn invalidation_is_not_undone_by_a_fill_still_committing() {
    let body = pattern(8 << 20);
    let origin = Origin::start({
        let body = body.clone();
        move |req| match req.method().as_str() {
            "POST" => reply(204, &[], ""),
            _ => reply(200, &[("cache-control", "max-age=60")], body.clone()),
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    assert!(get(proxy, &origin.url("/late")).await.body == body);
    assert_eq!(post(proxy, &origin.url("/late"), b"x").await.status, 204);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // let a late commit land
    let after = get(proxy, &origin.url("/late")).await;
    after.cache_status().assert_not_hit();
    assert_eq!(origin.count("GET", "/late"), 2);
}
