//! Rows: round trip, meta refresh, size limit, damaged blobs, TTLs.

use std::time::Duration;

use bytes::Bytes;

use super::{Redis, eventually, have_redis, row_key_name, tier, tier_with};

const U: &str = "GET http://example.test/a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_round_trip_and_meta_refresh() {
    if !have_redis("put_get_round_trip_and_meta_refresh") {
        return;
    }
    let r = Redis::start(&[]);
    let t = tier(&r.url(), "t1:").await;
    let ttl = Duration::from_secs(60);

    assert_eq!(t.get(U, U.as_bytes()).await, None, "empty at first");
    let body = vec![7u8; 100_000];
    assert!(t.put(U, U.as_bytes(), b"head-1", &body, ttl).await);
    let e = t.get(U, U.as_bytes()).await.expect("hit");
    assert_eq!(e.meta, b"head-1");
    assert_eq!(e.body, Bytes::from(body.clone()));

    // A second row of the same URL (a Vary variant) and an index row with no body.
    let variant = [U.as_bytes(), b"\0accept=text/html"].concat();
    assert!(t.put(U, &variant, b"variant", b"<html>", ttl).await);
    assert!(t.put(U, U.as_bytes(), b"index", b"", ttl).await);
    let idx = t.get(U, U.as_bytes()).await.unwrap();
    assert_eq!((idx.meta.as_slice(), idx.body.len()), (&b"index"[..], 0));
    assert_eq!(
        t.get(U, &variant).await.unwrap().body,
        Bytes::from_static(b"<html>")
    );

    // put_meta keeps the body, refreshes the TTL, and writes nothing for a missing row.
    assert!(
        t.put_meta(U, &variant, b"refreshed head", Duration::from_secs(120))
            .await
    );
    let e = t.get(U, &variant).await.unwrap();
    assert_eq!(e.meta, b"refreshed head");
    assert_eq!(e.body, Bytes::from_static(b"<html>"));
    let pttl: i64 = r
        .cli(&["PTTL", &row_key_name("t1:", U, &variant)])
        .parse()
        .unwrap();
    assert!(pttl > 60_000, "TTL refreshed: {pttl}");
    assert!(
        !t.put_meta(U, b"absent row", b"m", Duration::from_secs(1))
            .await
    );
    assert_eq!(t.get(U, b"absent row").await, None);

    // Bodies above max_object_size are never written.
    let small = tier_with(&r.url(), "t1:", |c| c.max_object_size = 1000).await;
    assert!(
        !small
            .put("GET http://big/", b"GET http://big/", b"m", &[0; 1001], ttl)
            .await
    );
    assert!(
        small
            .put("GET http://big/", b"GET http://big/", b"m", &[0; 1000], ttl)
            .await
    );
    assert_eq!(small.status().oversize, 1);

    let s = t.status();
    assert!(s.connected && s.subscribed, "{s:?}");
    assert_eq!((s.hits, s.misses, s.errors), (4, 2, 0), "{s:?}");
    assert!(s.latency_count >= 10 && s.latency_micros_sum > 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_blob_is_a_miss_and_is_deleted() {
    if !have_redis("damaged_blob_is_a_miss_and_is_deleted") {
        return;
    }
    let r = Redis::start(&[]);
    let t = tier(&r.url(), "t2:").await;
    let ttl = Duration::from_secs(60);
    let cases: [(&str, &[&str]); 4] = [
        // One flipped body byte: the digest no longer matches.
        ("GET http://d/1", &["SETRANGE", "{key}", "60", "X"]),
        // A longer value: the body length no longer matches.
        ("GET http://d/2", &["APPEND", "{key}", "extra"]),
        // Something else entirely.
        ("GET http://d/3", &["SET", "{key}", "not a blob"]),
        // An unknown format version.
        ("GET http://d/4", &["SETRANGE", "{key}", "0", "\u{9}"]),
    ];
    for (url, damage) in cases {
        assert!(t.put(url, url.as_bytes(), b"meta", &[b'b'; 64], ttl).await);
        assert!(t.get(url, url.as_bytes()).await.is_some());
        let key = row_key_name("t2:", url, url.as_bytes());
        let args: Vec<String> = damage.iter().map(|a| a.replace("{key}", &key)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        r.cli(&args);
        assert_eq!(
            t.get(url, url.as_bytes()).await,
            None,
            "{url}: damaged is a miss"
        );
        assert!(
            eventually(Duration::from_secs(2), || r.cli(&["EXISTS", &key]) == "0").await,
            "{url}: damaged row deleted"
        );
    }
    assert_eq!(t.status().damaged, 4);

    // A row stored under another row key (a forced "collision") is a miss and stays.
    let url = "GET http://d/5";
    assert!(t.put(url, b"row A", b"m", b"body", ttl).await);
    let a = row_key_name("t2:", url, b"row A");
    let b = row_key_name("t2:", url, b"row B");
    assert_eq!(r.cli(&["COPY", &a, &b]), "1");
    assert_eq!(t.get(url, b"row B").await, None);
    assert_eq!(
        r.cli(&["EXISTS", &b]),
        "1",
        "an intact row of another key is not deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_expire_and_the_rows_set_keeps_the_longest_ttl() {
    if !have_redis("rows_expire_and_the_rows_set_keeps_the_longest_ttl") {
        return;
    }
    let r = Redis::start(&[]);
    let t = tier(&r.url(), "t3:").await;
    let url = "GET http://ttl/";
    assert!(
        t.put(url, b"long", b"m", b"b", Duration::from_secs(30))
            .await
    );
    assert!(
        t.put(url, b"short", b"m", b"b", Duration::from_millis(300))
            .await
    );
    assert!(t.get(url, b"short").await.is_some());
    let keys = hoard::entries::shared::codec::UrlKeys::new("t3:", url);
    let set_ttl: i64 = r.cli(&["PTTL", &keys.rows]).parse().unwrap();
    assert!(
        set_ttl > 20_000,
        "the rows set keeps the max TTL: {set_ttl}"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(t.get(url, b"short").await, None, "expired by itself");
    assert!(t.get(url, b"long").await.is_some());
    // Every key the tier wrote carries a TTL.
    for key in r.cli(&["KEYS", "t3:*"]).lines() {
        let pttl: i64 = r.cli(&["PTTL", key]).parse().unwrap();
        assert!(pttl > 0, "{key} has a TTL ({pttl})");
    }
}
