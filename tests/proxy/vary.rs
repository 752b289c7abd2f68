//! `Vary`: one stored variant per selecting header value; `Vary: *` is never served from cache.

use super::harness::*;

#[tokio::test]
async fn vary_accept_encoding_stores_one_variant_per_encoding() {
    let origin = Origin::start(|req| {
        let encoding = header(req, "accept-encoding").unwrap_or("none").to_owned();
        reply(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            encoding,
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/v");
    let gzip = [("Accept-Encoding", "gzip")];
    let br = [("Accept-Encoding", "br")];

    let first = send(proxy, "GET", &url, &gzip).await;
    assert_eq!(first.text(), "gzip");
    first.cache_status().assert_miss();
    let other = send(proxy, "GET", &url, &br).await;
    assert_eq!(other.text(), "br");
    let cs = other.cache_status();
    assert!(
        matches!(cs.fwd.as_deref(), Some("miss" | "vary-miss")) && !cs.hit,
        "a new variant is a (vary-)miss: {:?}",
        cs.raw
    );
    for (headers, body) in [(&gzip, "gzip"), (&br, "br"), (&gzip, "gzip")] {
        let resp = send(proxy, "GET", &url, headers).await;
        assert_eq!(resp.text(), body);
        resp.cache_status().assert_hit();
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn vary_star_is_never_served_from_cache() {
    let origin = Origin::start(|_| {
        reply(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            "any",
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for _ in 0..3 {
        let resp = get(proxy, &origin.url("/star")).await;
        assert_eq!(resp.text(), "any");
        resp.cache_status().assert_not_hit();
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn vary_treats_an_absent_header_as_its_own_variant() {
    let origin = Origin::start(|req| {
        let lang = header(req, "accept-language").unwrap_or("none").to_owned();
        reply(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang,
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/lang");
    assert_eq!(get(proxy, &url).await.text(), "none");
    assert_eq!(
        send(proxy, "GET", &url, &[("Accept-Language", "de")])
            .await
            .text(),
        "de"
    );
    assert_eq!(get(proxy, &url).await.text(), "none");
    assert_eq!(
        send(proxy, "GET", &url, &[("Accept-Language", "de")])
            .await
            .text(),
        "de"
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn vary_on_several_headers_keys_on_all_of_them() {
    let origin = Origin::start(|req| {
        let body = format!(
            "{}|{}",
            header(req, "accept-encoding").unwrap_or("-"),
            header(req, "accept-language").unwrap_or("-")
        );
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("vary", "Accept-Encoding, Accept-Language"),
            ],
            body,
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/multi");
    let combos: [&[(&str, &str)]; 3] = [
        &[("Accept-Encoding", "gzip"), ("Accept-Language", "en")],
        &[("Accept-Encoding", "gzip"), ("Accept-Language", "fr")],
        &[("Accept-Encoding", "br"), ("Accept-Language", "en")],
    ];
    for _ in 0..2 {
        for headers in combos {
            let resp = send(proxy, "GET", &url, headers).await;
            assert_eq!(resp.text(), format!("{}|{}", headers[0].1, headers[1].1));
        }
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn successful_post_invalidates_every_variant() {
    let origin = Origin::start(|req| match req.method().as_str() {
        "POST" => reply(204, &[], ""),
        _ => {
            let encoding = header(req, "accept-encoding").unwrap_or("none").to_owned();
            reply(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                encoding,
            )
        }
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/variants");
    let variants = [[("Accept-Encoding", "gzip")], [("Accept-Encoding", "br")]];
    for headers in &variants {
        send(proxy, "GET", &url, headers).await;
        send(proxy, "GET", &url, headers)
            .await
            .cache_status()
            .assert_hit();
    }
    assert_eq!(post(proxy, &url, b"x").await.status, 204);
    for headers in &variants {
        send(proxy, "GET", &url, headers)
            .await
            .cache_status()
            .assert_not_hit();
    }
    assert_eq!(origin.count("GET", "/variants"), 4);
}

#[tokio::test]
async fn vary_on_a_field_not_known_to_be_a_list_compares_its_value_as_sent() {
    // Session 11, finding 2: `X-Layout: a,,b` was stored and then served to `a, b` (and `"x,y"`
    // to `"x, y"`): every field was normalised as a comma list. The origin echoes the value.
    let origin = Origin::start(|req| {
        let layout = header(req, "x-layout").unwrap_or("none").to_owned();
        reply(
            200,
            &[("cache-control", "max-age=60"), ("vary", "X-Layout")],
            layout,
        )
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let url = origin.url("/layout");
    let spellings = ["a,,b", "a, b", "a,b", "\"x,y\"", "\"x, y\"", "a  b", "a b"];
    for value in spellings {
        let r = send(proxy, "GET", &url, &[("X-Layout", value)]).await;
        assert_eq!(r.text(), value, "first request with {value}");
        wait_stored_with(proxy, &url, &[("X-Layout", value)]).await;
    }
    assert_eq!(
        origin.hits(),
        spellings.len(),
        "each spelling is its own variant"
    );
    for value in spellings {
        let r = send(proxy, "GET", &url, &[("X-Layout", value)]).await;
        assert_eq!(r.text(), value, "again with {value}");
        r.cache_status().assert_hit();
    }
    assert_eq!(origin.hits(), spellings.len());
}
