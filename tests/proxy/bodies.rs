//! Bodies: large file-backed entries, truncated origin bodies, objects over `max_object_size`,
//! and chunked origin responses.

use super::harness::*;

fn max_age_60_bytes(
    body: Vec<u8>,
) -> impl Fn(&http::Request<bytes::Bytes>) -> http::Response<Body> {
    move |_| reply(200, &[("cache-control", "max-age=60")], body.clone())
}

#[tokio::test]
async fn two_mib_body_hit_is_byte_identical() {
    let body = pattern(2 << 20);
    let origin = Origin::start(max_age_60_bytes(body.clone())).await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let first = get(proxy, &origin.url("/big")).await;
    assert!(
        first.body == body,
        "miss body differs ({} bytes)",
        first.body.len()
    );
    let second = get(proxy, &origin.url("/big")).await;
    second.cache_status().assert_hit();
    assert!(
        second.body == body,
        "hit body differs ({} bytes)",
        second.body.len()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn truncated_origin_body_is_not_cached_and_not_passed_as_complete() {
    let origin = RawOrigin::start(true, |_| {
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n"
                .to_vec();
        bytes.extend_from_slice(&pattern(500));
        bytes
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    for round in 1..=2 {
        let mut conn = RawConn::connect(proxy).await;
        let result = conn.request("GET", &origin.url("/cut"), &[]).await;
        if let Ok(resp) = &result {
            assert!(
                !(resp.status == 200 && resp.body.len() == 1000),
                "round {round}: a truncated body looked complete"
            );
        }
        assert_eq!(
            origin.hits(),
            round,
            "round {round}: the truncated body must not be cached"
        );
    }
}

#[tokio::test]
async fn body_over_max_object_size_streams_through_but_is_not_cached() {
    let body = pattern(200 << 10);
    let origin = Origin::start(max_age_60_bytes(body.clone())).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (_proxy, proxy) =
        start_proxy_in(dir.path(), None, |cfg| cfg.max_object_size = 64 << 10).await;
    for round in 1..=2 {
        let resp = get(proxy, &origin.url("/huge")).await;
        assert_eq!(resp.status, 200);
        assert!(
            resp.body == body,
            "round {round}: body differs ({} bytes)",
            resp.body.len()
        );
        resp.cache_status().assert_not_hit();
        assert_eq!(origin.hits(), round);
    }
}

#[tokio::test]
async fn chunked_origin_response_is_cached() {
    let chunks: Vec<bytes::Bytes> = ["first,", "second,", "third"]
        .map(bytes::Bytes::from)
        .to_vec();
    let origin = Origin::start(move |_| {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(chunked(chunks.clone()))
            .unwrap()
    })
    .await;
    let (_proxy, proxy, _dir) = start_proxy(None).await;
    let first = get(proxy, &origin.url("/chunked")).await;
    assert_eq!(first.text(), "first,second,third");
    let second = get(proxy, &origin.url("/chunked")).await;
    assert_eq!(second.text(), "first,second,third");
    second.cache_status().assert_hit();
    assert_eq!(origin.hits(), 1);
}
