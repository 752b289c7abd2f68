//! Partial content through the proxy (RFC 9111 3.3, 3.4): 206 responses stored, ranges inside
//! them served from the cache, parts of one representation combined into a complete 200, parts
//! of different representations never mixed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::harness::*;

const LEN: usize = 1000;

/// The representation of `version`: LEN bytes that differ between versions.
fn representation(version: usize) -> Vec<u8> {
    pattern(LEN)
        .iter()
        .map(|b| b.wrapping_add(version as u8))
        .collect()
}

/// An origin honouring one `Range: bytes=a-b` / `a-` with a 206, else a 200; its ETag is
/// `etag(version)` and the version can be changed while it runs.
async fn range_origin(
    cache_control: &'static str,
    etag: fn(usize) -> String,
) -> (Origin, Arc<AtomicUsize>) {
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    let origin = Origin::start(move |req| {
        let ver = v.load(Ordering::SeqCst);
        let body = representation(ver);
        let tag = etag(ver);
        let spec = header(req, "range").and_then(|r| r.strip_prefix("bytes="));
        let Some((a, b)) = spec.and_then(|r| r.split_once('-')) else {
            return reply(
                200,
                &[("cache-control", cache_control), ("etag", &tag)],
                body,
            );
        };
        let a: usize = a.parse().unwrap();
        let b: usize = if b.is_empty() {
            LEN - 1
        } else {
            b.parse().unwrap()
        };
        let content_range = format!("bytes {a}-{b}/{LEN}");
        reply(
            206,
            &[
                ("cache-control", cache_control),
                ("etag", &tag),
                ("content-range", &content_range),
            ],
            body[a..=b].to_vec(),
        )
    })
    .await;
    (origin, version)
}

fn strong(v: usize) -> String {
    format!("\"v{v}\"")
}

fn weak(v: usize) -> String {
    format!("W/\"v{v}\"")
}

async fn range(proxy: std::net::SocketAddr, url: &str, spec: &str) -> RawResponse {
    send(proxy, "GET", url, &[("Range", &format!("bytes={spec}"))]).await
}

/// The response is the 206 of bytes a..=b of `version`.
#[track_caller]
fn assert_part(r: &RawResponse, version: usize, a: usize, b: usize) {
    assert_eq!(r.status, 206, "Cache-Status: {:?}", r.cache_status().raw);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{LEN}").as_str())
    );
    assert_eq!(r.body, &representation(version)[a..=b]);
}

#[tokio::test]
async fn rfc9111_3_3_a_stored_206_answers_ranges_inside_it() {
    let (origin, _) = range_origin("max-age=60", strong).await;
    let (_p, proxy, dir) = start_proxy(None).await;
    let url = origin.url("/big");
    let first = range(proxy, &url, "0-499").await;
    assert_part(&first, 1, 0, 499);
    let cs = first.cache_status();
    cs.assert_miss();
    cs.assert_stored();
    assert_eq!(cs.fwd_status, Some(206));
    for (a, b) in [(0, 499), (100, 199), (499, 499)] {
        let r = range(proxy, &url, &format!("{a}-{b}")).await;
        assert_part(&r, 1, a, b);
        r.cache_status().assert_hit();
        assert!(
            r.cache_status().raw.contains("detail=partial"),
            "{:?}",
            r.cache_status().raw
        );
    }
    assert_eq!(
        origin.hits(),
        1,
        "ranges inside the stored part came from the cache"
    );
    // Outside the part, and a full GET: the origin.
    assert_part(&range(proxy, &url, "600-699").await, 1, 600, 699);
    assert_eq!(origin.hits(), 2);
    let store = hoard::store::Cache::open(dir.path()).unwrap();
    assert!(store.contains_prefix(b"hoard-partial\0").unwrap());
    let whole = get(proxy, &url).await;
    assert_eq!((whole.status, whole.body.clone()), (200, representation(1)));
    assert_eq!(origin.hits(), 3, "a part never answers a full GET");
    // The complete response, once stored, replaced the pieces (its fill's transaction
    // looked for partial rows once, and found this one).
    wait_stored(proxy, &url).await;
    assert!(!store.contains_prefix(b"hoard-partial\0").unwrap());
}

#[tokio::test]
async fn rfc9111_3_4_parts_of_one_representation_combine_into_a_stored_200() {
    let (origin, _) = range_origin("max-age=60", strong).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/big");
    assert_part(&range(proxy, &url, "0-99").await, 1, 0, 99);
    assert_part(&range(proxy, &url, "300-399").await, 1, 300, 399);
    // Across the hole: the origin is asked, the answer joins the two pieces.
    let across = range(proxy, &url, "50-350").await;
    assert_part(&across, 1, 50, 350);
    across.cache_status().assert_fwd("partial");
    assert_eq!(origin.hits(), 3);
    let joined = range(proxy, &url, "0-399").await;
    assert_part(&joined, 1, 0, 399);
    joined.cache_status().assert_hit();
    // The rest completes the representation: stored as a 200.
    let last = range(proxy, &url, "400-").await;
    assert_part(&last, 1, 400, LEN - 1);
    assert!(
        last.cache_status().raw.contains("detail=complete"),
        "{:?}",
        last.cache_status().raw
    );
    assert_eq!(origin.hits(), 4);
    let whole = get(proxy, &url).await;
    assert_eq!((whole.status, whole.body.clone()), (200, representation(1)));
    whole.cache_status().assert_hit();
    assert_part(&range(proxy, &url, "350-650").await, 1, 350, 650);
    assert_eq!(origin.hits(), 4, "the combined response answers everything");
}

#[tokio::test]
async fn rfc9111_3_4_a_part_of_another_representation_replaces_never_mixes() {
    let (origin, version) = range_origin("max-age=60", strong).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/big");
    assert_part(&range(proxy, &url, "0-499").await, 1, 0, 499);
    version.store(2, Ordering::SeqCst);
    let other = range(proxy, &url, "500-").await;
    assert_part(&other, 2, 500, LEN - 1);
    other.cache_status().assert_stored();
    // Version 1's piece is gone: its range goes to the origin, and no 200 was assembled.
    assert_part(&range(proxy, &url, "0-99").await, 2, 0, 99);
    assert_eq!(origin.hits(), 3);
    assert_part(&range(proxy, &url, "600-699").await, 2, 600, 699);
    let whole = get(proxy, &url).await;
    assert_eq!((whole.status, whole.body.clone()), (200, representation(2)));
    whole.cache_status().assert_not_hit();
}

#[tokio::test]
async fn rfc9111_3_4_weak_validators_are_never_combined() {
    let (origin, _) = range_origin("max-age=60", weak).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/big");
    assert_part(&range(proxy, &url, "0-499").await, 1, 0, 499);
    assert_part(&range(proxy, &url, "500-").await, 1, 500, LEN - 1);
    // The second part replaced the first: the first range goes to the origin again.
    assert_part(&range(proxy, &url, "0-99").await, 1, 0, 99);
    assert_eq!(origin.hits(), 3);
    let whole = get(proxy, &url).await;
    assert_eq!(whole.status, 200);
    whole.cache_status().assert_not_hit();
}

#[tokio::test]
async fn rfc9111_3_3_unstorable_parts_are_not_stored() {
    // Stale at once, and `no-store`: each range goes to the origin.
    for cc in ["max-age=0", "no-store, max-age=60"] {
        let (origin, _) = range_origin(cc, strong).await;
        let (_p, proxy, _d) = start_proxy(None).await;
        let url = origin.url("/big");
        assert_part(&range(proxy, &url, "0-99").await, 1, 0, 99);
        let again = range(proxy, &url, "0-99").await;
        assert_part(&again, 1, 0, 99);
        again.cache_status().assert_not_hit();
        assert_eq!(origin.hits(), 2, "{cc}");
    }
    // Unknown complete length: the part cannot be placed.
    let origin = Origin::start(|_| {
        reply(
            206,
            &[
                ("cache-control", "max-age=60"),
                ("content-range", "bytes 0-9/*"),
            ],
            "0123456789",
        )
    })
    .await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/stream");
    for _ in 0..2 {
        let r = range(proxy, &url, "0-9").await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (206, b"0123456789".as_slice())
        );
        assert!(!r.cache_status().stored);
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn rfc9111_3_3_purge_removes_stored_parts() {
    let (origin, _) = range_origin("max-age=60", strong).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/big");
    assert_part(&range(proxy, &url, "0-99").await, 1, 0, 99);
    // A POST to the URL invalidates it (RFC 9111 4.4), parts included.
    post(proxy, &url, b"x").await;
    let hits = origin.hits();
    assert_part(&range(proxy, &url, "0-99").await, 1, 0, 99);
    assert_eq!(origin.hits(), hits + 1, "the part was invalidated");
}

#[tokio::test]
async fn rfc9111_3_3_pieces_per_entry_are_capped() {
    use hoard::entries::partial::MAX_PIECES;
    let (origin, _) = range_origin("max-age=60", strong).await;
    let (_p, proxy, _d) = start_proxy(None).await;
    let url = origin.url("/big");
    // Disjoint one-byte parts, ten bytes apart: each is a new piece until the cap.
    for i in 0..=MAX_PIECES {
        let at = i * 10;
        let r = range(proxy, &url, &format!("{at}-{at}")).await;
        assert_part(&r, 1, at, at);
        assert_eq!(r.cache_status().stored, i < MAX_PIECES, "part {i}");
    }
    // The stored pieces still answer; the refused one does not.
    range(proxy, &url, "0-0").await.cache_status().assert_hit();
    let refused = MAX_PIECES * 10;
    let r = range(proxy, &url, &format!("{refused}-{refused}")).await;
    r.cache_status().assert_not_hit();
}
