//! A stored response answering a request it was not fetched for (RFC 9111 4.3.1, RFC 9110
//! 9.3.3): a Vary miss asks the origin with the stored variants' ETags and a 304 selects one;
//! a POST response whose `Content-Location` is the request URI answers later GETs (unless
//! `store-post-responses` is off).

use super::harness::*;

/// Varies on Accept-Language; English and French are one representation (ETag "same"), German
/// another (ETag "de"). Answers 304 when `If-None-Match` names the tag it would send.
async fn vary_origin() -> Origin {
    Origin::start(|req| {
        let de = header(req, "accept-language") == Some("de");
        let (tag, body) = if de {
            ("\"de\"", "deutsch")
        } else {
            ("\"same\"", "hello")
        };
        let h = [
            ("vary", "Accept-Language"),
            ("etag", tag),
            ("cache-control", "max-age=60"),
        ];
        let offered = header(req, "if-none-match").unwrap_or("");
        if offered.split(',').any(|t| t.trim() == tag) {
            reply(304, &h, "")
        } else {
            reply(200, &h, body)
        }
    })
    .await
}

/// The `If-None-Match` of every request the origin received, in order ("" when absent).
fn if_none_match_seen(origin: &Origin) -> Vec<String> {
    let header = |s: &Seen| {
        s.headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().into())
    };
    origin
        .seen()
        .iter()
        .map(|s| header(s).unwrap_or_default())
        .collect()
}

fn lang(l: &str) -> [(&str, &str); 1] {
    [("Accept-Language", l)]
}

/// Waits (bounded) until the English variant of `url` is stored.
async fn wait_stored_en(proxy: std::net::SocketAddr, url: &str) {
    wait_stored_with(proxy, url, &lang("en")).await
}

#[tokio::test]
async fn rfc9111_4_3_1_vary_miss_offers_stored_etags_and_a_304_selects_the_variant() {
    let origin = vary_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/v");
    let en = send(proxy, "GET", &url, &lang("en")).await;
    assert_eq!((en.status, en.text().as_str()), (200, "hello"));
    wait_stored_en(proxy, &url).await;
    assert!(!origin.last("/v").headers.contains_key("if-none-match"));

    // French: not stored, but the English variant's tag is offered and the origin says 304.
    let fr = send(proxy, "GET", &url, &lang("fr")).await;
    assert_eq!((fr.status, fr.text().as_str()), (200, "hello"));
    let cs = fr.cache_status();
    cs.assert_fwd("vary-miss");
    assert_eq!(cs.fwd_status, Some(304));
    cs.assert_stored();
    let seen = origin.last("/v");
    assert_eq!(
        seen.headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok()),
        Some("\"same\"")
    );
    assert_eq!(origin.hits(), 2);
    // Stored under the French variant key: a hit now, and English still is.
    for l in ["fr", "en"] {
        let r = send(proxy, "GET", &url, &lang(l)).await;
        assert_eq!(r.text(), "hello", "{l}");
        r.cache_status().assert_hit();
    }
    assert_eq!(origin.hits(), 2);

    // German: the origin sends its own representation (200), stored as a new variant.
    let de = send(proxy, "GET", &url, &lang("de")).await;
    assert_eq!((de.status, de.text().as_str()), (200, "deutsch"));
    de.cache_status().assert_stored();
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn rfc9111_4_3_1_client_conditional_on_a_vary_miss_is_answered_by_the_cache() {
    let origin = vary_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/v");
    send(proxy, "GET", &url, &lang("en")).await;
    wait_stored_en(proxy, &url).await;
    // The client's own tag is not forwarded; the stored variants' tags are, and the client's
    // conditional is evaluated against the variant the 304 selected.
    let headers = [("Accept-Language", "fr"), ("If-None-Match", "\"same\"")];
    let r = send(proxy, "GET", &url, &headers).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.cache_status().fwd_status, Some(304));
    let headers = [("Accept-Language", "it"), ("If-None-Match", "\"other\"")];
    let r = send(proxy, "GET", &url, &headers).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    let seen = origin.last("/v");
    let sent = seen
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    assert_eq!(sent, Some("\"same\""), "only stored tags go to the origin");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn rfc9111_4_3_1_a_304_naming_no_stored_variant_fetches_again() {
    // A broken origin: 304 with a tag nobody stored, then (unconditional) a full response.
    let origin = Origin::start(|req| {
        let h = [("vary", "Accept-Language"), ("cache-control", "max-age=60")];
        if header(req, "if-none-match").is_some() {
            reply(304, &[("etag", "\"elsewhere\""), h[0], h[1]], "")
        } else {
            reply(200, &[("etag", "\"mine\""), h[0], h[1]], "body")
        }
    })
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/v");
    send(proxy, "GET", &url, &lang("en")).await;
    wait_stored_en(proxy, &url).await;
    let fr = send(proxy, "GET", &url, &lang("fr")).await;
    assert_eq!((fr.status, fr.text().as_str()), (200, "body"));
    assert!(fr.cache_status().raw.contains("detail=vary-304-unselected"));
    assert_eq!(origin.hits(), 3);
}

/// POST answers: `/self` names itself with max-age, `/abs` names itself absolutely, `/other`
/// names another URI, `/nofresh` names itself without freshness, `/private` is private.
/// GET answers "from-get".
async fn post_origin() -> Origin {
    Origin::start(|req| {
        let path = req.uri().path().to_string();
        if req.method() != "POST" {
            return reply(200, &[("cache-control", "max-age=60")], "from-get");
        }
        let own = format!("http://{}{path}", header(req, "host").unwrap_or(""));
        let (location, cc) = match path.as_str() {
            "/abs" => (own.as_str(), "max-age=60"),
            "/other" => ("/elsewhere", "max-age=60"),
            "/nofresh" => (path.as_str(), ""),
            "/private" => (path.as_str(), "private, max-age=60"),
            _ => (path.as_str(), "max-age=60"),
        };
        reply(
            200,
            &[("content-location", location), ("cache-control", cc)],
            "from-post",
        )
    })
    .await
}

#[tokio::test]
async fn rfc9110_9_3_3_post_response_with_content_location_answers_later_gets() {
    let origin = post_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    for path in ["/self", "/abs"] {
        let url = origin.url(path);
        let posted = post(proxy, &url, b"form=1").await;
        assert_eq!((posted.status, posted.text().as_str()), (200, "from-post"));
        posted.cache_status().assert_stored();
        wait_stored(proxy, &url).await;
        let later = get(proxy, &url).await;
        assert_eq!(later.text(), "from-post", "{path}");
        later.cache_status().assert_hit();
        assert_eq!(origin.count("GET", path), 0, "{path}");
    }
}

#[tokio::test]
async fn rfc9110_9_3_3_post_response_is_not_stored_for_another_uri_or_without_freshness() {
    let origin = post_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    for path in ["/other", "/nofresh", "/private"] {
        let url = origin.url(path);
        let posted = post(proxy, &url, b"form=1").await;
        assert_eq!(posted.status, 200);
        assert!(!posted.cache_status().stored, "{path}");
        let later = get(proxy, &url).await;
        assert_eq!(later.text(), "from-get", "{path}");
    }
    let elsewhere = get(proxy, &origin.url("/elsewhere")).await;
    assert_eq!(
        elsewhere.text(),
        "from-get",
        "never stored for the named URI"
    );
    // A POST with Authorization: the response lacks public / s-maxage, so it is not shared.
    let url = origin.url("/self");
    let posted = send(proxy, "POST", &url, &[("Authorization", "Bearer x")]).await;
    assert!(!posted.cache_status().stored);
    assert_eq!(get(proxy, &url).await.text(), "from-get");
}

/// `store-post-responses = false`: the same POSTs that are stored above are never served to a
/// later GET; each GET goes to the origin.
#[tokio::test]
async fn rfc9110_9_3_3_store_post_responses_off_never_serves_a_post_response_to_a_get() {
    let origin = post_origin().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_p, proxy) = start_proxy_in(dir.path(), None, |c| c.store_post_responses = false).await;
    for path in ["/self", "/abs"] {
        let url = origin.url(path);
        let posted = post(proxy, &url, b"form=1").await;
        assert_eq!((posted.status, posted.text().as_str()), (200, "from-post"));
        let cs = posted.cache_status();
        assert!(!cs.stored, "{path}: Cache-Status {:?}", cs.raw);
        let later = get(proxy, &url).await;
        assert_eq!(later.text(), "from-get", "{path}");
        later.cache_status().assert_miss();
        assert_eq!(origin.count("GET", path), 1, "{path}");
    }
}

#[tokio::test]
async fn rfc9111_4_3_4_a_304_updates_every_variant_with_its_strong_validator() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // One representation for every language (ETag "s"); stale at once until `fresh` is set,
    // then each response (304s included) gives an hour and `x-gen: 2`.
    let fresh = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let fresh = fresh.clone();
        move |req| {
            let (cc, generation) = match fresh.load(Ordering::SeqCst) {
                0 => ("max-age=0", "1"),
                _ => ("max-age=3600", "2"),
            };
            let h = [
                ("vary", "Accept-Language"),
                ("etag", "\"s\""),
                ("cache-control", cc),
                ("x-gen", generation),
            ];
            if header(req, "if-none-match").is_some_and(|t| t.contains("\"s\"")) {
                reply(304, &h, "")
            } else {
                reply(200, &h, "body")
            }
        }
    })
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/v");
    send(proxy, "GET", &url, &lang("en")).await;
    wait_stored_en(proxy, &url).await;
    // French: selected by a 304 (4.3.1), stored as its own variant.
    send(proxy, "GET", &url, &lang("fr")).await;
    fresh.store(1, Ordering::SeqCst);
    // English is stale: revalidated; the 304 names "s", so French is updated too.
    let en = send(proxy, "GET", &url, &lang("en")).await;
    assert_eq!(en.cache_status().fwd_status, Some(304));
    assert_eq!(en.header("x-gen"), Some("2"));
    let hits = origin.hits();
    let fr = send(proxy, "GET", &url, &lang("fr")).await;
    fr.cache_status().assert_hit();
    assert_eq!(
        (fr.header("x-gen"), fr.text().as_str()),
        (Some("2"), "body")
    );
    assert_eq!(origin.hits(), hits, "French was freshened by English's 304");
}

#[tokio::test]
async fn rfc9111_4_3_3_a_304_without_validators_refreshes_the_response_it_answers() {
    // The stored response has `ETag: "v1"` or only `Last-Modified`, and is stale at once; the
    // origin answers each revalidation with a 304 carrying no validator at all (RFC 9110
    // 15.4.5 lets it leave out `Last-Modified`; many servers leave out the ETag too). The 304
    // answers the conditional request made with the stored validator: the stored body is
    // served with the 304's fields, and the origin is not asked again.
    for validator in [
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
    ] {
        let origin = Origin::start(move |req| {
            let conditional = header(req, "if-none-match").is_some()
                || header(req, "if-modified-since").is_some();
            if conditional {
                let h = [("cache-control", "max-age=60"), ("x-refreshed", "by-304")];
                return reply(304, &h, "");
            }
            reply(
                200,
                &[validator, ("cache-control", "max-age=0")],
                "stored body",
            )
        })
        .await;
        let (_p, proxy, _d) = start_proxy(None).await;
        let url = origin.url("/e");
        assert_eq!(fill(proxy, &url).await.text(), "stored body");
        let r = get(proxy, &url).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "stored body"),
            "{validator:?}"
        );
        assert_eq!(r.header("x-refreshed"), Some("by-304"), "{validator:?}");
        assert_eq!(
            origin.hits(),
            2,
            "{validator:?}: a 304, no full fetch after it"
        );
        // Refreshed: fresh for the 304's max-age=60, a hit now.
        let again = get(proxy, &url).await;
        again.cache_status().assert_hit();
        assert_eq!(origin.hits(), 2, "{validator:?}");
    }
}

/// Varies on Accept-Encoding the way nginx with gzip and a brotli filter does: br and gzip
/// both carry `W/"x"`, identity `"x"`, and `If-None-Match` is compared weakly (RFC 9110
/// 13.1.2). A 304 carries the tag of the representation the request would get.
async fn weak_coding_origin() -> Origin {
    Origin::start(|req| {
        let ae = header(req, "accept-encoding").unwrap_or("");
        let (coding, tag, body) = if ae.contains("br") {
            ("br", "W/\"x\"", "br-body")
        } else if ae.contains("gzip") {
            ("gzip", "W/\"x\"", "gzip-body")
        } else {
            ("identity", "\"x\"", "plain-body")
        };
        let mut h = vec![
            ("vary", "Accept-Encoding"),
            ("etag", tag),
            ("cache-control", "max-age=60"),
        ];
        if coding != "identity" {
            h.push(("content-encoding", coding));
        }
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let offered = header(req, "if-none-match").unwrap_or("");
        if offered.split(',').any(|t| weak(t) == weak(tag)) {
            reply(304, &h, "")
        } else {
            reply(200, &h, body)
        }
    })
    .await
}

fn ae(v: &str) -> [(&str, &str); 1] {
    [("Accept-Encoding", v)]
}

#[tokio::test]
async fn rfc9111_4_3_4_a_weak_etag_never_selects_a_variant_on_a_vary_miss() {
    // Session 11, finding 1: the br variant's `W/"x"` was offered to a gzip-only client's
    // request, the origin's 304 named it, and the br body was served and stored for gzip-only
    // clients. Weak tags are not offered: the origin sends the gzip representation.
    let origin = weak_coding_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/w");
    let browser = ae("gzip, deflate, br, zstd");
    let br = send(proxy, "GET", &url, &browser).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    wait_stored_with(proxy, &url, &browser).await;

    let gz = send(proxy, "GET", &url, &ae("gzip, deflate")).await;
    assert_eq!((gz.status, gz.text().as_str()), (200, "gzip-body"));
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    gz.cache_status().assert_fwd("vary-miss");
    let seen = origin.last("/w");
    assert_eq!(
        seen.headers.get("if-none-match"),
        None,
        "weak tags are not offered"
    );
    wait_stored_with(proxy, &url, &ae("gzip, deflate")).await;
    let again = send(proxy, "GET", &url, &ae("gzip, deflate")).await;
    assert_eq!(again.header("content-encoding"), Some("gzip"));
    assert_eq!(again.text(), "gzip-body");
    again.cache_status().assert_hit();
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn rfc9111_4_3_4_a_weak_304_to_an_offered_strong_etag_selects_nothing() {
    // The identity variant's strong `"x"` is offered; the origin compares weakly and answers
    // 304 with the gzip representation's `W/"x"`. That names no stored response strongly:
    // nothing is selected, the full response is fetched without tags.
    let origin = weak_coding_origin().await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/w");
    let plain = send(proxy, "GET", &url, &ae("identity")).await;
    assert_eq!(plain.text(), "plain-body");
    wait_stored_with(proxy, &url, &ae("identity")).await;

    let gz = send(proxy, "GET", &url, &ae("gzip")).await;
    assert_eq!((gz.status, gz.text().as_str()), (200, "gzip-body"));
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.cache_status().raw.contains("detail=vary-304-unselected"));
    assert_eq!(if_none_match_seen(&origin), ["", "\"x\"", ""]);
}
