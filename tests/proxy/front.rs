//! The in-memory front under many URLs: a front smaller than the working set serves every
//! URL its own stored response (from memory or from the store) and never refetches one; a
//! row that another store handle (as another process would) removes is not served from
//! memory again.

use super::harness::*;
use tempfile::TempDir;

/// A distinct 1 KiB-and-a-bit body per URL index.
fn body_for(i: usize) -> Vec<u8> {
    let mut b = format!("url {i}: ").into_bytes();
    b.extend(pattern(1024));
    b
}

/// An origin answering `/f?r=N` with `body_for(N)`, fresh for a minute.
async fn numbered_origin() -> Origin {
    Origin::start(|req| {
        let i = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("r="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        reply(200, &[("cache-control", "max-age=60")], body_for(i))
    })
    .await
}

/// 300 URLs through a 512 KiB front (about 100 such entries as it counts them, 32 KiB a
/// shard): after one fill each, three passes in scrambled orders are all hits with the
/// URL's own body, and the origin saw each URL exactly once.
#[tokio::test]
async fn many_urls_through_a_small_front_are_hits_with_their_own_bodies() {
    const URLS: usize = 300;
    let origin = numbered_origin().await;
    let dir = TempDir::new().unwrap();
    let (_p, proxy) = start_proxy_in(dir.path(), None, |c| c.memory_cache_size = 512 << 10).await;
    let url = |i: usize| origin.url(&format!("/f?r={i}"));
    for i in 0..URLS {
        let r = send(proxy, "GET", &url(i), &[]).await;
        assert_eq!(
            (r.status, r.body == body_for(i)),
            (200, true),
            "fill of {i}"
        );
        wait_stored(proxy, &url(i)).await;
    }
    for pass in 0..3 {
        for k in 0..URLS {
            let i = (k * 7 + pass * 101) % URLS; // 7 is prime to 300: every URL once a pass
            let r = send(proxy, "GET", &url(i), &[]).await;
            r.cache_status().assert_hit();
            assert!(
                r.body == body_for(i),
                "pass {pass}: URL {i} got another body"
            );
        }
    }
    assert_eq!(origin.hits(), URLS, "no URL fetched twice");
}

/// A hit served from memory, then the row deleted through a second store handle on the same
/// directory: the next request is a miss that goes to the origin, not the copy in memory.
#[tokio::test]
async fn a_row_removed_by_another_handle_is_not_served_from_the_front() {
    let origin = numbered_origin().await;
    let dir = TempDir::new().unwrap();
    let (_p, proxy) = start_proxy_in(dir.path(), None, |_| {}).await;
    let url = origin.url("/f?r=5");
    send(proxy, "GET", &url, &[]).await;
    wait_stored(proxy, &url).await;
    for _ in 0..3 {
        let r = send(proxy, "GET", &url, &[]).await; // from memory after the first
        r.cache_status().assert_hit();
    }
    assert_eq!(origin.hits(), 1);

    let other = hoard::store::Cache::open(dir.path()).unwrap();
    let key = other
        .iter_keys()
        .map(|k| k.unwrap())
        .find(|k| k.ends_with(b"/f?r=5"))
        .expect("the URL's row");
    assert!(other.delete(&key).unwrap());

    let r = send(proxy, "GET", &url, &[]).await;
    assert!(
        !r.cache_status().hit,
        "served a removed row: {:?}",
        r.cache_status().raw
    );
    assert!(r.body == body_for(5));
    assert_eq!(origin.hits(), 2);
}
